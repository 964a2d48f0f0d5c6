"""``rollguard staging-report`` as a user runs it: k6 and Locust results folded into staging_report.json
with their SLO verdicts (exit 0 or 1), beside a real proxy's own report with ``--admin``, and the bad
arguments and files that exit 2 naming the file and the problem."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.cli import main
from tests.helpers.load_results import K6_HANDLE_SUMMARY, K6_SUMMARY_EXPORT, LOCUST_STATS
from tests.helpers.tokens import OPERATOR_TOKEN

BOUND_S = 60.0  # the command, start to exit


def _files(tmp_path: Path) -> tuple[Path, Path]:
    k6, locust = tmp_path / "summary.json", tmp_path / "run_stats.csv"
    k6.write_text(json.dumps(K6_HANDLE_SUMMARY))
    locust.write_text(LOCUST_STATS)
    return k6, locust


def test_k6_and_locust_together_give_two_sections_and_one_verdict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    k6, locust = _files(tmp_path)
    out = tmp_path / "out"
    argv = ["staging-report", "--k6", str(k6), "--locust", str(locust), "--out", str(out)]
    assert main([*argv, "--slo", "p95=120ms,p99=300ms,errors=1%"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "PASS p95 <= 120 ms: k6 48.2 ms (n=6000)",
        "PASS p99 <= 300 ms: k6 140 ms (n=6000)",
        "PASS errors <= 1%: k6 0.70% (n=6000)",
        "k6 threshold http_req_duration: p(95)<120 ok",
        "k6 threshold http_req_duration: p(99)<100 crossed",
        "PASS p95 <= 120 ms: locust 47.0 ms (n=6000)",
        "PASS p99 <= 300 ms: locust 130 ms (n=6000)",
        "PASS errors <= 1%: locust 0.45% (n=6000)",
        "verdict: PASS",
        f"wrote {out / 'staging_report.json'}",
    ]
    report = json.loads((out / "staging_report.json").read_text())
    assert set(report) == {"format", "generated_at", "since", "load_k6", "load_locust"}
    assert (report["load_k6"]["source"], report["load_k6"]["file"]) == ("k6", str(k6))
    assert report["load_locust"]["source"] == "locust" and "POST /v1/infer" in report["load_locust"]["names"]
    assert report["load_k6"]["passed"] is report["load_locust"]["passed"] is True
    assert report["load_k6"]["slo_source"] == "--slo"

    # The default SLOs are canary.gates' (p95, p99, errors): k6's summary-export has no p99 to judge.
    k6.write_text(json.dumps(K6_SUMMARY_EXPORT))
    assert main(["staging-report", "--k6", str(k6), "--out", str(out)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert "FAIL p99 <= " in "\n".join(lines) and "verdict: FAIL" in lines
    assert any(line.startswith("note: k6 exported no p99") for line in lines)
    report = json.loads((out / "staging_report.json").read_text())
    assert report["load_k6"]["slo_source"] == "canary.gates defaults"
    assert report["load_k6"]["latency_missing"] == ["p99", "p99.9"]
    assert "load_locust" not in report  # a fresh document each time, never a stale section


@pytest.mark.parametrize(
    ("flag", "content", "message"),
    [
        ("--k6", None, "cannot read it: No such file or directory"),
        ("--k6", b"{nope", "not JSON"),
        ("--k6", b'{"metrics": {}}', "no http_reqs or http_req_duration metric"),
        ("--locust", None, "cannot read it: No such file or directory"),
        ("--locust", b"\xff\xfe\x00T", "not UTF-8 text"),
        ("--locust", b"Type,Name\n", "no 'Request Count'"),
        ("--locust", LOCUST_STATS.rsplit(",Aggregated", 1)[0].encode(), "no 'Aggregated' row"),
    ],
)
def test_an_unreadable_or_wrong_file_exits_2_naming_it(
    flag: str, content: bytes | None, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "results"
    if content is not None:
        path.write_bytes(content)
    assert main(["staging-report", flag, str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"rollguard: {flag} {path}: " in err and message in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "staging-report needs --k6 FILE, --locust FILE, or both"),
        (["--k6", "K6", "--slo", "p95=fast"], "--slo 'p95=fast': 'fast' is not a latency"),
        (["--k6", "K6", "--config", "/nonexistent/rollguard.yaml"], "--config /nonexistent/rollguard.yaml"),
    ],
)
def test_a_bad_argument_exits_2_naming_it(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    k6, _ = _files(tmp_path)
    argv = [str(k6) if a == "K6" else a for a in args]
    assert main(["staging-report", *argv, "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


async def test_with_admin_the_report_is_the_proxys_own_plus_the_external_run(
    tmp_path: Path, proxy_factory: Any
) -> None:
    proxy = await proxy_factory()
    async with httpx.AsyncClient(base_url=proxy.data_url, timeout=10) as client:
        for i in range(5):
            resp = await client.post(
                "/v1/infer",
                json={"features": {"amount": 12.5, "tenure_months": 7, "txn_24h": 2, "region": "br-se"}},
                headers={"x-user-id": f"u{i}"},
            )
            assert resp.status_code == 200, resp.text
    k6, locust = _files(tmp_path)
    out = tmp_path / "out"
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "proxy", "staging-report", "--k6", str(k6), "--locust", str(locust)),
        *("--slo", "p95=40ms", "--admin", proxy.admin_url, "--out", str(out)),
        env={**os.environ, "ROLLGUARD_TOKEN": OPERATOR_TOKEN},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(BOUND_S):
        stdout, stderr = await proc.communicate()
    lines = stdout.decode().splitlines()
    assert proc.returncode == 1, (lines, stderr.decode())
    assert "FAIL p95 <= 40.0 ms: k6 48.2 ms (n=6000) over" in lines
    assert "FAIL p95 <= 40.0 ms: locust 47.0 ms (n=6000) over" in lines
    assert lines[-2] == "verdict: FAIL"
    report = json.loads((out / "staging_report.json").read_text())
    # The proxy's own sections, with the five requests it saw, and both external runs beside them.
    assert report["versions"] == {"baseline": "v1", "candidate": "v2"}
    infer = report["routes"]["infer"]["versions"]
    assert sum(v["requests"] for v in infer.values()) == 5
    assert report["load_k6"]["all"]["requests"] == report["load_locust"]["all"]["requests"] == 6000
    assert report["load_k6"]["passed"] is report["load_locust"]["passed"] is False
