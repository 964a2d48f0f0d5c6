"""The overload rows' own numbers: what rollguard's `/metrics` says about the measured window.

wrk sees every answer, the fast 503s of a shedding listener included; the latency that matters under
overload is that of the requests the proxy let in. Those, and only those, reach the forwarder and its
`rollguard_request_duration_seconds` histogram (a 503 from the listener is answered below the app). So
the window is read twice, right before and right after wrk's measured run, and the difference of the
cumulative bucket counts is the window's histogram, read as PromQL's `histogram_quantile` reads it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

Samples = list[tuple[str, dict[str, str], float]]  # probes.rollguard_metrics: (name, labels, value)
Buckets = list[tuple[float, float]]  # cumulative (upper bound, count), +Inf last

DURATION = "rollguard_request_duration_seconds"
REJECTIONS = "rollguard_listener_rejections_total"
LOCAL = "rollguard_local_responses_total"
ANSWERED = "rollguard_requests_total"
ROLE = "baseline"  # every overload row sends all traffic to the baseline
QUANTILES = (0.5, 0.99)


def _locate(q: float, buckets: Buckets) -> tuple[Buckets, int, float] | None:
    """The monotonic buckets, the index of the one holding rank q x total, and the rank; None where
    PromQL's histogram_quantile gives NaN (no +Inf bucket, fewer than two buckets, no observations)."""
    if not 0 <= q <= 1:
        return None
    buckets = sorted(buckets)
    if len(buckets) < 2 or not math.isinf(buckets[-1][0]):
        return None
    # Counts are cumulative; a decrease (a reset between the scrapes) is flattened as PromQL does.
    fixed, top = [], 0.0
    for le, count in buckets:
        top = max(top, count)
        fixed.append((le, top))
    total = fixed[-1][1]
    if total <= 0:
        return None
    rank = q * total
    return fixed, next(i for i, (_, count) in enumerate(fixed) if count >= rank), rank


def histogram_quantile(q: float, buckets: Buckets) -> float | None:
    """PromQL's `histogram_quantile(q, ...)` over cumulative (upper bound, count) buckets, +Inf included:
    find the bucket holding rank q x total and interpolate linearly inside it (from 0 for the first
    bucket); a rank in the +Inf bucket answers the largest finite bound. None where PromQL gives NaN."""
    located = _locate(q, buckets)
    if located is None:
        return None
    fixed, index, rank = located
    if index == len(fixed) - 1:
        return fixed[-2][0]
    upper, count = fixed[index]
    if index == 0 and upper <= 0:
        return upper
    lower, below = (0.0, 0.0) if index == 0 else fixed[index - 1]
    if count == below:
        return lower
    return lower + (upper - lower) * (rank - below) / (count - below)


def quantile_bucket(q: float, buckets: Buckets) -> tuple[float, float] | None:
    """The edges of the bucket the q-quantile lies in: all a histogram knows of it (the interpolation
    assumes the observations spread evenly inside). The +Inf bucket's upper edge is inf."""
    located = _locate(q, buckets)
    if located is None:
        return None
    fixed, index, _ = located
    return (0.0 if index == 0 else fixed[index - 1][0], fixed[index][0])


