"""Stage profiles, SLO thresholds and their verdicts: parsing tables with their messages, the arrival
schedule, and the PASS/FAIL rules."""

from __future__ import annotations

import pytest

from proxy.config.model import GatesConfig
from proxy.reports.load_spec import (
    Profile,
    ScopeFigures,
    Slo,
    Stage,
    arrivals,
    constant,
    forever,
    judge,
    judge_rate,
    merge_slos,
    parse_slo,
    parse_stages,
    slo_from_gates,
)


@pytest.mark.parametrize(
    ("text", "stages"),
    [
        ("30s:50", [Stage(30.0, 50.0)]),
        ("30s:50,2m:200,30s:0", [Stage(30.0, 50.0), Stage(120.0, 200.0), Stage(30.0, 0.0)]),
        ("500ms:10, 1h:0.5", [Stage(0.5, 10.0), Stage(3600.0, 0.5)]),
        ("10s:0,10s:100", [Stage(10.0, 0.0), Stage(10.0, 100.0)]),
    ],
)
def test_stages_parse_into_ramps_from_zero(text: str, stages: list[Stage]) -> None:
    profile = parse_stages(text)
    assert list(profile.stages) == stages
    assert profile.start_rate == 0.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("30s", "--stages '30s' (stage 1): expected DURATION:RATE"),
        ("30s:50,:10", "--stages ':10' (stage 2): expected DURATION:RATE"),
        ("30:50", "--stages '30:50' (stage 1): '30' is not a duration with a unit"),
        ("soon:50", "'soon' is not a duration with a unit"),
        ("0s:50", "'0s' is not a duration with a unit"),
        ("30s:fast", "--stages '30s:fast' (stage 1): 'fast' is not a rate"),
        ("30s:-5", "'-5' is not a rate"),
        ("30s:nan", "'nan' is not a rate"),
        ("30s:0,1m:0", "every stage has rate 0"),
    ],
)
def test_a_bad_stage_is_named_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=None) as exc:
        parse_stages(text)
    assert message in str(exc.value)


def test_a_constant_rate_sends_rate_times_duration_evenly_from_the_first_instant() -> None:
    times = [t for t, _ in arrivals(constant(200, 3.0))]
    assert len(times) == 600
    assert times[:3] == [0.0, 0.005, 0.01]
    assert times[-1] == pytest.approx(2.995)


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("10s:100", 500),  # the area of a ramp from 0 to 100
        ("1s:10,1s:10", 15),  # a ramp (5), then held (10)
        ("2s:100,2s:0", 200),  # up and down again
        ("10s:0,2s:10", 10),
    ],
)
def test_a_ramp_offers_the_area_under_its_rate(text: str, count: int) -> None:
    profile = parse_stages(text)
    times = [t for t, _ in arrivals(profile)]
    assert len(times) == count
    assert times == sorted(times)
    assert 0.0 <= times[0] and times[-1] <= profile.duration_s


def test_a_ramp_sends_more_at_its_end_than_at_its_start() -> None:
    times = [t for t, _ in arrivals(parse_stages("10s:100"))]
    first_half = sum(1 for t in times if t < 5.0)
    assert first_half == 125  # the area from 0 to 50 over 5 s: a quarter of the whole
    stages = [s for _, s in arrivals(parse_stages("1s:10,1s:10"))]
    assert stages == [0] * 5 + [1] * 10


def test_forever_is_the_constant_schedule_without_end() -> None:
    schedule = forever(4.0)
    assert [next(schedule) for _ in range(4)] == [0.0, 0.25, 0.5, 0.75]


@pytest.mark.parametrize(
    ("rate", "duration", "message"),
    [
        (0.0, 1.0, "--rate 0"),
        (-1.0, 1.0, "--rate -1"),
        (float("inf"), 1.0, "--rate inf"),
        (1.0, 0.0, "--duration"),
    ],
)
def test_a_bad_constant_rate_is_named(rate: float, duration: float, message: str) -> None:
    with pytest.raises(ValueError) as exc:
        constant(rate, duration)
    assert message in str(exc.value)


