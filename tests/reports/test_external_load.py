"""Reading k6 and Locust result files into the report's shape, and judging SLOs on them: tables over
realistic files of each shape, damaged files (the error says what is wrong), and the verdicts, including an
SLO on a quantile the tool never exported."""

from __future__ import annotations

import json
from typing import Any

import pytest

from proxy.reports.external_load import (
    ExternalLoadError,
    ExternalRun,
    parse_k6_summary,
    parse_locust_stats,
)
from proxy.reports.load_spec import parse_slo
from tests.helpers.load_results import K6_HANDLE_SUMMARY, K6_SUMMARY_EXPORT, LOCUST_HEADER, LOCUST_STATS


def _k6(doc: dict[str, Any]) -> ExternalRun:
    return parse_k6_summary(json.dumps(doc).encode())


@pytest.mark.parametrize(
    ("doc", "shape", "p99", "thresholds", "duration_s"),
    [
        (K6_SUMMARY_EXPORT, "summary-export", None, [("p(95)<120", True), ("rate<0.005", False)], None),
        (
            K6_HANDLE_SUMMARY,
            "handleSummary",
            140.5,
            [("p(95)<120", True), ("p(99)<100", False)],
            60.078,
        ),
    ],
)
def test_both_k6_shapes_read_alike(
    doc: dict[str, Any], shape: str, p99: float | None, thresholds: list[Any], duration_s: float | None
) -> None:
    run = _k6(doc)
    assert (run.source, run.shape, run.duration_s) == ("k6", shape, duration_s)
    section = run.section(file="summary.json", slo_source="--slo", verdicts=[])
    assert section["all"]["requests"] == 6000
    assert section["all"]["errors"] == 42  # http_req_failed's passes: requests that failed
    assert section["all"]["error_rate"] == 0.007
    assert section["all"]["rps"] == 99.87
    latency = section["all"]["latency_ms"]
    assert (latency["p50"], latency["p90"], latency["p95"], latency["p99"]) == (18.902, 35.77, 48.215, p99)
    assert (latency["min"], latency["avg"], latency["max"], latency["p99.9"]) == (3.112, 21.48, 311.4, None)
    assert section["latency_missing"] == (["p99", "p99.9"] if p99 is None else ["p99.9"])
    assert [(t["threshold"], t["passed"]) for t in section["thresholds"]] == thresholds
    assert section["iterations"] == 6000 and section["vus_max"] == 50
    assert section["data_received_bytes"] == 1320000


def test_locust_stats_give_the_aggregated_total_and_a_row_per_name() -> None:
    run = parse_locust_stats(LOCUST_STATS)
    section = run.section(file="run_stats.csv", slo_source="--slo", verdicts=[])
    total = section["all"]
    assert (total["requests"], total["errors"], total["error_rate"], total["rps"]) == (
        6000,
        27,
        0.0045,
        100.02,
    )
    assert total["latency_ms"] == {
        "p50": 18.0,
        "p90": 35.0,
        "p95": 47.0,
        "p99": 130.0,
        "p99.9": 290.0,
        "p66": 22.0,
        "p75": 25.0,
        "p80": 27.0,
        "p98": 86.0,
        "p99.99": 410.0,
        "min": 0.88,
        "avg": 19.47,
        "max": 412.9,
    }
    assert section["latency_missing"] == []
    assert list(section["names"]) == ["POST /v1/infer", "GET /healthz", "POST /v1/explain"]
    infer = section["names"]["POST /v1/infer"]
    assert (infer["requests"], infer["errors"], infer["latency_ms"]["p95"]) == (5400, 27, 48.0)
    assert infer["failures_per_s"] == 0.45 and infer["avg_content_bytes"] == 71.0
    idle = section["names"]["POST /v1/explain"]  # no requests: Locust's N/A, never a zero latency
    assert idle["requests"] == 0 and idle["error_rate"] is None and idle["latency_ms"]["p95"] is None
    assert "thresholds" not in section


def _without(doc: dict[str, Any], metric: str) -> dict[str, Any]:
    return {**doc, "metrics": {k: v for k, v in doc["metrics"].items() if k != metric}}


