"""Anytime-valid inference: confidence sequences that hold at every look, not at one fixed sample size.

Pure functions, no I/O. The canary re-judges its cumulative evidence every window; a fixed-n 95% bound
looked at thirty times is crossed by chance far more often than 5% of the time. A *confidence sequence*
holds uniformly: the chance that the true value ever leaves it, at any look, is at most alpha.

The one used here is the normal-mixture boundary (Robbins 1970; Howard, Ramdas, McAuliffe & Sekhon 2021,
eq. 14; the mixture SPRT of Johari, Pekelis & Walsh, "Always Valid Inference"): for an asymptotically
normal estimate with variance ``v`` (shrinking as evidence grows), the likelihood ratio mixed over a
N(0, ``tuning``) prior on the true difference is a nonnegative martingale under "no difference", so by
Ville's inequality it exceeds 1/alpha with probability at most alpha, ever. Inverting it gives

    radius(v) = sqrt( v (v + tuning) / tuning * (2 ln(1/alpha) + ln((v + tuning) / v)) )

around the estimate, two-sided; each one-sided end is used at the same alpha, so it is conservative.
``tuning`` (the mixture's variance, in the estimate's squared units) sets where the boundary is tightest:
near ``v`` ~ ``tuning`` / 15, about when the radius is as small as the effect it must resolve, so callers
tune it to that effect (a gate's margin). Any fixed positive value keeps the guarantee; only the power
moves. The price of validity at every look is modest at small alpha: at alpha = 0.0014 the radius is ~4.1
standard errors at its tightest, where a single look would use 3.0.

The plug-in variance makes the guarantee asymptotic (Waudby-Smith et al., "Time-uniform central limit
theory", 2021): it is accurate once each side has a few dozen observations, which the gates require.
"""

from __future__ import annotations

import math

__all__ = ["Estimate", "always_valid_p", "cs_lower", "cs_radius", "cs_upper", "share_p"]


def cs_radius(variance: float, alpha: float, tuning: float) -> float:
    """Half-width of the (1 - alpha) normal-mixture confidence sequence at an estimate of ``variance``.

    ``variance`` inf (no evidence) gives inf; 0 gives 0. ValueError unless 0 < alpha < 1, tuning > 0."""
    if not 0.0 < alpha < 1.0 or not tuning > 0.0:
        raise ValueError(f"need 0 < alpha < 1 and tuning > 0, got {alpha!r}, {tuning!r}")
    v = variance
    if v <= 0.0:
        return 0.0
    if math.isinf(v):
        return math.inf
    return math.sqrt(v * (v + tuning) / tuning * (2.0 * math.log(1.0 / alpha) + math.log1p(tuning / v)))


def cs_upper(estimate: float, variance: float, alpha: float, tuning: float) -> float:
    """The upper end: the true value is below it at every look, with probability >= 1 - alpha."""
    return estimate + cs_radius(variance, alpha, tuning)


def cs_lower(estimate: float, variance: float, alpha: float, tuning: float) -> float:
    """The lower end (see :func:`cs_upper`)."""
    return estimate - cs_radius(variance, alpha, tuning)


def always_valid_p(difference: float, variance: float, tuning: float) -> float:
    """The always-valid p-value of "the true value is not above ``difference``'s reference" at this look:
    1 / the mixture likelihood ratio, capped at 1; one-sided, so 1.0 when ``difference`` <= 0. It is below
    alpha exactly when the (1 - alpha) sequence's lower end is above the reference, and a p-value below
    alpha at *any* look happens with probability at most alpha."""
    if not tuning > 0.0:
        raise ValueError(f"tuning must be > 0, got {tuning!r}")
    if difference <= 0.0 or math.isnan(difference):
        return 1.0
    v = variance
    if math.isinf(v):
        return 1.0
    if v <= 0.0:
        return 0.0
    log_ratio = 0.5 * math.log(v / (v + tuning)) + tuning * difference * difference / (2.0 * v * (v + tuning))
    return 1.0 if log_ratio <= 0.0 else math.exp(-log_ratio)


class Estimate:
    """An asymptotically normal estimate with its variance and the mixture tuning of its sequence: the
    one shape every gate's quantity takes (a share, a difference of shares, a log-quantile, a log-ratio,
    a rank shift, a mean)."""

    __slots__ = ("tuning", "value", "variance")

    def __init__(self, value: float, variance: float, tuning: float) -> None:
        self.value = value
        self.variance = variance
        self.tuning = tuning

    def upper(self, alpha: float) -> float:
        return cs_upper(self.value, self.variance, alpha, self.tuning)

    def lower(self, alpha: float) -> float:
        return cs_lower(self.value, self.variance, alpha, self.tuning)

    def p_above(self, reference: float) -> float:
        """Always-valid p-value of "the true value is at most ``reference``"."""
        return always_valid_p(self.value - reference, self.variance, self.tuning)

    def p_below(self, reference: float) -> float:
        """Always-valid p-value of "the true value is at least ``reference``"."""
        return always_valid_p(reference - self.value, self.variance, self.tuning)


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def share_p(x: float, n: float, p0: float, ratio: float = 2.0) -> float:
    """Always-valid p-value of "each of ``n`` events is the first kind's with probability ``p0``" against
    "with more", after ``x`` of them were: exact, no normal approximation, valid at every event.

    The counting-process test (Lindon & Malek 2022; Netflix's sequential canary): when both versions' failures
    come from a common, time-varying intensity, each failure is the candidate's with probability equal to
    its share of the traffic, whatever the intensity does, so a burst that hits both moves nothing. The
    likelihood ratio of Binomial(n, p) to Binomial(n, p0), mixed over p ~ Beta(1, 1/(ratio p0) - 1) (mean
    ~``ratio`` x p0: a candidate failing about ``ratio`` times as often is where it has most power), is a
    nonnegative martingale under the null; by Ville's inequality it ever exceeds 1/alpha with probability
    at most alpha, whatever the prior. Counts may be fractional: effective counts, divided by a design
    effect when events come in clusters."""
    if not 0.0 < p0 < 1.0 or n <= 0 or x <= p0 * n:
        return 1.0
    a, b = 1.0, max(1.0 / min(ratio * p0, 0.5) - 1.0, 1.0)
    log_ratio = _log_beta(x + a, n - x + b) - _log_beta(a, b) - x * math.log(p0) - (n - x) * math.log1p(-p0)
    return 1.0 if log_ratio <= 0.0 else math.exp(-log_ratio)