@pytest.mark.parametrize(
    ("text", "slos"),
    [
        (
            "p95=120ms,p99=300ms,errors=1%",
            [Slo("p95", 0.12, 0.95), Slo("p99", 0.3, 0.99), Slo("errors", 0.01)],
        ),
        ("p99.9=1.5s", [Slo("p99.9", 1.5, 0.999)]),
        ("p50=800us, errors=0.5%", [Slo("p50", 0.0008, 0.5), Slo("errors", 0.005)]),
    ],
)
def test_slos_parse(text: str, slos: list[Slo]) -> None:
    assert [(s.name, pytest.approx(s.limit), s.quantile) for s in parse_slo(text)] == [
        (s.name, s.limit, s.quantile) for s in slos
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("p95", "--slo 'p95': expected NAME=VALUE"),
        ("p95=", "expected NAME=VALUE"),
        ("p95=120", "--slo 'p95=120': '120' is not a latency with its unit"),
        ("p95=fast", "'fast' is not a latency with its unit"),
        ("p95=0ms", "a latency ceiling must be above zero"),
        ("p100=1s", "unknown SLO 'p100'"),
        ("latency=1s", "unknown SLO 'latency'"),
        ("errors=0.01", "--slo 'errors=0.01': the error share is a percentage"),
        ("errors=150%", "'150%' is not a percentage from 0% to 100%"),
        ("errors=x%", "is not a percentage"),
        ("p95=1s,p95=2s", "--slo 'p95=2s': p95 is given twice"),
    ],
)
def test_a_bad_slo_is_named_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_slo(text)
    assert message in str(exc.value)


def test_the_config_gates_give_the_slos_and_the_command_line_overrides_them() -> None:
    gates = slo_from_gates(GatesConfig(latency_p95_ms=80, latency_p99_ms=200, error_rate=0.002))
    assert [(s.name, s.limit) for s in gates] == [("p95", 0.08), ("p99", 0.2), ("errors", 0.002)]
    merged = merge_slos(gates, parse_slo("p99=1s,p50=10ms"))
    assert [(s.name, s.limit) for s in merged] == [
        ("p95", 0.08),
        ("p99", 1.0),
        ("errors", 0.002),
        ("p50", 0.01),
    ]


def _figures(requests: int, errors: int, p95: float | None) -> ScopeFigures:
    return ScopeFigures(requests=requests, errors=errors, latency_s={0.95: p95})


def test_an_slo_passes_only_when_every_scope_is_within_it() -> None:
    p95, errors = Slo("p95", 0.1, 0.95), Slo("errors", 0.01)
    scopes = {"all": _figures(100, 1, 0.05), "v1": _figures(90, 0, 0.04), "v2": _figures(10, 1, 0.1)}
    verdicts = judge([p95, errors], scopes)
    assert [v.passed for v in verdicts] == [True, False]  # at the ceiling passes; 1 of 10 on v2 does not
    assert (
        verdicts[0].line() == "PASS p95 <= 100 ms: all 50.0 ms (n=100), v1 40.0 ms (n=90), v2 100 ms (n=10)"
    )
    assert verdicts[1].line() == "FAIL errors <= 1%: all 1% (n=100), v1 0% (n=90), v2 10% (n=10) over"


def test_no_answer_to_measure_fails_a_latency_slo_and_no_requests_fail_every_slo() -> None:
    p95 = Slo("p95", 0.1, 0.95)
    [every_one_failed] = judge([p95], {"all": _figures(5, 5, None)})
    assert not every_one_failed.passed and "all n/a (n=5)" in every_one_failed.line()
    [nothing] = judge([p95], {"all": _figures(0, 0, None), "v1": _figures(0, 0, None)})
    assert not nothing.passed and nothing.line().endswith("no requests")


@pytest.mark.parametrize(
    ("sent", "dropped", "span", "final_lag", "passed", "why"),
    [
        (600, 0, 2.995, 0.001, True, ""),
        (588, 12, 3.0, 0.001, True, ""),  # 98% of the offered rate is held
        (587, 13, 3.0, 0.001, False, "13 dropped with every connection busy"),
        (600, 0, 3.5, 0.5, False, "the driver fell behind its schedule"),
        (600, 0, 3.0, 0.2, False, "the driver fell behind its schedule"),  # a backlog at the end
    ],
)
def test_the_rate_check(
    sent: int, dropped: int, span: float, final_lag: float, passed: bool, why: str
) -> None:
    verdict = judge_rate(600, sent, dropped, span, 3.0, final_lag)
    assert verdict.passed is passed
    assert verdict.line().startswith("PASS rate held" if passed else "FAIL rate held")
    assert why in verdict.line()


def test_a_profile_describes_itself() -> None:
    assert constant(200, 3).describe() == "200 req/s for 3s"
    assert parse_stages("30s:50,2m:200").describe() == "stages 30s:50,120s:200"
    assert Profile((Stage(1.0, 2.5),)).offered() == [1.25]