def _with(doc: dict[str, Any], metric: str, value: Any) -> dict[str, Any]:
    return {**doc, "metrics": {**doc["metrics"], metric: value}}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "not JSON"),
        (b"[]", 'no "metrics" object: not a k6 summary'),
        (
            b'{"metrics": {"checks": {"passes": 1, "fails": 0, "value": 1}}}',
            "no http_reqs or http_req_duration",
        ),
        (
            json.dumps(_with(K6_SUMMARY_EXPORT, "http_reqs", {"count": "6000", "rate": 99.87})).encode(),
            "http_reqs count is '6000', not a number",
        ),
        (
            json.dumps(_with(K6_SUMMARY_EXPORT, "http_reqs", {"count": 10.5, "rate": 1})).encode(),
            "http_reqs count is 10.5, not a count",
        ),
        (
            json.dumps(_with(K6_SUMMARY_EXPORT, "http_req_failed", {"passes": 7000, "fails": 0})).encode(),
            "http_req_failed counts 7000 failures in 6000 requests",
        ),
        (
            json.dumps(_with(K6_HANDLE_SUMMARY, "http_reqs", {"type": "counter"})).encode(),
            'metrics.http_reqs has no "values" object',
        ),
        (
            json.dumps(
                _with(
                    K6_HANDLE_SUMMARY,
                    "http_req_duration",
                    {"values": {"avg": 1}, "thresholds": {"p(95)<1": 1}},
                )
            ).encode(),
            'thresholds["p(95)<1"] has no boolean "ok"',
        ),
        (
            json.dumps(_with(K6_SUMMARY_EXPORT, "http_req_duration", {"avg": -1.0, "p(95)": 3})).encode(),
            "http_req_duration avg is -1.0: a duration cannot be negative",
        ),
    ],
)
def test_a_damaged_k6_summary_is_refused_saying_what_is_wrong(raw: bytes, message: str) -> None:
    with pytest.raises(ExternalLoadError) as exc:
        parse_k6_summary(raw)
    assert message in str(exc.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty: no header row"),
        ("Timestamp,User Count,Type,Name,Requests/s\n1700000000,10,,Aggregated,5\n", "stats history"),
        ("Method,Name,Error,Occurrences\nPOST,/v1/infer,timeout,3\n", "failures file"),
        ("Type,Name,Requests/s\n,Aggregated,5\n", "no 'Request Count', 'Failure Count'"),
        (LOCUST_STATS.rsplit(",Aggregated", 1)[0], "no 'Aggregated' row"),
        (LOCUST_HEADER + "\nPOST,/v1/infer,12,0\n", "line 2: 4 fields, the header has 22"),
        (LOCUST_STATS.replace("5400,27", "5400,x27"), "line 2 ('/v1/infer'): Failure Count is 'x27'"),
        (LOCUST_STATS.replace("5400,27", "5400,5401"), "line 2 ('/v1/infer'): 5401 failures in 5400"),
        (LOCUST_STATS.replace(",47,86,", ",-47,86,"), "line 5 ('Aggregated'): 95% is '-47', not a number"),
        (LOCUST_STATS.replace("GET,/healthz", "POST,/v1/infer"), "line 3: 'POST /v1/infer' appears twice"),
    ],
)
def test_a_damaged_locust_file_is_refused_saying_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ExternalLoadError) as exc:
        parse_locust_stats(text)
    assert message in str(exc.value)


@pytest.mark.parametrize(
    ("run", "spec", "lines", "passed"),
    [
        (
            K6_HANDLE_SUMMARY,
            "p95=120ms,p99=300ms,errors=1%",
            [
                "PASS p95 <= 120 ms: k6 48.2 ms (n=6000)",
                "PASS p99 <= 300 ms: k6 140 ms (n=6000)",
                "PASS errors <= 1%: k6 0.70% (n=6000)",
            ],
            True,
        ),
        (
            K6_SUMMARY_EXPORT,
            "p95=40ms,errors=0.5%",
            ["FAIL p95 <= 40.0 ms: k6 48.2 ms (n=6000) over", "FAIL errors <= 0.50%: k6 0.70% (n=6000) over"],
            False,
        ),
        # k6 exported no p(99): the SLO cannot pass on a figure that does not exist.
        (K6_SUMMARY_EXPORT, "p99=300ms", ["FAIL p99 <= 300 ms: k6 n/a (n=6000)"], False),
        (
            "locust",
            "p95=50ms,p99.9=250ms,errors=1%",
            [
                "PASS p95 <= 50.0 ms: locust 47.0 ms (n=6000)",
                "FAIL p99.9 <= 250 ms: locust 290 ms (n=6000) over",
                "PASS errors <= 1%: locust 0.45% (n=6000)",
            ],
            False,
        ),
        ("locust", "p97=100ms", ["FAIL p97 <= 100 ms: locust n/a (n=6000)"], False),
    ],
)
def test_slo_verdicts_on_external_runs(run: Any, spec: str, lines: list[str], passed: bool) -> None:
    parsed = parse_locust_stats(LOCUST_STATS) if run == "locust" else _k6(run)
    slos = parse_slo(spec)
    verdicts = parsed.judge(slos)
    assert [v.line() for v in verdicts] == lines
    section = parsed.section(file="f", slo_source="--slo", verdicts=verdicts)
    assert section["passed"] is passed
    assert [v["slo"] for v in section["slo"]] == [s.name for s in slos]


def test_a_missing_figure_is_named_with_how_to_get_it() -> None:
    slos = parse_slo("p99=300ms,errors=1%")
    notes = _k6(K6_SUMMARY_EXPORT).notes(slos)
    assert notes == [
        "note: k6 exported no p99 (only p50, p90, p95), so p99 cannot be judged; add it with "
        "--summary-trend-stats 'avg,min,med,max,p(90),p(95),p(99)'"
    ]
    old_k6 = _k6(_without(K6_SUMMARY_EXPORT, "http_req_failed"))
    verdicts = old_k6.judge(slos[1:])
    assert [v.line() for v in verdicts] == ["FAIL errors <= 1%: k6 n/a (n=6000)"]
    assert old_k6.section(file="f", slo_source="s", verdicts=verdicts)["all"]["errors"] is None
    assert "no http_req_failed metric" in old_k6.notes(slos[1:])[0]
    assert parse_locust_stats(LOCUST_STATS).notes(parse_slo("p97=1s")) == [
        "note: locust exported no p97 (only p50, p66, p75, p80, p90, p95, p98, p99, p99.9, p99.99), "
        "so p97 cannot be judged"
    ]


def test_a_run_with_no_requests_fails_every_slo() -> None:
    empty = LOCUST_HEADER + "\n,Aggregated,0,0,0,0.0,0,0,0,0.0,0.0" + ",N/A" * 11 + "\n"
    verdicts = parse_locust_stats(empty).judge(parse_slo("p95=1s,errors=1%"))
    assert [v.line() for v in verdicts] == [
        "FAIL p95 <= 1000 ms: no requests",
        "FAIL errors <= 1%: no requests",
    ]
