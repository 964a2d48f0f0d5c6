"""The statistics rollguard judges with: pure functions of counts and sorted samples, no I/O, no config.

One line each (p-values one-sided and exact or conservative unless stated):

- ``normal_sf``/``z_upper``: the standard normal's upper tail and its inverse;
- ``binom_sf``/``binom_cdf``: exact binomial tails, summed from the tail's end nearest the mode outwards;
- ``fisher_greater``: Fisher's exact test that the first share exceeds the second (hypergeometric tail);
- ``mann_whitney_greater``: Mann-Whitney U, normal approximation with tie and continuity corrections;
- ``log_quantile``: a sample quantile on the log scale with its variance from the order statistics
  around it (distribution-free, no density estimate); ``rank_shift``: Mann-Whitney's P(X > Y) - 1/2
  with its variance, the estimate a confidence sequence needs rather than a p-value;
- ``exceedance_greater``: Mood's two-sample quantile test, the shares above the pooled q-quantile compared
  by Fisher's exact test; where the U test sees shifts of the whole distribution, this one sees the tail;
- ``wilson_interval``: Wilson's score interval for one binomial share;
- ``newcombe_interval``: Newcombe's hybrid score interval for p1 - p2 (his method 10, from two Wilson
  intervals); ``newcombe_p`` inverts it into the p-value of "p1 - p2 lies beyond a margin";
- ``holm_adjust``: Holm-Bonferroni step-down adjusted p-values (Holm 1979);
- ``psi``: the population stability index of two score samples; ``ks_2samp``: two-sample
  Kolmogorov-Smirnov with the asymptotic p-value (``kolmogorov_sf``).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Sequence
from itertools import repeat
from statistics import NormalDist
from typing import Final, Literal

from proxy.stats.sketches import quantile_sorted

PSI_BINS: Final = 10
# An empty bin makes ln(q/p) infinite; as is usual for PSI, a share of 0 is replaced by this floor, which
# caps one empty bin's contribution at about 0.1 * ln(0.1 / 1e-4) ~= 0.7.
PSI_EPSILON: Final = 1e-4

_NORMAL: Final = NormalDist()


_TINY: Final = 1e-17  # a tail sum stops when the next term adds less than this share of it


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


def _rank_sum(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """U of ``x`` (midranks) and its tie-corrected variance under "same distribution"."""
    n1, n2 = len(x), len(y)
    n = n1 + n2
    pooled = sorted([*x, *y])
    # The midrank of v is (values below v) + (values up to and including v) + 1, halved. Ranks are whole
    # or half numbers and tie sizes whole, so both sums are exact in a double (far below 2**53), whatever
    # the order they are taken in.
    below = sum(map(bisect_left, repeat(pooled), x))
    rank_sum = (below + sum(map(bisect_right, repeat(pooled), x)) + n1) / 2.0
    ties = float(sum(t**3 - t for t in Counter(pooled).values() if t > 1))
    u = rank_sum - n1 * (n1 + 1) / 2.0
    return u, n1 * n2 / 12.0 * ((n + 1) - ties / (n * (n - 1)))


def mann_whitney_greater(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Mann-Whitney U test that ``x`` tends to be larger than ``y``: (U of x, one-sided p-value).

    Normal approximation with midranks, the tie-corrected variance and a continuity correction; good for
    the tens to thousands of values it sees here. ``U / (len(x) * len(y))`` estimates P(X > Y) + P(X = Y)/2.
    Empty input, or all values tied, gives p = 1.
    """
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        return 0.0, 1.0
    u, var = _rank_sum(x, y)
    if var <= 0.0:
        return u, 1.0
    z = (u - n1 * n2 / 2.0 - 0.5) / math.sqrt(var)
    return u, normal_sf(z)


def mann_whitney_z(x: Sequence[float], y: Sequence[float]) -> float:
    """The same statistic as a signed z (positive: ``x`` tends larger), continuity-corrected toward 0 as
    R's ``wilcox.test`` does, for two-sided use; 0.0 when a side is empty or all values are tied."""
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        return 0.0
    u, var = _rank_sum(x, y)
    if var <= 0.0:
        return 0.0
    d = u - n1 * n2 / 2.0
    return (d - math.copysign(0.5, d) if d else 0.0) / math.sqrt(var)


_LOG_FLOOR: Final = 1e-6  # seconds; a latency of 0 (a clock tick) has no logarithm


def log_quantile(data: list[float], q: float) -> tuple[float, float]:
    """(ln of the ``q``-quantile of ascending ``data``, the variance of that estimate).

    The variance comes from the order statistics one binomial standard deviation of rank either side of
    the quantile, sqrt(n q (1 - q)) ranks: the log-values there lie about one standard error of the
    estimate apart each way (the interval behind the distribution-free quantile confidence bound), so no
    density has to be guessed. Ranks clamp to the sample, which widens rather than narrows it. Fewer than
    two values: (nan, inf)."""
    n = len(data)
    if n < 2:
        return math.nan, math.inf
    k = q * (n - 1)
    h = math.sqrt(n * q * (1.0 - q))
    lo, hi = max(0, math.floor(k - h)), min(n - 1, math.ceil(k + h))
    est = math.log(max(quantile_sorted(data, q), _LOG_FLOOR))
    spread = math.log(max(data[hi], _LOG_FLOOR)) - math.log(max(data[lo], _LOG_FLOOR))
    sd = spread * h / max(hi - lo, 1)
    return est, max(sd * sd, 1e-12)


