"""Evidence for the canary controller, and the small exact statistics its gates use (PRODUCT §5).

Pure: no I/O, no clock, no framework. :class:`VersionWindow` holds everything one version did since the
current step began, in memory fixed at construction; :class:`Evidence` pairs the baseline's window with the
candidate's. The gates in :mod:`proxy.gates` judge an :class:`Evidence`.

Statistics, one line each (all p-values are one-sided and exact or conservative unless stated):

- ``binom_sf``/``binom_cdf``: exact binomial tails, summed from the tail's end nearest the mode outwards;
- ``fisher_greater``: Fisher's exact test that the first share exceeds the second (hypergeometric tail);
- ``mann_whitney_greater``: Mann-Whitney U, normal approximation with tie and continuity corrections;
- ``exceedance_greater``: Mood's two-sample quantile test, the shares above the pooled q-quantile compared
  by Fisher's exact test; where the U test sees shifts of the whole distribution, this one sees the tail;
- ``newcombe_interval``: Newcombe's hybrid score interval for p1 - p2 (his method 10, from two Wilson
  intervals); ``newcombe_p`` inverts it into the p-value of "p1 - p2 lies beyond a margin";
- ``holm_adjust``: Holm-Bonferroni step-down adjusted p-values (Holm 1979).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Final, Literal

from .compare import wilson_interval
from .sketches import LogHistogram, Moments, Reservoir

__all__ = [
    "Evidence",
    "VersionWindow",
    "binom_cdf",
    "binom_sf",
    "exceedance_greater",
    "fisher_greater",
    "holm_adjust",
    "mann_whitney_greater",
    "newcombe_interval",
    "newcombe_p",
    "normal_sf",
    "z_upper",
]

SAMPLE_SIZE: Final = 4096  # latency and score samples per version: ranks and quantile bounds use these
_NORMAL: Final = NormalDist()
_TINY: Final = 1e-17  # a tail sum stops when the next term adds less than this share of it


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


class VersionWindow:
    """Streaming statistics of one version's requests since the current step began.

    Contract: memory is fixed whatever the traffic (a log histogram and two reservoirs of ``sample_size``).
    ``failures`` counts what the caller counts as the version's own failures (PRODUCT §5: upstream-origin
    only). ``latency`` is in seconds and takes every request the caller counts, failed or not. A request
    with ``decision`` not None is *decided*; ``positives`` counts decisions that are True. ``scores`` and
    ``latency_sample`` are uniform samples of all values added, so rank and quantile tests on them are
    valid whatever the count. Rates are None until a request (or decision) arrives.
    """

    __slots__ = (
        "cost",
        "cost_moments",
        "decided",
        "failures",
        "latency",
        "latency_sample",
        "policy_violations",
        "positives",
        "requests",
        "scores",
    )

    def __init__(self, *, sample_size: int = SAMPLE_SIZE, seed: int = 0) -> None:
        self.requests = 0
        self.failures = 0
        self.latency = LogHistogram()
        self.latency_sample = Reservoir(sample_size, seed=seed)
        self.decided = 0
        self.positives = 0
        self.scores = Reservoir(sample_size, seed=seed + 1)
        self.policy_violations = 0
        self.cost = 0.0
        self.cost_moments = Moments()  # per-request cost, for a confidence bound on the mean

    def add(
        self,
        *,
        latency_s: float,
        failed: bool,
        score: float | None,
        decision: bool | None,
        cost: float = 0.0,
        policy_violations: int = 0,
    ) -> None:
        """Count one request. ``latency_s``, ``score`` and ``cost`` must be finite (ValueError)."""
        if not math.isfinite(latency_s) or not math.isfinite(cost):
            raise ValueError(f"latency_s and cost must be finite, got {latency_s!r}, {cost!r}")
        if score is not None and not math.isfinite(score):
            raise ValueError(f"score must be finite, got {score!r}")
        self.requests += 1
        self.failures += bool(failed)
        self.latency.add(latency_s)
        self.latency_sample.add(latency_s)
        if decision is not None:
            self.decided += 1
            self.positives += bool(decision)
        if score is not None:
            self.scores.add(score)
        self.policy_violations += policy_violations
        self.cost += cost
        self.cost_moments.add(cost)

    def merge(self, other: VersionWindow) -> None:
        """Add ``other``'s requests (same ``sample_size`` required), e.g. to fold windows into a step."""
        self.requests += other.requests
        self.failures += other.failures
        self.latency.merge(other.latency)
        self.latency_sample.merge(other.latency_sample)
        self.decided += other.decided
        self.positives += other.positives
        self.scores.merge(other.scores)
        self.policy_violations += other.policy_violations
        self.cost += other.cost
        self.cost_moments.merge(other.cost_moments)

    @property
    def error_rate(self) -> float | None:
        return self.failures / self.requests if self.requests else None

    @property
    def decision_rate(self) -> float | None:
        """Share of decided requests whose decision was positive."""
        return self.positives / self.decided if self.decided else None

    @property
    def p95_ms(self) -> float | None:
        return _ms(self.latency.quantile(0.95))

    @property
    def cost_per_1k(self) -> float | None:
        return 1000.0 * self.cost / self.requests if self.requests else None

    def to_json(self) -> dict[str, Any]:
        """A summary for status pages and decision logs (not a snapshot to restore from)."""

        def q(x: float) -> float | None:
            v = _ms(self.latency.quantile(x))
            return None if v is None else round(v, 3)

        return {
            "requests": self.requests,
            "failures": self.failures,
            "error_rate": self.error_rate,
            "decided": self.decided,
            "positives": self.positives,
            "decision_rate": self.decision_rate,
            "scores": self.scores.count,
            "latency_ms": {"p50": q(0.50), "p95": q(0.95), "p99": q(0.99)},
            "policy_violations": self.policy_violations,
            "cost": self.cost,
            "cost_per_1k": self.cost_per_1k,
        }


