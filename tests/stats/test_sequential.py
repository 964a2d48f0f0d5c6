"""Confidence sequences: valid at every look (the reason the canary uses them), and how much they cost."""

from __future__ import annotations

import math

import numpy as np
import pytest

from proxy.stats.inference import z_upper
from proxy.stats.sequential import Estimate, always_valid_p, cs_lower, cs_radius, cs_upper, share_p


def crossings(alpha: float, radius_of: object, paths: int = 4000, looks: int = 200) -> float:
    """Share of null random walks (the running mean of N(0, 1) draws, looked at after each of ``looks``
    batches of 10) whose estimate ever leaves +-radius(variance)."""
    rng = np.random.default_rng(2)
    draws = rng.normal(0.0, 1.0, size=(paths, looks * 10))
    n = np.arange(10, looks * 10 + 1, 10)
    means = np.cumsum(draws, axis=1)[:, 9::10] / n
    radius = np.array([radius_of(1.0 / k) for k in n])  # type: ignore[operator]
    return float(np.mean(np.any(np.abs(means) > radius, axis=1)))


def test_the_sequence_holds_at_every_look_where_a_fixed_bound_does_not() -> None:
    alpha = 0.05
    sequence = crossings(alpha, lambda v: cs_radius(v, alpha, tuning=0.01))
    fixed = crossings(alpha, lambda v: z_upper(alpha / 2) * math.sqrt(v))
    assert sequence <= alpha  # two-sided, uniformly over 200 looks
    assert fixed > 4 * alpha  # the same 95% bound re-checked 200 times: far more often than 5%


def test_any_tuning_keeps_the_guarantee() -> None:
    for tuning in (1e-4, 1e-2, 1.0):
        assert crossings(0.05, lambda v, t=tuning: cs_radius(v, 0.05, t), paths=2000) <= 0.05


def test_its_price_at_the_tightest_point() -> None:
    # At the tuning's best variance (~tuning/15) the radius is ~3.0 standard errors at alpha 0.05 and
    # ~4.1 at 0.00125 (about the fail tests' 0.05 / 48), against 1.96 and 3.2 for one look: validity
    # costs ~1.3-1.5x.
    for alpha, fixed, most in ((0.05, 1.96, 3.1), (0.00125, 3.23, 4.2)):
        best = min(cs_radius(1.0 / x, alpha, 1.0) * math.sqrt(x) for x in range(1, 200))
        assert fixed < best < most


def test_bounds_and_p_values_agree() -> None:
    e = Estimate(0.03, 1e-4, 4e-4)
    assert e.upper(0.05) == cs_upper(0.03, 1e-4, 0.05, 4e-4) and e.lower(0.05) == cs_lower(
        0.03, 1e-4, 0.05, 4e-4
    )
    # The lower end is above 0 exactly when the p-value of "not above 0" is below alpha.
    for alpha in (0.2, 0.05, 0.01, 0.001):
        assert (e.lower(alpha) > 0.0) == (e.p_above(0.0) < alpha)
    assert e.p_below(0.0) == 1.0  # one-sided: an estimate above the reference is no evidence below it


def test_edges() -> None:
    assert cs_radius(0.0, 0.05, 1.0) == 0.0 and cs_radius(math.inf, 0.05, 1.0) == math.inf
    assert always_valid_p(-1.0, 1.0, 1.0) == 1.0 and always_valid_p(1.0, math.inf, 1.0) == 1.0
    assert always_valid_p(1.0, 0.0, 1.0) == 0.0
    with pytest.raises(ValueError):
        cs_radius(1.0, 0.0, 1.0)
    with pytest.raises(ValueError):
        always_valid_p(1.0, 1.0, 0.0)
    assert share_p(0, 10, 0.1) == share_p(5, 10, 0.0) == share_p(1, 0, 0.1) == 1.0


def test_a_burst_shared_by_both_versions_is_no_evidence() -> None:
    # 400 failures in a burst, the candidate getting its 5% share of them: nothing to see. 60 of them
    # (three times its share) is.
    assert share_p(20, 400, 0.05) == 1.0
    assert share_p(60, 400, 0.05) < 1e-6
