"""The statistics package against scipy.stats on generated inputs: every hand-written distribution and
test rollguard judges with, and the anytime-valid mixtures against their definitions integrated
numerically. (The product does not import scipy: these checks pin what our pure code computes.)"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, special, stats

from proxy.stats.inference import (
    binom_cdf,
    binom_sf,
    fisher_greater,
    kolmogorov_sf,
    log_quantile,
    mann_whitney_greater,
    normal_sf,
    rank_shift,
    z_upper,
)
from proxy.stats.sequential import always_valid_p, cs_radius, share_p

EXAMPLES = settings(max_examples=200)


@EXAMPLES
@given(st.integers(1, 400), st.floats(0.001, 0.999), st.data())
def test_binomial_tails(n: int, p: float, data: st.DataObject) -> None:
    k = data.draw(st.integers(0, n))
    assert binom_sf(k, n, p) == pytest.approx(stats.binom.sf(k - 1, n, p), rel=1e-7, abs=1e-300)
    assert binom_cdf(k, n, p) == pytest.approx(stats.binom.cdf(k, n, p), rel=1e-7, abs=1e-300)


@EXAMPLES
@given(st.integers(1, 300), st.integers(1, 300), st.data())
def test_fisher_exact_greater(n1: int, n2: int, data: st.DataObject) -> None:
    x1, x2 = data.draw(st.integers(0, n1)), data.draw(st.integers(0, n2))
    expected = stats.fisher_exact([[x1, n1 - x1], [x2, n2 - x2]], alternative="greater").pvalue
    assert fisher_greater(x1, n1, x2, n2) == pytest.approx(expected, rel=1e-6, abs=1e-12)


@EXAMPLES
@given(
    st.lists(st.integers(0, 30), min_size=2, max_size=80),
    st.lists(st.integers(0, 30), min_size=2, max_size=80),
)
def test_mann_whitney_with_ties(x: list[int], y: list[int]) -> None:
    xs, ys = [float(v) for v in x], [float(v) for v in y]
    if len(set(xs + ys)) < 2:
        return  # all tied: scipy's statistic is undefined, ours is p = 1
    ref = stats.mannwhitneyu(xs, ys, alternative="greater", method="asymptotic", use_continuity=True)
    u, p = mann_whitney_greater(xs, ys)
    assert u == ref.statistic and p == pytest.approx(ref.pvalue, rel=1e-7, abs=1e-15)
    shift, var = rank_shift(xs, ys)
    assert shift == pytest.approx(ref.statistic / (len(xs) * len(ys)) - 0.5)
    assert var > 0


@pytest.mark.parametrize("lam", [0.05, 0.3, 0.7, 0.99, 1.0, 1.3, 2.0, 3.5])
def test_kolmogorov_distribution(lam: float) -> None:
    assert kolmogorov_sf(lam) == pytest.approx(special.kolmogorov(lam), rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("z", [-3.0, -0.5, 0.0, 1.0, 1.6448536, 4.0, 8.0, 12.0])
def test_normal_tail_and_its_inverse(z: float) -> None:
    assert normal_sf(z) == pytest.approx(stats.norm.sf(z), rel=1e-12)
    for alpha in (0.2, 0.05, 0.00125, 1e-6):
        assert z_upper(alpha) == pytest.approx(stats.norm.isf(alpha), rel=1e-9)


@pytest.mark.parametrize("q", [0.5, 0.95, 0.99])
def test_log_quantile_estimate_and_its_variance(q: float) -> None:
    # The estimate is numpy's linear (type-7) quantile; the order-statistic variance agrees with the
    # asymptotic variance of a sample quantile, q(1 - q) / (n f(x_q)^2), on the log scale of a lognormal.
    sigma, n = 1.0, 4000
    rng = np.random.default_rng(11)
    variances = []
    for _ in range(40):
        data = sorted(np.exp(rng.normal(math.log(0.03), sigma, n)).tolist())
        est, var = log_quantile(data, q)
        assert est == pytest.approx(math.log(np.quantile(data, q, method="linear")), rel=1e-12)
        variances.append(var)
    z = stats.norm.ppf(q)
    asymptotic = q * (1 - q) / (n * (stats.norm.pdf(z) / sigma) ** 2)
    assert float(np.mean(variances)) == pytest.approx(asymptotic, rel=0.15)


# --- the anytime-valid mixtures against their definitions ----------------------------------------------


@pytest.mark.parametrize(("d", "v", "tau2"), [(0.02, 1e-4, 1e-3), (0.1, 0.004, 0.03), (0.3, 0.01, 0.5)])
def test_normal_mixture_is_the_integrated_likelihood_ratio(d: float, v: float, tau2: float) -> None:
    # Lambda = integral over theta ~ N(0, tau2) of N(d; theta, v) / N(d; 0, v).
    def integrand(theta: float) -> float:
        return float(
            stats.norm.pdf(theta, 0, math.sqrt(tau2)) * math.exp((2 * d * theta - theta**2) / (2 * v))
        )

    ratio, _ = integrate.quad(integrand, -20 * math.sqrt(tau2), 20 * math.sqrt(tau2), limit=400)
    assert always_valid_p(d, v, tau2) == pytest.approx(min(1.0, 1.0 / ratio), rel=1e-6)


@pytest.mark.parametrize(
    ("v", "alpha", "tau2"), [(1e-4, 0.05, 1e-3), (0.004, 0.00125, 0.03), (2.0, 0.01, 0.1)]
)
def test_the_radius_is_where_the_p_value_reaches_alpha(v: float, alpha: float, tau2: float) -> None:
    r = cs_radius(v, alpha, tau2)
    assert always_valid_p(r, v, tau2) == pytest.approx(alpha, rel=1e-9)
    assert always_valid_p(r * 1.01, v, tau2) < alpha < always_valid_p(r * 0.99, v, tau2)


@pytest.mark.parametrize(
    ("x", "n", "p0", "ratio"), [(3, 31, 0.0099, 2.0), (10, 48, 0.05, 2.0), (60, 150, 0.25, 1.5)]
)
def test_share_mixture_is_the_integrated_binomial_ratio(x: int, n: int, p0: float, ratio: float) -> None:
    b = 1.0 / min(ratio * p0, 0.5) - 1.0
    null = stats.binom.pmf(x, n, p0)
    ratio_mixed, _ = integrate.quad(
        lambda p: stats.beta.pdf(p, 1.0, b) * stats.binom.pmf(x, n, p) / null, 0, 1
    )
    assert share_p(x, n, p0, ratio) == pytest.approx(min(1.0, 1.0 / ratio_mixed), rel=1e-6)


def test_share_p_holds_at_every_event_under_the_null() -> None:
    # 2,000 sequences of 600 events, each the candidate's with its traffic share 5%: the share of
    # sequences whose p-value ever dips below alpha stays under alpha (a fixed-n test, looked at after
    # every event, would be far over it).
    rng = random.Random(5)
    alpha, ever = 0.05, 0
    for _ in range(2000):
        x = 0
        for n in range(1, 601):
            x += rng.random() < 0.05
            if x > 0.05 * n and share_p(x, n, 0.05) < alpha:
                ever += 1
                break
    assert ever / 2000 <= alpha