def rank_shift(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """(P(X > Y) + P(X = Y)/2 - 1/2 estimated by U / (n1 n2) - 1/2, its variance under "same distribution",
    tie-corrected). Positive: ``x`` tends to be larger. Empty input: (0.0, inf)."""
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        return 0.0, math.inf
    u, var = _rank_sum(x, y)
    scale = float(n1 * n2)
    return u / scale - 0.5, var / (scale * scale)


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
    return difference_interval(k1 / n1, wilson_interval(k1, n1, z), k2 / n2, wilson_interval(k2, n2, z))


def difference_interval(
    first: float, first_interval: tuple[float, float], second: float, second_interval: tuple[float, float]
) -> tuple[float, float]:
    """An interval for ``first - second`` from each estimate's own interval, for independent estimates
    (Zou and Donner's MOVER, of which Newcombe's method 10 is the case of two Wilson intervals): each end
    adds in quadrature the two distances that move the difference that way."""
    (l1, u1), (l2, u2) = first_interval, second_interval
    d = first - second
    return d - math.hypot(first - l1, u2 - second), d + math.hypot(u1 - first, second - l2)


def paired_shift_interval(
    both: int, first_only: int, second_only: int, neither: int, z: float = 1.96
) -> tuple[float, float]:
    """Newcombe's interval (1998, method 10) for p2 - p1 on paired yes/no outcomes: p1 is the first's
    share of yes, ``(both + first_only) / n``; p2 the second's, ``(both + second_only) / n``.

    The two Wilson intervals are combined with the pairs' correlation phi (its numerator moved n/2 towards
    0 when positive, as Newcombe corrects it), so agreeing pairs narrow the interval: two versions that
    decide alike on nearly every request differ by little even where their rates are uncertain. With no
    pairs the interval is (-1, 1)."""
    n = both + first_only + second_only + neither
    if n <= 0:
        return -1.0, 1.0
    p1, p2 = (both + first_only) / n, (both + second_only) / n
    l1, u1 = wilson_interval(both + first_only, n, z)
    l2, u2 = wilson_interval(both + second_only, n, z)
    margins = (both + first_only) * (second_only + neither) * (both + second_only) * (first_only + neither)
    raw = both * neither - first_only * second_only
    cross = max(0.0, raw - n / 2) if raw > 0 else float(raw)
    phi = cross / math.sqrt(margins) if margins > 0 else 0.0
    d = p2 - p1
    below = math.sqrt(max(0.0, (p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2))
    above = math.sqrt(max(0.0, (u2 - p2) ** 2 - 2 * phi * (u2 - p2) * (p1 - l1) + (p1 - l1) ** 2))
    return max(-1.0, d - below), min(1.0, d + above)


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


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial share k/n; (0, 1) when n == 0.

    ``z`` = 1.96 gives a two-sided 95% interval, so each end alone is a one-sided 97.5% bound.
    """
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def psi(base_sorted: list[float], cand_sorted: list[float], bins: int = PSI_BINS) -> tuple[float, int]:
    """Population stability index of ``cand`` against ``base`` (both ascending, non-empty), and the number
    of bins used: cut points are the base's 1/bins .. (bins-1)/bins quantiles, duplicates merged (ties)."""
    edges = sorted({quantile_sorted(base_sorted, i / bins) for i in range(1, bins)})

    def shares(data: list[float]) -> list[float]:
        # bin j holds edges[j-1] <= x < edges[j]; cuts[j] counts the values below edges[j]
        cuts = [0, *(bisect_left(data, e) for e in edges), len(data)]
        return [(cuts[j + 1] - cuts[j]) / len(data) for j in range(len(edges) + 1)]

    total = 0.0
    for p, q in zip(shares(base_sorted), shares(cand_sorted), strict=True):
        p, q = max(p, PSI_EPSILON), max(q, PSI_EPSILON)
        total += (q - p) * math.log(q / p)
    return total, len(edges) + 1


def kolmogorov_sf(lam: float) -> float:
    """P(K > lam) for the Kolmogorov distribution, by whichever of its two series converges fast."""
    if lam <= 0:
        return 1.0
    if lam < 1.0:
        # K(lam) = sqrt(2 pi)/lam * sum_j exp(-(2j-1)^2 pi^2 / (8 lam^2))
        s = sum(math.exp(-((2 * j - 1) ** 2) * math.pi**2 / (8 * lam * lam)) for j in range(1, 8))
        return min(1.0, max(0.0, 1.0 - math.sqrt(2 * math.pi) / lam * s))
    # 1 - K(lam) = 2 sum_j (-1)^(j-1) exp(-2 j^2 lam^2)
    s = sum((1.0 if j % 2 else -1.0) * math.exp(-2 * j * j * lam * lam) for j in range(1, 101))
    return min(1.0, max(0.0, 2 * s))


def ks_2samp(a: list[float], b: list[float]) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov (both ascending, non-empty): statistic D and asymptotic p-value."""
    n, m = len(a), len(b)
    i = j = 0
    d = 0.0
    while i < n and j < m:
        x = min(a[i], b[j])
        while i < n and a[i] == x:  # ties move both empirical CDFs together
            i += 1
        while j < m and b[j] == x:
            j += 1
        d = max(d, abs(i / n - j / m))
    en = math.sqrt(n * m / (n + m))
    return d, kolmogorov_sf((en + 0.12 + 0.11 / en) * d)
