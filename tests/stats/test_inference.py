"""Evidence windows and the exact statistics behind the canary gates.

Reference values were computed once with scipy 1.x (``scipy.stats.binom``, ``fisher_exact``,
``mannwhitneyu(method="asymptotic", use_continuity=True)``) and Newcombe (1998), Table II; they are pinned
here so the suite needs neither.
"""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.rollout.evidence import Evidence, VersionWindow
from proxy.stats.inference import (
    binom_cdf,
    binom_sf,
    exceedance_greater,
    fisher_greater,
    holm_adjust,
    mann_whitney_greater,
    newcombe_interval,
    newcombe_p,
    normal_sf,
    paired_shift_interval,
    z_upper,
)


def test_empty_window_has_no_rates() -> None:
    w = VersionWindow()
    assert (w.error_rate, w.decision_rate, w.p95_ms, w.cost_per_1k) == (None, None, None, None)
    summary = w.to_json()
    assert summary["requests"] == 0 and summary["latency_ms"] == {"p50": None, "p95": None, "p99": None}


def test_window_counts_and_rates() -> None:
    w = VersionWindow()
    for i in range(100):
        w.add(
            latency_s=(i + 1) / 1000.0,
            failed=i < 3,
            score=None if i >= 80 else i / 100.0,
            decision=None if i >= 80 else i >= 60,
            cost=0.001,
        )
    w.add(latency_s=0.05, failed=False, score=None, decision=None, policy_violations=2)
    assert (w.requests, w.failures, w.decided, w.positives, w.policy_violations) == (101, 3, 80, 20, 2)
    assert w.error_rate == pytest.approx(3 / 101)
    assert w.decision_rate == pytest.approx(0.25)
    assert w.scores.count == 80 and w.latency_sample.count == 101
    assert w.cost_per_1k == pytest.approx(1000 * 0.1 / 101)
    assert w.p95_ms == pytest.approx(95, rel=0.02)
    summary = w.to_json()
    assert summary["latency_ms"]["p50"] == pytest.approx(50, rel=0.02)
    assert summary["failures"] == 3 and summary["scores"] == 80


@pytest.mark.parametrize(
    "kwargs",
    [
        {"latency_s": math.inf, "score": None},
        {"latency_s": 0.1, "score": math.nan},
        {"latency_s": 0.1, "score": None, "cost": math.nan},
    ],
)
def test_window_refuses_non_finite(kwargs: dict[str, float | None]) -> None:
    with pytest.raises(ValueError):
        VersionWindow().add(failed=False, decision=None, **kwargs)  # type: ignore[arg-type]


def test_merge_is_the_same_as_adding_both() -> None:
    a, b, both = VersionWindow(), VersionWindow(), VersionWindow()
    for i in range(300):
        kw = {"latency_s": 0.01 + i / 1e4, "failed": i % 7 == 0, "score": i / 300, "decision": i % 3 == 0}
        (a if i % 2 else b).add(**kw, cost=0.002)  # type: ignore[arg-type]
        both.add(**kw, cost=0.002)  # type: ignore[arg-type]
    a.merge(b)
    for key in ("requests", "failures", "decided", "positives", "error_rate", "decision_rate"):
        assert getattr(a, key) == getattr(both, key)
    assert a.cost == pytest.approx(both.cost) and a.p95_ms == pytest.approx(both.p95_ms)
    assert sorted(a.latency_sample.values()) == sorted(both.latency_sample.values())


def test_evidence_pairs_two_windows() -> None:
    ev = Evidence(baseline=VersionWindow(), candidate=VersionWindow())
    assert ev.baseline is not ev.candidate


@pytest.mark.parametrize(
    ("k", "n", "p", "sf", "cdf"),
    [
        (4, 200, 0.005, 0.018681339394892763, 0.9964545201954874),
        (10, 200, 0.05, 0.5452901913191844, 0.5830671820811717),
        (38, 3800, 0.01, 0.5219000558326268, 0.5430004670541478),
        (350, 1000, 0.3, 0.0003738701054403908, 0.9997075936252493),
        (500600, 1000000, 0.5, 0.11526396430185594, 0.8851244079235294),
    ],
)
def test_binomial_tails_match_scipy(k: int, n: int, p: float, sf: float, cdf: float) -> None:
    assert binom_sf(k, n, p) == pytest.approx(sf, rel=1e-9)
    assert binom_cdf(k, n, p) == pytest.approx(cdf, rel=1e-9)


