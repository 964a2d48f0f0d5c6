"""The per-request trip-wire: the candidate's share of failures against its share of traffic, and runs of
failures while the baseline is healthy — both judged at the same moment as the baseline."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest

from proxy.rollout.tripwire import Tripwire, TripwireConfig

Rate = Callable[[int], float]  # request index -> failure probability


def warmed(
    baseline_error: float, *, weight: float | None = None, seed: int = 0, n: int = 20_000, **policy: float
) -> Tripwire:
    """A trip-wire that has seen ``n`` baseline requests failing at ``baseline_error`` (the shadow phase)
    and, with ``weight``, is re-armed for a step at that weight, as the recorder does."""
    tw = Tripwire(TripwireConfig(**policy))  # type: ignore[arg-type]
    rng = random.Random(seed)
    for _ in range(n):
        tw.observe_baseline(rng.random() < baseline_error)
    if weight is not None:
        tw.reset(weight)
    return tw


def drive(
    tw: Tripwire,
    rng: random.Random,
    *,
    weight: float,
    baseline: float | Rate,
    candidate: float | Rate,
    limit: int,
) -> int | None:
    """Route ``limit`` requests at random by ``weight``; the candidate request that trips (counted among
    candidate requests), or None."""
    base = baseline if callable(baseline) else (lambda _i, p=baseline: p)
    cand = candidate if callable(candidate) else (lambda _i, p=candidate: p)
    served = 0
    for i in range(limit):
        if rng.random() < weight:
            served += 1
            if tw.observe_candidate(rng.random() < cand(i)) is not None:
                return served
        else:
            tw.observe_baseline(rng.random() < base(i))
    return None


def bursts(calm: float, burst: float, every: int, length: int) -> Rate:
    """A failure rate shared by both versions: ``burst`` for ``length`` requests out of each ``every``."""
    return lambda i: burst if i % every < length else calm


def test_consecutive_failures_trip_on_the_nth_while_the_baseline_is_healthy() -> None:
    tw = Tripwire(TripwireConfig())  # no baseline rate yet: the SPRT is off, the run rule is not

    def candidate(failed: bool) -> str | None:
        for _ in range(30):  # a 3% step: the baseline serves meanwhile, and does not fail
            tw.observe_baseline(False)
        return tw.observe_candidate(failed)

    assert tw.state["sprt_active"] is False
    for _ in range(4):
        assert candidate(True) is None
    assert candidate(False) is None  # a success ends the run
    for _ in range(4):
        assert candidate(True) is None
    reason = "tripwire: 5 consecutive candidate failures (the baseline failed 0 of its 120 meanwhile)"
    assert candidate(True) == reason
    assert tw.tripped == reason


def test_a_run_without_a_baseline_request_in_its_span_does_not_trip() -> None:
    tw = warmed(0.01)
    for _ in range(50):
        assert tw.observe_candidate(True) is None or "SPRT" in (tw.tripped or "")
    assert tw.tripped is None or "consecutive" not in tw.tripped


def test_a_run_of_failures_the_baseline_shares_does_not_trip() -> None:
    tw = warmed(0.01, weight=1 / 3)
    for _ in range(20):  # an outage of both: every request of either version fails
        tw.observe_baseline(True)
        tw.observe_baseline(True)
        assert tw.observe_candidate(True) is None
    assert tw.tripped is None and tw.state["consecutive"] == 20
    tw.reset(1 / 3)
    for _ in range(4):
        for _ in range(10):
            tw.observe_baseline(False)
        assert tw.observe_candidate(True) is None
    assert tw.observe_candidate(True) == (
        "tripwire: 5 consecutive candidate failures (the baseline failed 0 of its 30 meanwhile)"
    )


@pytest.mark.parametrize(("weight", "baseline_error"), [(0.01, 0.001), (0.05, 0.01), (0.5, 0.01)])
def test_a_candidate_failing_everything_trips_within_consecutive_failures(
    weight: float, baseline_error: float
) -> None:
    for seed in range(20):
        tw = warmed(baseline_error, weight=weight, seed=seed)
        n = drive(
            tw, random.Random(seed), weight=weight, baseline=baseline_error, candidate=1.0, limit=50_000
        )
        # Against a healthy baseline the 5th failure decides, the 6th when the baseline failed once
        # meanwhile; at 50% a run of 5 spans only ~5 baseline requests, too few to rule out a shared
        # incident, and it takes several more.
        assert n is not None and n <= (6 if weight < 0.3 else 16), (seed, n, tw.tripped)


def test_sprt_trips_on_thirty_percent_failures_within_a_few_dozen_requests() -> None:
    counts = []
    for seed in range(50):
        tw = warmed(0.01, weight=0.05, seed=seed)
        n = drive(tw, random.Random(1000 + seed), weight=0.05, baseline=0.01, candidate=0.30, limit=100_000)
        assert n is not None
        counts.append(n)
    assert max(counts) <= 80
    assert sorted(counts)[25] <= 30  # median


def test_sprt_catches_five_percent_against_a_one_percent_baseline_at_five_percent_weight() -> None:
    # The controller's canary case: 4,000 requests a window at 5% weight is 200 candidate requests.
    counts = []
    for seed in range(40):
        tw = warmed(0.01, weight=0.05, seed=seed)
        n = drive(tw, random.Random(5000 + seed), weight=0.05, baseline=0.01, candidate=0.05, limit=40_000)
        counts.append(n if n is not None else 10**9)
    assert sorted(counts)[20] <= 300
    assert sum(c <= 600 for c in counts) >= 34


@pytest.mark.parametrize("weight", [0.01, 0.05, 0.5])
@pytest.mark.parametrize("baseline_error", [0.001, 0.01, 0.03])
def test_a_healthy_candidate_never_trips_over_200k_requests(weight: float, baseline_error: float) -> None:
    tw = warmed(baseline_error, weight=weight, seed=7)
    assert (
        drive(
            tw,
            random.Random(8),
            weight=weight,
            baseline=baseline_error,
            candidate=baseline_error,
            limit=200_000,
        )
        is None
    )
    assert tw.tripped is None
    assert tw.state["llr"] < tw.state["upper"]


@pytest.mark.parametrize("weight", [0.01, 0.05, 0.25])
def test_error_bursts_shared_by_both_versions_never_trip(weight: float) -> None:
    # 60% of every request fails for 200 requests in each 4,000 (a 3 s burst at 4,000 a minute), then 1%.
    shared = bursts(0.01, 0.6, every=4000, length=200)
    for seed in range(5):
        tw = warmed(0.01, weight=weight, seed=seed)
        assert (
            drive(tw, random.Random(seed), weight=weight, baseline=shared, candidate=shared, limit=200_000)
            is None
        ), tw.tripped


def test_a_candidate_worse_during_the_bursts_only_is_caught() -> None:
    # The candidate fails every request of a burst the baseline fails a fifth of: that is its own fault.
    base, cand = bursts(0.01, 0.2, every=4000, length=200), bursts(0.01, 1.0, every=4000, length=200)
    caught = 0
    for seed in range(10):
        tw = warmed(0.01, weight=0.05, seed=seed)
        caught += (
            drive(tw, random.Random(seed), weight=0.05, baseline=base, candidate=cand, limit=40_000)
            is not None
        )
    assert caught == 10


def test_sprt_is_off_while_the_baseline_fails_as_often_as_failure_rate() -> None:
    tw = warmed(0.08, weight=0.05)
    assert tw.baseline_rate >= 0.05 and tw.state["sprt_active"] is False
    drive(tw, random.Random(3), weight=0.05, baseline=0.08, candidate=0.08, limit=100_000)
    assert tw.state["llr"] == 0.0
    assert tw.tripped is None


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


def test_the_traffic_share_is_read_from_recent_requests_of_both_versions() -> None:
    tw = Tripwire(TripwireConfig())
    assert tw.candidate_share is None
    drive(tw, random.Random(4), weight=0.05, baseline=0.0, candidate=0.0, limit=20_000)
    share = tw.candidate_share
    assert share is not None and 0.04 < share < 0.06
    tw.reset()  # the next step: its own share
    drive(tw, random.Random(5), weight=0.5, baseline=0.0, candidate=0.0, limit=20_000)
    share = tw.candidate_share
    assert share is not None and 0.45 < share < 0.55


def test_trip_latches_until_reset_and_reset_keeps_the_baseline() -> None:
    tw = warmed(0.01, weight=0.05)
    drive(tw, random.Random(6), weight=0.05, baseline=0.01, candidate=0.0, limit=2000)
    before = tw.baseline_rate
    reasons = [tw.observe_candidate(True) for _ in range(20)]
    assert sum(r is not None for r in reasons) == 1  # edge-triggered
    assert tw.tripped is not None and tw.state["tripped"] == tw.tripped
    tw.reset()
    assert tw.tripped is None and tw.state["llr"] == 0.0 and tw.state["consecutive"] == 0
    assert tw.candidate_share is None  # a new step has a new weight
    assert tw.baseline_rate == pytest.approx(before, rel=0.01)


def test_sprt_reason_names_the_failures_and_the_share() -> None:
    tw = warmed(0.01, weight=0.05)
    rng = random.Random(9)
    reason = None
    for i in range(20_000):
        if rng.random() < 0.05:
            reason = tw.observe_candidate(i % 3 == 0)  # 33% failures, never 5 in a row
            if reason:
                break
        else:
            tw.observe_baseline(rng.random() < 0.01)
    assert reason is not None and "failed requests were the candidate's while it served" in reason
    assert "failing like 5% rather than the baseline's 1." in reason and "SPRT llr" in reason


def test_the_ratio_rests_at_its_lower_bound_on_a_healthy_candidate() -> None:
    tw = warmed(0.01, weight=0.05)
    drive(tw, random.Random(10), weight=0.05, baseline=0.01, candidate=0.0, limit=50_000)
    state = tw.state
    assert state["llr"] == state["lower"] == pytest.approx(math.log(0.01 / 0.999), abs=1e-4)
    assert state["upper"] == pytest.approx(math.log(0.99 / 0.001), abs=1e-4)
    assert set(state) == {
        "llr",
        "upper",
        "lower",
        "consecutive",
        "baseline_rate",
        "candidate_share",
        "sprt_active",
        "tripped",
    }


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