@dataclass(frozen=True, slots=True)
class Evidence:
    """Both versions' windows over the same span: every sample since the current step began."""

    baseline: VersionWindow
    candidate: VersionWindow


# ---------------------------------------------------------------------------------------------------------
# Exact and approximate tests. Each returns a one-sided p-value in [0, 1].


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z, accurate far into the tail (erfc, not 1 - cdf)."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def z_upper(alpha: float) -> float:
    """The z with P(Z > z) = alpha: the multiplier of a one-sided (1 - alpha) bound."""
    return _NORMAL.inv_cdf(1.0 - alpha)


def _log_binom_pmf(k: int, n: int, p: float) -> float:
    return (
        math.lgamma(n + 1)
        - math.lgamma(k + 1)
        - math.lgamma(n - k + 1)
        + k * math.log(p)
        + (n - k) * math.log1p(-p)
    )


def binom_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), exact."""
    if k <= 0 or p >= 1.0:
        return 1.0
    if k > n or p <= 0.0:
        return 0.0
    if k <= n * p:
        return max(0.0, 1.0 - binom_cdf(k - 1, n, p))
    # Above the mode terms only shrink, so the sum can stop once they no longer matter.
    term = math.exp(_log_binom_pmf(k, n, p))
    total, ratio = term, p / (1.0 - p)
    j = k
    while j < n and term > total * _TINY:
        term *= (n - j) / (j + 1) * ratio
        total += term
        j += 1
    return min(1.0, total)


def binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), exact."""
    if k < 0 or p >= 1.0 and k < n:
        return 0.0
    if k >= n or p <= 0.0:
        return 1.0
    if k >= n * p:
        return max(0.0, 1.0 - binom_sf(k + 1, n, p))
    term = math.exp(_log_binom_pmf(k, n, p))
    total, ratio = term, (1.0 - p) / p
    j = k
    while j > 0 and term > total * _TINY:
        term *= j / (n - j + 1) * ratio
        total += term
        j -= 1
    return min(1.0, total)


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def fisher_greater(x1: int, n1: int, x2: int, n2: int) -> float:
    """One-sided Fisher exact p-value for "share 1 (x1 of n1) exceeds share 2 (x2 of n2)".

    Conditional on the total number of events, the first sample's count is hypergeometric under equal
    shares; the p-value is its upper tail at ``x1``. Exact for any counts, which matters here: failures
    are rare, and a z-test on two failures in 200 calls a healthy candidate significantly worse.
    """
    if not (0 <= x1 <= n1 and 0 <= x2 <= n2) or n1 == 0 or n2 == 0:
        raise ValueError("need 0 <= x <= n and n > 0 on both sides")
    total, events = n1 + n2, x1 + x2
    lo, hi = max(0, n1 - (total - events)), min(n1, events)
    if x1 <= lo:
        return 1.0

    def log_pmf(j: int) -> float:
        return _log_comb(events, j) + _log_comb(total - events, n1 - j) - _log_comb(total, n1)

    def up(j: int) -> float:  # pmf(j + 1) / pmf(j)
        return (events - j) * (n1 - j) / ((j + 1) * (total - events - n1 + j + 1))

    mean = n1 * events / total
    if x1 > mean:
        term = math.exp(log_pmf(x1))
        acc, j = term, x1
        while j < hi and term > acc * _TINY:
            term *= up(j)
            acc += term
            j += 1
        return min(1.0, acc)
    # Below the mean: 1 - P(X <= x1 - 1), summed downwards where terms shrink.
    term = math.exp(log_pmf(x1 - 1))
    acc, j = term, x1 - 1
    while j > lo and term > acc * _TINY:
        term /= up(j - 1)
        acc += term
        j -= 1
    return min(1.0, max(0.0, 1.0 - acc))