def test_binomial_edges() -> None:
    assert binom_sf(0, 10, 0.3) == 1.0 and binom_sf(11, 10, 0.3) == 0.0
    assert binom_sf(1, 10, 0.0) == 0.0 and binom_sf(10, 10, 1.0) == 1.0
    assert binom_cdf(-1, 10, 0.3) == 0.0 and binom_cdf(10, 10, 0.3) == 1.0
    assert binom_cdf(9, 10, 1.0) == 0.0 and binom_cdf(0, 10, 0.0) == 1.0
    assert binom_sf(5000, 5000, 0.5) == pytest.approx(0.5**5000, abs=1e-300)


@given(st.integers(1, 3000), st.floats(0.0001, 0.9999), st.data())
def test_binomial_tails_are_complements(n: int, p: float, data: st.DataObject) -> None:
    k = data.draw(st.integers(0, n))
    assert binom_sf(k, n, p) + binom_cdf(k - 1, n, p) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ((6, 200, 38, 3800), 0.02089469750763372),
        ((2, 200, 4, 3800), 0.03265910708636285),
        ((10, 200, 38, 3800), 9.618426207603783e-05),
        ((50, 100, 40, 100), 0.10035380006799037),
        ((3, 10, 7, 10), 0.9884929312173895),
        ((0, 200, 4, 3800), 1.0),
    ],
)
def test_fisher_matches_scipy(counts: tuple[int, int, int, int], expected: float) -> None:
    assert fisher_greater(*counts) == pytest.approx(expected, rel=1e-8)


def test_fisher_refuses_impossible_counts() -> None:
    with pytest.raises(ValueError):
        fisher_greater(3, 2, 0, 10)
    with pytest.raises(ValueError):
        fisher_greater(0, 0, 0, 10)


def test_mann_whitney_matches_scipy() -> None:
    u, p = mann_whitney_greater([1, 2, 2, 3, 5, 8, 8, 8, 13, 21], [0, 1, 1, 2, 3, 3, 5, 5, 8])
    assert u == 64.5 and p == pytest.approx(0.05828404963897793, rel=1e-9)
    u, p = mann_whitney_greater([float(i) for i in range(100, 300)], [float(i) for i in range(250)])
    assert u == 38750.0 and p == pytest.approx(5.618640827712542e-24, rel=1e-6)


def test_mann_whitney_degenerate_input() -> None:
    assert mann_whitney_greater([], [1.0]) == (0.0, 1.0)
    assert mann_whitney_greater([2.0, 2.0], [2.0, 2.0])[1] == 1.0


def test_exceedance_sees_a_heavier_tail() -> None:
    base = [float(i) for i in range(1000)]
    tail = [float(i) for i in range(880)] + [5000.0] * 120  # 12% beyond everything
    cut, p = exceedance_greater(tail, base, 0.95)
    assert cut == 5000.0 and p < 1e-6  # 6% tied at the cut: they count as the tail
    cut, p = exceedance_greater([float(i) for i in range(880)] + [2000.0 + i for i in range(120)], base, 0.95)
    assert cut > 2000.0 and p < 1e-6  # the top 5% of the pooled values are all the candidate's
    assert exceedance_greater(base, base, 0.95)[1] > 0.4
    assert exceedance_greater([], base, 0.95)[1] == 1.0


@pytest.mark.parametrize(
    ("counts", "lo", "hi"),
    [((56, 70, 48, 80), 0.0524, 0.3339), ((9, 10, 3, 10), 0.1705, 0.8090), ((5, 56, 0, 29), -0.0381, 0.1926)],
)
def test_newcombe_interval_matches_the_paper(counts: tuple[int, int, int, int], lo: float, hi: float) -> None:
    got = newcombe_interval(*counts, z=1.959964)
    assert got == pytest.approx((lo, hi), abs=6e-5)


