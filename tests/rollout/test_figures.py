"""A version's figures from live evidence and from the shadow's mirrored pairs."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.rollout.evidence import VersionWindow
from proxy.rollout.figures import live_figures, mirror_failures, mirror_figures


def test_live_figures_are_the_windows_counts_and_quantiles_in_ms() -> None:
    window = VersionWindow()
    for i in range(1, 101):  # 1..100 ms; every tenth request failed, decisions alternate
        window.add(latency_s=i / 1000, failed=i % 10 == 0, score=None, decision=i % 2 == 0)
    fig = live_figures(window)
    assert (fig.requests, fig.failures, fig.error_rate, fig.source) == (100, 10, 0.1, "live")
    assert fig.decision_rate == 0.5
    # The sketch is within 1% of the rank floor(q * (n - 1)): 50, 95 and 99 ms.
    for name, want in (("p50", 50.0), ("p95", 95.0), ("p99", 99.0)):
        got = fig.latency_ms[name]
        assert got is not None and abs(got - want) <= want * 0.011, (name, got)


def test_an_empty_window_has_no_rates_or_quantiles() -> None:
    fig = live_figures(VersionWindow())
    assert fig.to_json() == {
        "requests": 0,
        "failures": 0,
        "error_rate": None,
        "latency_ms": {"p50": None, "p95": None, "p99": None},
        "decision_rate": None,
        "source": "live",
    }


def _route(pairs: int, compared: int, rate: float | None, p95: float | None, **extra: Any) -> dict[str, Any]:
    return {
        "pairs_total": pairs,
        "compared": compared,
        "decision_rate": {"baseline": 0.5, "candidate": rate},
        "latency_ms": {
            "baseline": {"p50": 1.0, "p95": 1.0, "p99": 1.0},
            "candidate": {"p50": None if p95 is None else p95 / 2, "p95": p95, "p99": None},
        },
        **extra,
    }


def test_mirror_figures_sum_routes_and_take_the_slowest_quantile() -> None:
    report = {
        "routes": {
            "a": _route(
                100,
                80,
                0.25,
                40.0,
                errors={"candidate": {"timeout": 3, "http_5xx": 1}, "baseline": {"timeout": 9}},
                schema_violations={"candidate": 2, "baseline": 5},
            ),
            "b": _route(50, 20, 0.75, 90.0, errors={"candidate": {"connect": 1}}),
        }
    }
    fig = mirror_figures(report)
    assert fig.source == "mirror"
    assert (fig.requests, fig.failures) == (150, 7)  # 4 + 1 errors and 2 contract breaches
    assert fig.error_rate == 7 / 150
    assert fig.latency_ms == {"p50": 45.0, "p95": 90.0, "p99": None}
    assert fig.decision_rate == pytest.approx((0.25 * 80 + 0.75 * 20) / 100)
    assert mirror_failures(report["routes"].values(), "baseline") == (9, 5)


def test_mirror_figures_of_no_mirrors_are_empty() -> None:
    fig = mirror_figures({"routes": {}})
    assert (fig.requests, fig.failures, fig.error_rate, fig.decision_rate) == (0, 0, None, None)
    assert fig.latency_ms == {"p50": None, "p95": None, "p99": None}
    assert mirror_figures({}).requests == 0