def _totals(samples: Samples) -> dict[str, Any]:
    """The window's inputs from one scrape: the baseline histogram summed over route and version (by
    `le`), and the counters of what the listener and the proxy answered themselves."""
    buckets: dict[float, float] = {}
    out: dict[str, Any] = {
        "buckets": buckets,
        "count": 0.0,
        "sum_s": 0.0,
        "shed_503": 0.0,
        "rejections": {},
        "local": {},
        "answered": {},
    }
    for name, labels, value in samples:
        if name.startswith(DURATION) and labels.get("role") == ROLE:
            if name == f"{DURATION}_bucket":
                le = float(labels["le"])
                buckets[le] = buckets.get(le, 0.0) + value
            elif name == f"{DURATION}_count":
                out["count"] += value
            elif name == f"{DURATION}_sum":
                out["sum_s"] += value
        elif name == REJECTIONS:
            key = f"{labels.get('listener')} {labels.get('code')} {labels.get('reason')}"
            out["rejections"][key] = out["rejections"].get(key, 0.0) + value
            if labels.get("listener") == "data" and labels.get("code") == "503":
                out["shed_503"] += value
        elif name == LOCAL:
            key = str(labels.get("code"))
            out["local"][key] = out["local"].get(key, 0.0) + value
        elif name == ANSWERED:
            key = f"{labels.get('role')} {labels.get('code')}"
            out["answered"][key] = out["answered"].get(key, 0.0) + value
    return out


def _delta(after: dict[str, float], before: dict[str, float]) -> dict[str, int]:
    return {k: int(v - before.get(k, 0.0)) for k, v in after.items() if v - before.get(k, 0.0)}


def window(before: Samples, after: Samples, interval_s: float) -> dict[str, Any]:
    """What rollguard counted between the two scrapes: admitted (baseline-answered) requests, their p50
    and p99 from the bucket differences, their mean number in flight (sum of durations over the
    interval: Little's law), the listener's 503s (shed), and its other local answers."""
    a, b = _totals(after), _totals(before)
    buckets = [(le, n - b["buckets"].get(le, 0.0)) for le, n in sorted(a["buckets"].items())]
    count = a["count"] - b["count"]
    sum_s = a["sum_s"] - b["sum_s"]
    quantiles = {f"p{round(q * 100)}_ms": histogram_quantile(q, buckets) for q in QUANTILES}
    p99_bucket = quantile_bucket(0.99, buckets)
    return {
        "requests": int(count),
        **{k: None if v is None else round(v * 1000, 3) for k, v in quantiles.items()},
        "p99_bucket_ms": None if p99_bucket is None else [round(edge * 1000, 3) for edge in p99_bucket],
        "mean_ms": round(sum_s / count * 1000, 3) if count else None,
        "mean_in_flight": round(sum_s / interval_s, 1) if interval_s > 0 else None,
        "shed_503": int(a["shed_503"] - b["shed_503"]),
        "rejections": _delta(a["rejections"], b["rejections"]),
        "local_responses": _delta(a["local"], b["local"]),
        "answered": _delta(a["answered"], b["answered"]),
        "scrape_interval_s": round(interval_s, 3),
        "buckets_s": {("+Inf" if math.isinf(le) else f"{le:g}"): int(n) for le, n in buckets},
    }


class AdmittedWindow:
    """Scrapes `/metrics` right before (`before`) and right after (`after`) the measured window; `after`
    returns the row's `admitted` entry, or what went wrong reading it."""

    def __init__(self, scrape: Callable[[], Samples | str]) -> None:
        self._scrape = scrape
        self._before: Samples | str = "not scraped before the window"
        self._started = 0.0

    def before(self) -> None:
        self._before = self._scrape()
        self._started = time.monotonic()

    def after(self) -> dict[str, Any]:
        after = self._scrape()
        interval = time.monotonic() - self._started
        if isinstance(self._before, str) or isinstance(after, str):
            problem = self._before if isinstance(self._before, str) else after
            return {"admitted": {"error": str(problem)}}
        return {"admitted": window(self._before, after, interval)}


def ratio_bounds(row: list[float] | None, base: list[float] | None) -> list[float] | None:
    """The range a ratio of two quantiles can take given only the buckets they lie in."""
    if not row or not base or base[0] <= 0 or math.isinf(base[1]):
        return None
    high = row[1] / base[0]
    return [round(row[0] / base[1], 3), high if math.isinf(high) else round(high, 3)]


def ceil_pow2(n: int) -> int:
    """The smallest power of two >= n (50 -> 64)."""
    return 1 << max(n - 1, 0).bit_length()
