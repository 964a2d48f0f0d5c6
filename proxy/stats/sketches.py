"""Streaming summaries with memory fixed at construction, whatever the number of values added.

Pure: no I/O, no clock, no framework. Used by shadow evaluation and the canary controller:

- :class:`LogHistogram`: DDSketch-style quantiles with a relative-accuracy guarantee; mergeable.
- :class:`Reservoir`: a uniform random sample (Algorithm R) with exact quantiles on the sample; mergeable.
- :class:`Moments`: count, mean and variance (Welford; Chan et al. for merges).
- :class:`TopK`: heavy hitters by the space-saving algorithm (Metwally et al. 2005).

Randomness comes only from a seeded ``random.Random`` owned by the structure, so runs repeat exactly.
"""

from __future__ import annotations

import heapq
import math
import operator
import random
from collections.abc import Sequence
from functools import reduce
from typing import Any


class LogHistogram:
    """Quantile sketch for latencies and other non-negative values (DDSketch, Masson et al. 2019).

    Contract: ``quantile(q)`` estimates the value of rank ``floor(q * (count - 1))`` (0-based, ascending)
    within ``relative_accuracy`` of it, for any q whose value is positive and lies above the collapsed range.
    Values <= 0 land in a zero bucket and count as 0 in quantiles (at face value in ``sum``/``mean``).
    Non-finite values are refused with ValueError. At most ``max_buckets`` buckets exist: when the span of
    bucket keys would exceed it, the lowest buckets are folded into the lowest kept one, so low quantiles
    lose accuracy first (``collapsed`` says whether that has happened); for latencies the high ones matter.
    With the defaults the span covers values across a ratio of about 6e17 before anything folds.
    """

    def __init__(self, relative_accuracy: float = 0.01, *, max_buckets: int = 2048) -> None:
        if not 0.0 < relative_accuracy < 1.0:
            raise ValueError(f"relative_accuracy must be in (0, 1), got {relative_accuracy}")
        if max_buckets < 1:
            raise ValueError(f"max_buckets must be >= 1, got {max_buckets}")
        self.relative_accuracy = relative_accuracy
        self.max_buckets = max_buckets
        self._gamma = (1.0 + relative_accuracy) / (1.0 - relative_accuracy)
        self._log_gamma = math.log(self._gamma)
        # Dense store: _counts[i] counts values with key _offset + i, where value x has key
        # ceil(log_gamma(x)), i.e. x in (gamma^(key-1), gamma^key].
        self._counts: list[int] = []
        self._offset = 0
        self._zero = 0
        self._count = 0
        self._sum = 0.0
        self._min = math.inf
        self._max = -math.inf
        self._collapsed = False

    def add(self, x: float) -> None:
        if not math.isfinite(x):
            raise ValueError(f"LogHistogram takes finite values, got {x!r}")
        self._count += 1
        self._sum += x
        if x < self._min:
            self._min = x
        if x > self._max:
            self._max = x
        if x <= 0.0:
            self._zero += 1
            return
        key = math.ceil(math.log(x) / self._log_gamma)
        i = key - self._offset
        if 0 <= i < len(self._counts):
            self._counts[i] += 1
        else:
            self._add_key(key, 1)

    def add_many(self, xs: Sequence[float]) -> None:
        """``add`` each of ``xs`` in order, with the same result to the last bit (the sum is taken in
        the same order, buckets outside the current span are added one by one); nothing is added when
        one of them is not finite (ValueError)."""
        if not xs:
            return
        if not all(map(math.isfinite, xs)):
            raise ValueError(
                f"LogHistogram takes finite values, got {[x for x in xs if not math.isfinite(x)][0]!r}"
            )
        self._count += len(xs)
        self._sum = reduce(operator.add, xs, self._sum)
        lo, hi = min(xs), max(xs)
        if lo < self._min:
            self._min = lo
        if hi > self._max:
            self._max = hi
        log, ceil, log_gamma = math.log, math.ceil, self._log_gamma
        keys = [ceil(log(x) / log_gamma) for x in xs if x > 0.0]
        self._zero += len(xs) - len(keys)
        if not keys:
            return
        counts, offset = self._counts, self._offset
        if counts and offset <= min(keys) and max(keys) < offset + len(counts):
            for key in keys:  # all inside the span: the order cannot matter
                counts[key - offset] += 1
            return
        for key in keys:  # the span grows (or folds) as it would one add at a time
            i = key - self._offset
            if 0 <= i < len(self._counts):
                self._counts[i] += 1
            else:
                self._add_key(key, 1)

    def _add_key(self, key: int, n: int) -> None:
        counts = self._counts
        if not counts:
            self._counts = [n]
            self._offset = key
            return
        hi = self._offset + len(counts) - 1
        if key < self._offset:
            lowest_allowed = hi - self.max_buckets + 1
            if key < lowest_allowed:
                key = lowest_allowed
                self._collapsed = True
            pad = self._offset - key
            if pad > 0:
                counts[:0] = [0] * pad
                self._offset = key
        elif key > hi:
            counts.extend([0] * (key - hi))
            drop = len(counts) - self.max_buckets
            if drop > 0:
                folded = sum(counts[:drop])
                del counts[:drop]
                counts[0] += folded
                self._offset += drop
                if folded:
                    self._collapsed = True
        counts[key - self._offset] += n

    def merge(self, other: LogHistogram) -> None:
        """Add ``other``'s values; both must have the same ``relative_accuracy``."""
        if other.relative_accuracy != self.relative_accuracy:
            raise ValueError("cannot merge LogHistograms of different relative accuracy")
        self._count += other._count
        self._sum += other._sum
        self._zero += other._zero
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)
        self._collapsed = self._collapsed or other._collapsed
        # Highest first, so the final span is anchored at the top and only the lowest keys fold.
        for i in range(len(other._counts) - 1, -1, -1):
            if other._counts[i]:
                self._add_key(other._offset + i, other._counts[i])

    def quantile(self, q: float) -> float | None:
        """The estimated q-quantile (see the class contract); None when empty."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"q must be in [0, 1], got {q}")
        if self._count == 0:
            return None
        rank = math.floor(q * (self._count - 1))
        if rank < self._zero:
            return 0.0
        cumulative = self._zero
        for i, c in enumerate(self._counts):
            cumulative += c
            if cumulative > rank:
                try:
                    # The midpoint of (gamma^(k-1), gamma^k] in the relative sense: error <= alpha either way.
                    estimate = 2.0 * math.exp((self._offset + i) * self._log_gamma) / (self._gamma + 1.0)
                except OverflowError:
                    return self._max
                return min(max(estimate, self._min), self._max)
        return self._max  # unreachable while counts add up; kept for safety

    @property
    def count(self) -> int:
        return self._count

    @property
    def sum(self) -> float:
        return self._sum

    @property
    def mean(self) -> float | None:
        return self._sum / self._count if self._count else None

    @property
    def min(self) -> float | None:
        return self._min if self._count else None

    @property
    def max(self) -> float | None:
        return self._max if self._count else None

    @property
    def num_buckets(self) -> int:
        """Buckets held (excluding the zero bucket); never more than ``max_buckets``."""
        return len(self._counts)

    @property
    def collapsed(self) -> bool:
        """True once low buckets were folded: quantiles in the folded range are overestimates."""
        return self._collapsed

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot; :meth:`from_json` restores it exactly (for replicas and reports)."""
        return {
            "relative_accuracy": self.relative_accuracy,
            "max_buckets": self.max_buckets,
            "count": self._count,
            "sum": self._sum,
            "min": self.min,
            "max": self.max,
            "zero_count": self._zero,
            "offset": self._offset,
            "counts": list(self._counts),
            "collapsed": self._collapsed,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LogHistogram:
        h = cls(float(data["relative_accuracy"]), max_buckets=int(data["max_buckets"]))
        counts = [int(c) for c in data["counts"]]
        if len(counts) > h.max_buckets:
            raise ValueError("more buckets than max_buckets")
        h._counts = counts
        h._offset = int(data["offset"])
        h._zero = int(data["zero_count"])
        h._count = int(data["count"])
        h._sum = float(data["sum"])
        if h._count:
            h._min = float(data["min"])
            h._max = float(data["max"])
        h._collapsed = bool(data["collapsed"])
        if h._zero + sum(counts) != h._count:
            raise ValueError("bucket counts do not add up to count")
        return h


class Reservoir:
    """A uniform random sample of at most ``size`` of the values added (Algorithm L, Li 1994).

    Contract: after n adds, the sample is a uniformly random ``min(size, n)``-subset of the values, so
    each value is in it with probability ``min(1, size / n)`` whatever its position in the stream.
    ``count`` is every value seen; ``quantile`` is exact on the sample (linear interpolation between order
    statistics, numpy's and R's default "type 7"). The samples are a function of ``seed`` and the input.

    Algorithm L draws, once the sample is full, how many values to skip before the next one that enters
    it (geometric, with a shrinking acceptance weight), so an add that is skipped costs a comparison, not
    a random draw: the recorder adds every request's latency and score, live and in a backtest.
    """

    __slots__ = ("_count", "_next", "_rng", "_sample", "_sorted", "_w", "size")

    def __init__(self, size: int = 4096, *, seed: int = 0) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.size = size
        self._rng = random.Random(seed)
        self._sample: list[float] = []
        self._count = 0
        self._sorted: list[float] | None = None
        self._w = 1.0
        self._next = size  # 1-based count of the next value to enter once the sample is full

    def _skip(self) -> None:
        """A value entered the full sample: shrink the acceptance weight, draw the next entrant."""
        self._w *= math.exp(math.log(1.0 - self._rng.random()) / self.size)
        self._draw_gap()

    def _draw_gap(self) -> None:
        # Values skipped before the next entrant: geometric with success probability w.
        w = self._w
        gap = math.log(1.0 - self._rng.random()) / math.log1p(-w) if 0.0 < w < 1.0 else 0.0
        self._next = self._count + int(gap) + 1

    def add(self, x: float) -> None:
        self._count += 1
        if self._count <= self.size:
            self._sample.append(x)
            self._sorted = None
            if self._count == self.size:
                self._skip()
        elif self._count == self._next:
            self._sample[int(self._rng.random() * self.size)] = x
            self._sorted = None
            self._skip()

    def add_many(self, xs: Sequence[float]) -> None:
        """``add`` each of ``xs`` in order, with the same sample and the same random draws; only the
        values that enter the sample cost more than a comparison."""
        size, n = self.size, len(xs)
        take = min(size - self._count, n) if self._count < size else 0
        if take:
            self._sample.extend(xs[:take])
            self._count += take
            self._sorted = None
            if self._count == size:
                self._skip()
        base = self._count - take  # xs[i] is the value with 1-based count base + i + 1
        end = base + n
        while self._next <= end:
            self._count = self._next  # _skip draws the next gap from the entrant's count
            self._sample[int(self._rng.random() * size)] = xs[self._next - base - 1]
            self._sorted = None
            self._skip()
        self._count = end

    def merge(self, other: Reservoir) -> None:
        """Become a uniform sample of both streams (same ``size`` required).

        Draws ``size`` items without replacement from the union of the two populations: each draw takes
        from a side with probability proportional to the values of that side not yet drawn, and a uniform
        item of that side's sample, which is uniform over that side.
        """
        if other.size != self.size:
            raise ValueError("cannot merge Reservoirs of different size")
        if other._count == 0:
            return
        a, b = list(self._sample), list(other._sample)
        self._rng.shuffle(a)
        self._rng.shuffle(b)
        left_a, left_b = self._count, other._count
        merged: list[float] = []
        for _ in range(min(self.size, len(a) + len(b))):
            if self._rng.random() * (left_a + left_b) < left_a:
                merged.append(a.pop())
                left_a -= 1
            else:
                merged.append(b.pop())
                left_b -= 1
        self._sample = merged
        self._count += other._count
        self._sorted = None
        if self._count >= self.size:
            # A full sample of ``count`` values keeps the ``size`` smallest of ``count`` uniform keys; the
            # largest of those, the acceptance weight, is then Beta(size, count - size + 1).
            self._w = self._rng.betavariate(self.size, self._count - self.size + 1)
            self._draw_gap()

    def values(self) -> list[float]:
        """A copy of the current sample (in no meaningful order)."""
        return list(self._sample)

    def sorted_values(self) -> list[float]:
        """The sample in ascending order (a copy)."""
        return list(self._sorted_sample())

    def _sorted_sample(self) -> list[float]:
        if self._sorted is None:
            self._sorted = sorted(self._sample)
        return self._sorted

    @property
    def count(self) -> int:
        return self._count

    def quantile(self, q: float) -> float | None:
        """The q-quantile of the sample; None when empty."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"q must be in [0, 1], got {q}")
        data = self._sorted_sample()
        if not data:
            return None
        return quantile_sorted(data, q)


def quantile_sorted(data: list[float], q: float) -> float:
    """Type-7 quantile of a non-empty ascending list: interpolate at position q * (n - 1)."""
    pos = q * (len(data) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


class Moments:
    """Streaming count, mean and variance (Welford 1962); ``merge`` is exact (Chan et al. 1979)."""

    __slots__ = ("_m2", "count", "mean")

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self._m2 = 0.0  # sum of squared deviations from the running mean

    def add(self, x: float) -> None:
        self.count += 1
        delta = x - self.mean
        self.mean += delta / self.count
        self._m2 += delta * (x - self.mean)

    def add_many(self, xs: Sequence[float]) -> None:
        """``add`` each of ``xs`` in order (the same arithmetic, so the same floats)."""
        count, mean, m2 = self.count, self.mean, self._m2
        for x in xs:
            count += 1
            delta = x - mean
            mean += delta / count
            m2 += delta * (x - mean)
        self.count, self.mean, self._m2 = count, mean, m2

    def merge(self, other: Moments) -> None:
        if other.count == 0:
            return
        n = self.count + other.count
        delta = other.mean - self.mean
        self._m2 += other._m2 + delta * delta * self.count * other.count / n
        self.mean += delta * other.count / n
        self.count = n

    @property
    def variance(self) -> float:
        """Population variance (as ``statistics.pvariance``); 0.0 below two values."""
        return self._m2 / self.count if self.count > 1 else 0.0

    @property
    def sample_variance(self) -> float:
        """Unbiased sample variance (as ``statistics.variance``); 0.0 below two values."""
        return self._m2 / (self.count - 1) if self.count > 1 else 0.0

    @property
    def stdev(self) -> float:
        return math.sqrt(self.variance)


class TopK:
    """Counts of at most ``capacity`` labels, keeping the heavy hitters (space-saving).

    Contract: ``total`` is the exact weight added. A tracked label's ``count`` never underestimates its
    true weight and overestimates it by at most its ``error``; any label whose weight exceeds
    ``total / capacity`` is tracked. ``add`` returns the label it evicted, if any, so a caller that keeps
    per-label payloads can fold the evicted one into an "other" bucket. Cost per add is O(log capacity)
    amortised (a min-heap with lazy deletion, rebuilt when stale entries pile up).
    """

    __slots__ = ("_counts", "_errors", "_heap", "_seq", "capacity", "total")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.total = 0
        self._counts: dict[str, int] = {}
        self._errors: dict[str, int] = {}
        # (count, tie-break sequence, label); an entry is stale unless count equals the label's count.
        self._heap: list[tuple[int, int, str]] = []
        self._seq = 0

    def add(self, label: str, weight: int = 1) -> str | None:
        if weight < 1:
            raise ValueError(f"weight must be >= 1, got {weight}")
        self.total += weight
        evicted: str | None = None
        count = self._counts.get(label)
        if count is not None:
            count += weight
        elif len(self._counts) < self.capacity:
            count = weight
            self._errors[label] = 0
        else:
            evicted, floor = self._pop_min()
            del self._counts[evicted]
            del self._errors[evicted]
            count = floor + weight
            self._errors[label] = floor
        self._counts[label] = count
        self._seq += 1
        heapq.heappush(self._heap, (count, self._seq, label))
        if len(self._heap) > 4 * self.capacity + 64:
            self._heap = [(c, i, lab) for i, (lab, c) in enumerate(self._counts.items())]
            heapq.heapify(self._heap)
        return evicted

    def _pop_min(self) -> tuple[str, int]:
        while True:
            count, _, label = heapq.heappop(self._heap)
            if self._counts.get(label) == count:
                return label, count

    def __contains__(self, label: object) -> bool:
        return label in self._counts

    def __len__(self) -> int:
        return len(self._counts)

    def count(self, label: str) -> int:
        """Upper bound on ``label``'s weight; 0 when untracked."""
        return self._counts.get(label, 0)

    def error(self, label: str) -> int:
        """How much ``count(label)`` may overestimate; 0 when untracked."""
        return self._errors.get(label, 0)

    def top(self, n: int | None = None) -> list[tuple[str, int]]:
        """Tracked labels by descending count (ties by label), at most ``n``."""
        ranked = sorted(self._counts.items(), key=lambda item: (-item[1], item[0]))
        return ranked if n is None else ranked[:n]

    def report(self, n: int | None = None) -> dict[str, Any]:
        """``{"top": [{"label", "count"}, ...], "other": total - shown counts, "total": total}``."""
        shown = self.top(n)
        return {
            "top": [{"label": label, "count": c} for label, c in shown],
            "other": self.total - sum(c for _, c in shown),
            "total": self.total,
        }