@given(
    st.integers(20, 3000),
    st.integers(20, 3000),
    st.floats(0.0, 1.0),
    st.floats(0.0, 1.0),
    st.floats(0.001, 0.2),
    st.sampled_from([0.001, 0.01, 0.05, 0.2]),
)
def test_newcombe_p_agrees_with_the_interval(
    n1: int, n2: int, f1: float, f2: float, margin: float, alpha: float
) -> None:
    k1, k2 = round(f1 * n1), round(f2 * n2)
    lo, hi = newcombe_interval(k1, n1, k2, n2, z_upper(alpha))
    p_above = newcombe_p(k1, n1, k2, n2, margin, "above")
    p_below = newcombe_p(k1, n1, k2, n2, margin, "below")
    if abs(lo - margin) > 1e-6:
        assert (p_above < alpha) == (lo > margin)
    if abs(hi + margin) > 1e-6:
        assert (p_below < alpha) == (hi < -margin)
    assert min(p_above, p_below) >= 0.0 and max(p_above, p_below) <= 1.0


def test_holm_known_values() -> None:
    assert holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_adjust([]) == []
    assert holm_adjust([0.5]) == [0.5]


@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=12))
def test_holm_is_monotone_and_never_below_raw(ps: list[float]) -> None:
    adj = holm_adjust(ps)
    assert all(a >= p and a <= 1.0 for a, p in zip(adj, ps, strict=True))
    for i in range(len(ps)):
        for j in range(len(ps)):
            if ps[i] < ps[j]:
                assert adj[i] <= adj[j]
    # The smallest is multiplied by k; a Bonferroni bound.
    assert min(adj) == pytest.approx(min(1.0, len(ps) * min(ps)))


def test_normal_helpers() -> None:
    assert normal_sf(0.0) == 0.5 and normal_sf(1.6448536269514722) == pytest.approx(0.05)
    assert z_upper(0.05) == pytest.approx(1.6448536, rel=1e-6)
    assert 0.0 < normal_sf(10.0) < 1e-22


def _paired_draw(rng: random.Random, n: int, base_rate: float, down: float, up: float) -> tuple[int, ...]:
    """n pairs: the first says yes at ``base_rate``; the second flips a yes to no at ``down``, a no to yes
    at ``up``. Returns (both, first only, second only, neither)."""
    table = [0, 0, 0, 0]
    for _ in range(n):
        first = rng.random() < base_rate
        second = rng.random() >= down if first else rng.random() < up
        table[0 if first and second else 1 if first else 2 if second else 3] += 1
    return tuple(table)


@pytest.mark.parametrize(
    ("n", "base_rate", "down", "up"),
    [(40, 0.3, 0.05, 0.10), (200, 0.5, 0.02, 0.02), (400, 0.1, 0.0, 0.03), (120, 0.8, 0.10, 0.0)],
)
def test_paired_shift_interval_covers_the_truth(n: int, base_rate: float, down: float, up: float) -> None:
    rng = random.Random(n)
    truth = (1 - base_rate) * up - base_rate * down
    trials = 1500
    covered = sum(
        lo <= truth <= hi
        for lo, hi in (
            paired_shift_interval(*_paired_draw(rng, n, base_rate, down, up)) for _ in range(trials)
        )
    )
    # Newcombe's method 10 is a little conservative where few pairs disagree; never below nominal by more
    # than the simulation's own error (4.5 standard errors of 1500 draws at 95% is 2.5 points).
    assert covered / trials >= 0.925, covered / trials


def test_paired_shift_interval_uses_the_pairing() -> None:
    # 300 pairs that agree on all but 6: the rates (about 50%) are uncertain, their paired difference is not.
    paired = paired_shift_interval(150, 2, 4, 144)
    independent = newcombe_interval(154, 300, 152, 300, z=1.96)
    assert paired[0] < 2 / 300 < paired[1]
    assert paired[1] - paired[0] < 0.25 * (independent[1] - independent[0])
    # Swapping the versions mirrors the interval; no pairs, no knowledge.
    lo, hi = paired_shift_interval(150, 4, 2, 144)
    assert (lo, hi) == pytest.approx((-paired[1], -paired[0]))
    assert paired_shift_interval(0, 0, 0, 0) == (-1.0, 1.0)
    # Every pair flips up: both Wilson ends (0.07135 from 0/50 and from 50/50) add in quadrature.
    assert paired_shift_interval(0, 0, 50, 0) == pytest.approx((1 - math.sqrt(2) * 0.071350, 1.0), abs=1e-5)