def mann_whitney_greater(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Mann-Whitney U test that ``x`` tends to be larger than ``y``: (U of x, one-sided p-value).

    Normal approximation with midranks, the tie-corrected variance and a continuity correction; good for
    the tens to thousands of values it sees here. ``U / (len(x) * len(y))`` estimates P(X > Y) + P(X = Y)/2.
    Empty input, or all values tied, gives p = 1.
    """
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        return 0.0, 1.0
    pooled = sorted([(v, 0) for v in x] + [(v, 1) for v in y])
    n = n1 + n2
    rank_sum = 0.0
    ties = 0.0
    i = 0
    while i < n:
        j = i
        while j + 1 < n and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        mid = (i + j) / 2.0 + 1.0  # ranks are 1-based
        t = j - i + 1
        if t > 1:
            ties += t**3 - t
        rank_sum += mid * sum(1 for k in range(i, j + 1) if pooled[k][1] == 0)
        i = j + 1
    u = rank_sum - n1 * (n1 + 1) / 2.0
    var = n1 * n2 / 12.0 * ((n + 1) - ties / (n * (n - 1)))
    if var <= 0.0:
        return u, 1.0
    z = (u - n1 * n2 / 2.0 - 0.5) / math.sqrt(var)
    return u, normal_sf(z)


def exceedance_greater(x: Sequence[float], y: Sequence[float], q: float) -> tuple[float, float]:
    """Mood's quantile test that ``x`` has more of its mass above the pooled ``q``-quantile than ``y``:
    (the cut, one-sided p-value). The cut is the pooled sample's order statistic at rank ceil(q * n); the
    values above it (strictly, or at and above it when ties at the cut make that nearer to a 1 - q tail)
    are compared with :func:`fisher_greater`. Exact under "same distribution": the split depends only on
    the pooled values, so which sample each value above it came from is hypergeometric. Empty input gives
    p = 1."""
    if not x or not y:
        return math.nan, 1.0
    pooled = sorted([*x, *y])
    n = len(pooled)
    cut = pooled[min(n - 1, max(0, math.ceil(q * n) - 1))]
    strict = n - bisect_right(pooled, cut)
    loose = n - bisect_left(pooled, cut)
    want = (1.0 - q) * n
    if abs(loose - want) < abs(strict - want):
        above_x, above_y = sum(1 for v in x if v >= cut), sum(1 for v in y if v >= cut)
    else:
        above_x, above_y = sum(1 for v in x if v > cut), sum(1 for v in y if v > cut)
    return cut, fisher_greater(above_x, len(x), above_y, len(y))


def newcombe_interval(k1: int, n1: int, k2: int, n2: int, z: float) -> tuple[float, float]:
    """Newcombe's hybrid score interval for p1 - p2 (method 10); each end is a one-sided bound at z.

    Built from the Wilson intervals of each share, so it behaves near 0 and 1 where Wald's does not.
    """
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson_interval(k1, n1, z)
    l2, u2 = wilson_interval(k2, n2, z)
    d = p1 - p2
    return d - math.hypot(p1 - l1, u2 - p2), d + math.hypot(u1 - p1, p2 - l2)


def newcombe_p(k1: int, n1: int, k2: int, n2: int, margin: float, side: Literal["above", "below"]) -> float:
    """p-value of "p1 - p2 > margin" (``above``) or "p1 - p2 < -margin" (``below``), from the Newcombe
    interval: the alpha at which that one-sided bound just reaches the margin. 1.0 when the estimate does
    not even lie beyond the margin. ``newcombe_p(...) < alpha`` exactly when the bound at ``z_upper(alpha)``
    lies beyond the margin."""
    d = k1 / n1 - k2 / n2
    if (d <= margin) if side == "above" else (d >= -margin):
        return 1.0

    def beyond(z: float) -> bool:
        lo, hi = newcombe_interval(k1, n1, k2, n2, z)
        return lo > margin if side == "above" else hi < -margin

    lo_z, hi_z = 0.0, 1.0
    while beyond(hi_z):
        hi_z *= 2.0
        if hi_z > 64.0:  # the bound is beyond the margin at any confidence we can express
            return 0.0
    for _ in range(60):
        mid = (lo_z + hi_z) / 2.0
        if beyond(mid):
            lo_z = mid
        else:
            hi_z = mid
    return normal_sf(lo_z)


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in input order: reject hypothesis i at family level alpha when
    ``adjusted[i] < alpha``; the chance of rejecting any true hypothesis is then at most alpha, whatever
    the dependence between the tests. Adjusted values keep the order of the raw ones and are >= them."""
    k = len(p_values)
    order = sorted(range(k), key=lambda i: p_values[i])
    adjusted = [1.0] * k
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (k - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
