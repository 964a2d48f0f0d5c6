"""The trip-wire's arithmetic, step by step, against the formulas of its module docstring: the SPRT's
increments and bounds, the traffic share it judges against, the run rule's Fisher test at its threshold
and the counts a trip reason reports.

``test_tripwire.py`` checks the statistical promises over long seeded runs; these tests pin each number
on a few requests, so a wrong sign or an off-by-one shows at once rather than as a slightly different
error rate.
"""

from __future__ import annotations

import math
from math import comb

import pytest

from proxy.rollout.tripwire import RUN_LOOKS_SHARE, SHARE_PRIOR, Tripwire, TripwireConfig

# A baseline floor high enough that 1,000 successes settle p0 on it exactly (their weighted count is
# ~100 with a window of 100, whose Wilson bound is 2.6%), and a failure rate the candidate fails at.
P0, P1 = 0.0344, 0.3
POLICY = TripwireConfig(failure_rate=P1, baseline_floor=P0, baseline_window=100)
UPPER = math.log((1 - POLICY.beta) / POLICY.alpha)
LOWER = math.log(POLICY.beta / (1 - POLICY.alpha))


def settled(policy: TripwireConfig = POLICY) -> Tripwire:
    tw = Tripwire(policy)
    for _ in range(1000):
        tw.observe_baseline(False)
    assert tw.baseline_rate == P0
    return tw


def step(share: float, p0: float, candidate: bool) -> float:
    """One failed request's SPRT increment (the module docstring): log(q1/pi) for the candidate's,
    log((1-q1)/(1-pi)) for the baseline's, q1 = pi*rho/(pi*rho + 1 - pi), rho = p1/p0."""
    rho = P1 / p0
    q1 = share * rho / (share * rho + 1 - share)
    return math.log(q1 / share) if candidate else math.log((1 - q1) / (1 - share))


def weighted_share(weight: float, baseline: int, candidate: int) -> float:
    return (candidate + SHARE_PRIOR * weight) / (baseline + candidate + SHARE_PRIOR)


def test_a_new_trip_wire_has_seen_nothing() -> None:
    assert Tripwire(POLICY).state == {
        "llr": 0.0,
        "upper": round(UPPER, 4),
        "lower": round(LOWER, 4),
        "consecutive": 0,
        "baseline_rate": 1.0,
        "candidate_share": None,
        "sprt_active": False,
        "tripped": None,
    }


