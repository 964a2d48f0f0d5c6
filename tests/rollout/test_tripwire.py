"""The per-request trip-wire: consecutive failures, and the Bernoulli SPRT against the baseline's rate."""

from __future__ import annotations

import math
import random

import pytest

from proxy.rollout.tripwire import Tripwire, TripwireConfig


def warmed(baseline_error: float, *, seed: int = 0, n: int = 20_000, **policy: float) -> Tripwire:
    """A trip-wire that has seen ``n`` baseline requests failing at ``baseline_error``."""
    tw = Tripwire(TripwireConfig(**policy))  # type: ignore[arg-type]
    rng = random.Random(seed)
    for _ in range(n):
        tw.observe_baseline(rng.random() < baseline_error)
    return tw


def requests_until_trip(tw: Tripwire, rng: random.Random, error: float, limit: int) -> int | None:
    for i in range(1, limit + 1):
        if tw.observe_candidate(rng.random() < error) is not None:
            return i
    return None


def test_consecutive_failures_trip_on_the_nth() -> None:
    tw = Tripwire(TripwireConfig())  # no baseline yet: the SPRT is off, the run rule is not
    assert tw.state["sprt_active"] is False
    for _ in range(4):
        assert tw.observe_candidate(True) is None
    assert tw.observe_candidate(False) is None  # a success ends the run
    for _ in range(4):
        assert tw.observe_candidate(True) is None
    assert tw.observe_candidate(True) == "tripwire: 5 consecutive candidate failures"
    assert tw.tripped == "tripwire: 5 consecutive candidate failures"


@pytest.mark.parametrize("baseline_error", [0.001, 0.01])
def test_a_candidate_failing_everything_trips_within_consecutive_failures(baseline_error: float) -> None:
    tw = warmed(baseline_error)
    n = requests_until_trip(tw, random.Random(1), 1.0, 10)
    assert n is not None and n <= 5
    # Against a 0.1% baseline each failure is strong evidence: the SPRT decides on the second one.
    assert n == (2 if baseline_error == 0.001 else 5)


def test_sprt_trips_on_thirty_percent_failures_within_a_few_dozen_requests() -> None:
    counts = []
    for seed in range(50):
        tw = warmed(0.01, seed=seed)
        n = requests_until_trip(tw, random.Random(1000 + seed), 0.30, 200)
        assert n is not None
        assert "SPRT" in (tw.tripped or "") or "consecutive" in (tw.tripped or "")
        counts.append(n)
    assert max(counts) <= 60
    assert sorted(counts)[25] <= 25  # median


def test_sprt_catches_five_percent_against_a_one_percent_baseline() -> None:
    # The canary case of PRODUCT §5 at 5% weight: well within the first window of 200 in most rollouts.
    counts = []
    for seed in range(40):
        n = requests_until_trip(warmed(0.01, seed=seed), random.Random(5000 + seed), 0.05, 2000)
        counts.append(n if n is not None else 10**9)
    assert sorted(counts)[20] <= 250
    assert sum(c <= 600 for c in counts) >= 36


@pytest.mark.parametrize("baseline_error", [0.001, 0.01, 0.03])
def test_a_healthy_candidate_never_trips_over_100k_requests(baseline_error: float) -> None:
    tw = warmed(baseline_error, seed=7)
    rng = random.Random(8)
    for _ in range(100_000):
        tw.observe_baseline(rng.random() < baseline_error)
        assert tw.observe_candidate(rng.random() < baseline_error) is None
    assert tw.tripped is None
    assert tw.state["llr"] < tw.state["upper"]


def test_sprt_is_off_while_the_baseline_fails_as_often_as_failure_rate() -> None:
    tw = warmed(0.08)
    assert tw.baseline_rate >= 0.05 and tw.state["sprt_active"] is False
    rng = random.Random(3)
    for _ in range(20_000):  # a candidate as bad as this baseline: only the run rule could trip
        tw.observe_candidate(rng.random() < 0.08)
        assert tw.state["llr"] == 0.0
    assert tw.tripped is None or "consecutive" in tw.tripped


def test_the_baseline_estimate_is_conservative_and_floored() -> None:
    assert Tripwire(TripwireConfig()).baseline_rate == 1.0  # nothing seen: assume the worst, SPRT off
    tw = warmed(0.0, n=50_000)
    assert tw.baseline_rate == 0.001  # the floor
    tw = warmed(0.01, n=50_000)
    assert 0.01 < tw.baseline_rate < 0.013  # an upper bound, near the rate


def test_the_baseline_estimate_follows_recent_traffic() -> None:
    tw = warmed(0.001, n=30_000)
    assert tw.baseline_rate < 0.002
    for _ in range(30_000):
        tw.observe_baseline(False)
    rng = random.Random(2)
    for _ in range(30_000):
        tw.observe_baseline(rng.random() < 0.02)
    assert 0.018 < tw.baseline_rate < 0.024


def test_trip_latches_until_reset_and_reset_keeps_the_baseline() -> None:
    tw = warmed(0.01)
    before = tw.baseline_rate
    reasons = [tw.observe_candidate(True) for _ in range(8)]
    assert sum(r is not None for r in reasons) == 1  # edge-triggered
    assert tw.tripped is not None and tw.state["tripped"] == tw.tripped
    tw.reset()
    assert tw.tripped is None and tw.state["llr"] == 0.0 and tw.state["consecutive"] == 0
    assert tw.baseline_rate == before


def test_sprt_reason_names_rates_and_counts() -> None:
    tw = warmed(0.01)
    reason = None
    for i in range(100):
        reason = tw.observe_candidate(i % 3 == 0)  # 33% failures, never 5 in a row
        if reason:
            break
    assert reason is not None and reason.startswith(
        "tripwire: candidate failing like 5% rather than the baseline's 1."
    )
    assert "SPRT llr" in reason and "of the last" in reason


def test_the_ratio_rests_at_its_lower_bound_on_a_healthy_candidate() -> None:
    tw = warmed(0.01)
    for _ in range(2000):
        tw.observe_candidate(False)
    state = tw.state
    assert state["llr"] == state["lower"] == pytest.approx(math.log(0.01 / 0.999), abs=1e-4)
    assert state["upper"] == pytest.approx(math.log(0.99 / 0.001), abs=1e-4)
    assert set(state) == {"llr", "upper", "lower", "consecutive", "baseline_rate", "sprt_active", "tripped"}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"consecutive_failures": 0},
        {"alpha": 0.0},
        {"beta": 0.6},
        {"failure_rate": 0.0005},
        {"baseline_floor": 0.0},
        {"baseline_window": 0},
    ],
)
def test_policy_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        TripwireConfig(**kwargs)  # type: ignore[arg-type]