def test_the_baseline_estimate_is_the_wilson_bound_of_the_weighted_failure_share() -> None:
    tw = Tripwire(POLICY)
    outcomes = [True] + [False] * 9 + [True] + [False] * 29
    for failed in outcomes:
        tw.observe_baseline(failed)
    decay = 1 - 1 / POLICY.baseline_window
    ages = range(len(outcomes) - 1, -1, -1)  # the first outcome is the oldest
    failures = sum(decay**age for age, failed in zip(ages, outcomes, strict=True) if failed)
    n = sum(decay**age for age in ages)
    p, z = failures / n, 1.6448536269514722
    upper = (p + z * z / (2 * n) + z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / (1 + z * z / n)
    assert tw.baseline_rate == pytest.approx(upper, rel=1e-12)


# -- the traffic share ----------------------------------------------------------------------------


def test_without_a_weight_the_share_waits_for_five_requests_of_each_version() -> None:
    tw = Tripwire(POLICY)
    for _ in range(4):
        tw.observe_baseline(False)
    for _ in range(5):
        tw.observe_candidate(False)
    assert tw.candidate_share is None  # four baseline requests are not enough
    tw.observe_baseline(False)
    assert tw.candidate_share == 0.5
    tw.reset()
    for _ in range(5):
        tw.observe_baseline(False)
    for _ in range(4):
        tw.observe_candidate(False)
    assert tw.candidate_share is None  # nor four candidate ones, counted afresh after a reset
    tw.observe_candidate(False)
    assert tw.candidate_share == 0.5


@pytest.mark.parametrize("weight", [0.0001, 0.05, 0.5, 0.9999])
def test_with_a_weight_the_share_starts_there_and_moves_with_traffic(weight: float) -> None:
    tw = Tripwire(POLICY)
    tw.reset(weight)
    assert tw.candidate_share == pytest.approx(weight, rel=1e-12)
    for _ in range(30):
        tw.observe_baseline(False)
    for _ in range(7):
        tw.observe_candidate(False)
    assert tw.candidate_share == pytest.approx(weighted_share(weight, 30, 7), rel=1e-12)
    assert tw.state["candidate_share"] == round(weighted_share(weight, 30, 7), 6)


@pytest.mark.parametrize("weight", [0.0, 1.0, -0.5, 1.5])
def test_a_weight_outside_the_open_unit_interval_is_no_weight(weight: float) -> None:
    # At 0% or 100% there is no mix to start from: the share is read from the traffic alone.
    tw = Tripwire(POLICY)
    tw.reset(weight)
    assert tw.candidate_share is None
    for _ in range(5):
        tw.observe_baseline(False)
        tw.observe_candidate(False)
    assert tw.candidate_share == 0.5


# -- the SPRT ---------------------------------------------------------------------------------------

# The weight is chosen so that the share printed at the trip sits just below a rounding edge
# (14.43% -> "14"), and P0 likewise (3.44% -> "3.4"): a reason one percent off would read otherwise.
WEIGHT = 0.14259


def test_each_candidate_failure_adds_its_increment_and_the_trip_reason_reports_them() -> None:
    tw = settled()
    tw.reset(WEIGHT)
    llr, k = 0.0, 0
    reason = None
    while reason is None and k < 50:
        share = weighted_share(WEIGHT, 0, k)
        reason = tw.observe_candidate(True)
        llr += step(share, P0, candidate=True)
        k += 1
        assert tw.state["llr"] == round(llr, 4)
        assert (reason is not None) == (llr >= UPPER)
    assert k == 5
    assert reason == (
        f"tripwire: 5 of the last 5 failed requests were the candidate's while it served "
        f"{100 * share:.2g}% of the traffic (failing like 30% rather than the baseline's 3.4%: "
        f"SPRT llr {llr:.1f} >= {UPPER:.1f})"
    )
    assert f"{100 * share:.2g}" == "14"
    assert tw.tripped == reason and tw.state["tripped"] == reason


def test_a_baseline_failure_lowers_the_ratio_by_its_increment() -> None:
    tw = settled()
    tw.reset(WEIGHT)
    tw.observe_candidate(True)
    after_one = step(weighted_share(WEIGHT, 0, 0), P0, candidate=True)
    share = weighted_share(WEIGHT, 0, 1)
    tw.observe_baseline(True)
    # The increment uses p0 with this failure counted, and the share from before it.
    expected = after_one + step(share, tw.baseline_rate, candidate=False)
    assert expected < after_one
    assert tw.state["llr"] == round(expected, 4)


def test_without_a_weight_the_share_is_the_traffic_since_the_step_began() -> None:
    tw = settled()
    for _ in range(5):
        assert tw.observe_candidate(False) is None
    llr, k, reason = 0.0, 0, None
    while reason is None and k < 200:
        share = (5 + k) / (1000 + 5 + k)
        reason = tw.observe_candidate(True)
        llr += step(share, P0, candidate=True)
        k += 1
        assert tw.state["llr"] == round(llr, 4)
    assert reason is not None
    assert reason.startswith(f"tripwire: {k} of the last {k} failed requests were the candidate's")


def test_the_reason_counts_failures_since_the_ratio_last_sat_at_its_floor() -> None:
    # A long baseline window keeps p0 on its floor while a few baseline failures push the ratio down.
    tw = settled(TripwireConfig(failure_rate=P1, baseline_floor=P0, baseline_window=100_000))
    tw.reset(WEIGHT)
    tw.observe_candidate(True)
    for _ in range(20):
        tw.observe_baseline(True)
        if tw.state["llr"] == round(LOWER, 4):
            break
    assert tw.state["llr"] == round(LOWER, 4) and tw.baseline_rate == P0
    reasons = [tw.observe_candidate(True) for _ in range(40)]
    k = next(i for i, reason in enumerate(reasons, 1) if reason is not None)
    assert str(reasons[k - 1]).startswith(f"tripwire: {k} of the last {k} failed requests were the")


# -- the run rule -----------------------------------------------------------------------------------


def test_the_run_rule_level_is_alpha_shared_by_its_looks() -> None:
    # Five failures in a row and n baseline successes meanwhile: all five are among the span's five
    # failures with probability 1 / C(n + 5, 5). The level is alpha / 100 = 1e-5: n = 23 is not enough
    # (1.02e-5), n = 24 is (8.4e-6).
    level = POLICY.alpha * RUN_LOOKS_SHARE
    assert 1 / comb(23 + 5, 5) > level >= 1 / comb(24 + 5, 5)
    for n, trips in ((23, False), (24, True)):
        tw = Tripwire(POLICY)  # p0 unknown: the SPRT is off, only the run rule can trip
        assert tw.observe_candidate(True) is None
        for _ in range(n):
            tw.observe_baseline(False)
        for _ in range(3):
            assert tw.observe_candidate(True) is None
        reason = tw.observe_candidate(True)
        expected = f"tripwire: 5 consecutive candidate failures (the baseline failed 0 of its {n} meanwhile)"
        assert reason == (expected if trips else None)


def test_a_run_held_at_its_fifth_failure_trips_when_the_evidence_grows() -> None:
    tw = Tripwire(POLICY)
    tw.observe_candidate(True)
    for _ in range(23):
        tw.observe_baseline(False)
    for _ in range(4):
        assert tw.observe_candidate(True) is None
    tw.observe_baseline(False)
    assert tw.observe_candidate(True) == (
        "tripwire: 6 consecutive candidate failures (the baseline failed 0 of its 24 meanwhile)"
    )
