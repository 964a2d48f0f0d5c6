"""Streaming summaries (proxy/stats/sketches.py): accuracy against exact answers, bounds, determinism.

Every random draw is seeded, so statistical checks cannot flake; their tolerances are stated where made.
"""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter
from collections.abc import Callable

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.stats.sketches import LogHistogram, Moments, Reservoir, TopK

QS = [0.0, 0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0]
# Float rounding in log/exp may move a value across a bucket boundary by one ulp.
SLACK = 1e-9


def exact_quantile(sorted_values: list[float], q: float) -> float:
    """The sketch's contract: the value of rank floor(q * (n - 1))."""
    return sorted_values[math.floor(q * (len(sorted_values) - 1))]


def assert_within(h: LogHistogram, values: list[float], qs: list[float] = QS) -> None:
    ordered = sorted(values)
    alpha = h.relative_accuracy
    for q in qs:
        exact = exact_quantile(ordered, q)
        estimate = h.quantile(q)
        assert estimate is not None
        if exact <= 0:
            assert estimate == 0.0, (q, exact, estimate)
        else:
            assert abs(estimate - exact) <= (alpha + SLACK) * exact, (q, exact, estimate)


DISTRIBUTIONS: dict[str, Callable[[random.Random], float]] = {
    "lognormal latency": lambda r: r.lognormvariate(math.log(0.05), 0.8),
    "exponential": lambda r: r.expovariate(20.0),
    "pareto heavy tail (alpha 1.1)": lambda r: 0.001 * r.paretovariate(1.1),
    "cauchy magnitude": lambda r: abs(math.tan(math.pi * (r.random() - 0.5))),
    "bimodal fast/slow": lambda r: r.gauss(0.002, 0.0002) if r.random() < 0.9 else r.gauss(1.5, 0.3),
    "with zeros and negatives": lambda r: 0.0 if r.random() < 0.2 else r.uniform(-1, 1),
    "twelve decades": lambda r: 10 ** r.uniform(-6, 6),
}


@pytest.mark.parametrize("name", list(DISTRIBUTIONS))
@pytest.mark.parametrize("alpha", [0.01, 0.05])
def test_log_histogram_quantiles_within_relative_accuracy(name: str, alpha: float) -> None:
    rng = random.Random(f"{name}/{alpha}")
    values = [DISTRIBUTIONS[name](rng) for _ in range(20_000)]
    h = LogHistogram(alpha)
    for v in values:
        h.add(v)
    assert h.count == len(values)
    assert h.sum == pytest.approx(math.fsum(values), rel=1e-9, abs=1e-9)
    assert h.mean == pytest.approx(statistics.fmean(values), rel=1e-9, abs=1e-12)
    assert not h.collapsed
    assert_within(h, values)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.floats(min_value=-1.0, max_value=1e6, allow_nan=False), min_size=1, max_size=300))
def test_log_histogram_contract_on_arbitrary_inputs(values: list[float]) -> None:
    # Positive values stay within 1e-6..1e6, a ratio well inside the default span (no folding).
    values = [v if v <= 0 or v > 1e-6 else 1e-6 for v in values]
    h = LogHistogram(0.01)
    for v in values:
        h.add(v)
    assert_within(h, values)
    assert h.min == min(values) and h.max == max(values)


def test_log_histogram_bucket_count_is_bounded_over_a_million_widely_ranging_values() -> None:
    rng = random.Random(7)
    values = [10 ** rng.uniform(-12, 12) for _ in range(1_000_000)]  # 24 decades: ~2,760 keys at 1%
    h = LogHistogram(0.01)
    for i, v in enumerate(values):
        h.add(v)
        if i % 1000 == 0:
            assert h.num_buckets <= 2048
    assert h.num_buckets <= 2048
    assert h.collapsed
    assert h.count == 1_000_000
    # The lowest ~26% of the range was folded; everything above it keeps the guarantee.
    assert_within(h, values, [0.5, 0.75, 0.9, 0.99, 0.999, 1.0])
    # Folded low quantiles overestimate, never underestimate.
    ordered = sorted(values)
    low = h.quantile(0.01)
    assert low is not None and low >= exact_quantile(ordered, 0.01)


def test_log_histogram_small_cap_folds_lowest_and_keeps_the_top() -> None:
    h = LogHistogram(0.01, max_buckets=8)
    values = [1.0 * 1.5**i for i in range(40)] + [1e-9, 1e-12]
    for v in values:
        h.add(v)
    assert h.num_buckets <= 8
    assert_within(h, values, [1.0])


def test_log_histogram_merge_equals_one_sketch_and_json_round_trips() -> None:
    rng = random.Random(3)
    values = [rng.lognormvariate(0, 2) for _ in range(10_000)] + [0.0] * 50
    whole, left, right = LogHistogram(), LogHistogram(), LogHistogram()
    for i, v in enumerate(values):
        whole.add(v)
        (left if i % 3 else right).add(v)
    left.merge(right)
    for q in QS:
        assert left.quantile(q) == whole.quantile(q)
    assert left.count == whole.count
    restored = LogHistogram.from_json(orjson.loads(orjson.dumps(left.to_json())))
    assert [restored.quantile(q) for q in QS] == [whole.quantile(q) for q in QS]
    assert restored.count == whole.count and restored.sum == pytest.approx(whole.sum)
    with pytest.raises(ValueError):
        left.merge(LogHistogram(0.02))


def test_log_histogram_edges() -> None:
    h = LogHistogram()
    assert h.quantile(0.5) is None and h.mean is None and h.min is None
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError):
            h.add(bad)
    with pytest.raises(ValueError):
        h.quantile(1.5)
    h.add(1.7976931348623157e308)
    assert h.quantile(1.0) == 1.7976931348623157e308
    assert orjson.loads(orjson.dumps(h.to_json()))["count"] == 1


# -- Reservoir -------------------------------------------------------------------------------------


def test_reservoir_inclusion_is_uniform_over_stream_positions() -> None:
    n, k, trials = 50, 10, 3000
    hits: Counter[float] = Counter()
    for seed in range(trials):
        r = Reservoir(k, seed=seed)
        for i in range(n):
            r.add(float(i))
        assert len(r.values()) == k and r.count == n
        hits.update(r.values())
    expected = trials * k / n  # 600 per position
    chi2 = sum((hits[float(i)] - expected) ** 2 / expected for i in range(n))
    # 49 degrees of freedom: P(chi2 > 85.4) = 0.001 for independent cells; a fixed sample size per trial
    # only makes the statistic smaller (it is ~ (1 - k/n) chi2), so this is conservative.
    assert chi2 < 85.4, chi2


def test_reservoir_is_deterministic_per_seed() -> None:
    def run(seed: int) -> list[float]:
        r = Reservoir(100, seed=seed)
        for i in range(10_000):
            r.add(float(i))
        return r.values()

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_reservoir_quantile_is_exact_on_the_sample() -> None:
    rng = random.Random(5)
    data = [rng.gauss(0, 1) for _ in range(1000)]
    r = Reservoir(4096, seed=0)
    assert r.quantile(0.5) is None
    for x in data:
        r.add(x)
    assert sorted(r.values()) == sorted(data)  # under capacity: the sample is everything
    quartiles = statistics.quantiles(data, n=4, method="inclusive")  # the same "type 7" definition
    assert [r.quantile(q) for q in (0.25, 0.5, 0.75)] == pytest.approx(quartiles, rel=1e-12)
    assert r.quantile(0.0) == min(data) and r.quantile(1.0) == max(data)


def test_reservoir_merge_is_uniform_over_both_streams() -> None:
    na, nb, k, trials = 30, 70, 10, 3000
    hits: Counter[float] = Counter()
    for seed in range(trials):
        a, b = Reservoir(k, seed=seed), Reservoir(k, seed=seed + 10_000)
        for i in range(na):
            a.add(float(i))
        for i in range(na, na + nb):
            b.add(float(i))
        a.merge(b)
        assert a.count == na + nb and len(a.values()) == k
        hits.update(a.values())
    expected = trials * k / (na + nb)
    chi2 = sum((hits[float(i)] - expected) ** 2 / expected for i in range(na + nb))
    assert chi2 < 148.2, chi2  # 99 degrees of freedom, P = 0.001
    with pytest.raises(ValueError):
        a.merge(Reservoir(k + 1))


def test_reservoir_stays_uniform_when_values_follow_a_merge() -> None:
    # After a merge the sample must keep taking later values at the right rate: too few and the start of
    # the stream is over-represented, too many and the end is.
    na, nb, nc, k, trials = 30, 40, 130, 10, 3000
    n = na + nb + nc
    hits: Counter[float] = Counter()
    for seed in range(trials):
        a, b = Reservoir(k, seed=seed), Reservoir(k, seed=seed + 10_000)
        for i in range(na):
            a.add(float(i))
        for i in range(na, na + nb):
            b.add(float(i))
        a.merge(b)
        for i in range(na + nb, n):
            a.add(float(i))
        hits.update(a.values())
    expected = trials * k / n
    chi2 = sum((hits[float(i)] - expected) ** 2 / expected for i in range(n))
    assert chi2 < 263.0, chi2  # 199 degrees of freedom, P = 0.001
    late = sum(hits[float(i)] for i in range(na + nb, n)) / (trials * k)
    assert abs(late - nc / n) < 0.02, late


# -- Moments ---------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), min_size=1, max_size=200))
def test_welford_matches_statistics(values: list[float]) -> None:
    m = Moments()
    for v in values:
        m.add(v)
    assert m.count == len(values)
    assert m.mean == pytest.approx(statistics.fmean(values), rel=1e-9, abs=1e-6)
    assert m.variance == pytest.approx(statistics.pvariance(values), rel=1e-7, abs=1e-6)
    if len(values) > 1:
        assert m.sample_variance == pytest.approx(statistics.variance(values), rel=1e-7, abs=1e-6)


def test_moments_merge_equals_one_pass() -> None:
    rng = random.Random(11)
    values = [rng.gauss(1e6, 3.0) for _ in range(5000)]  # a large mean, where naive sums lose digits
    a, b, whole = Moments(), Moments(), Moments()
    for i, v in enumerate(values):
        whole.add(v)
        (a if i < 1234 else b).add(v)
    a.merge(b)
    a.merge(Moments())
    assert a.count == whole.count
    assert a.mean == pytest.approx(whole.mean, rel=1e-12)
    assert a.variance == pytest.approx(statistics.pvariance(values), rel=1e-9)
    assert a.stdev == pytest.approx(math.sqrt(a.variance))


# -- TopK ------------------------------------------------------------------------------------------


def test_topk_keeps_the_heavy_hitters_with_honest_bounds() -> None:
    rng = random.Random(13)
    labels = [f"seg-{i}" for i in range(5000)]
    weights = [1 / (i + 1) ** 1.2 for i in range(len(labels))]  # Zipf-like
    stream = rng.choices(labels, weights=weights, k=200_000)
    true = Counter(stream)
    top = TopK(100)
    evicted = 0
    for label in stream:
        if top.add(label) is not None:
            evicted += 1
    assert len(top) == 100 and top.total == len(stream) and evicted > 0
    for label, _ in true.most_common(10):
        assert label in top
        assert top.count(label) - top.error(label) <= true[label] <= top.count(label)
    assert [label for label, _ in top.top(10)] == [label for label, _ in true.most_common(10)]
    # Any label above total / capacity is guaranteed tracked.
    for label, c in true.items():
        if c > top.total / top.capacity:
            assert label in top
    report = top.report(5)
    assert len(report["top"]) == 5
    assert report["other"] + sum(e["count"] for e in report["top"]) == report["total"] == len(stream)


def test_topk_eviction_returns_the_minimum() -> None:
    top = TopK(2)
    assert top.add("a", 5) is None
    assert top.add("b") is None
    assert top.add("c") == "b"  # b had the smallest count
    assert top.count("c") == 2 and top.error("c") == 1
    assert top.count("b") == 0 and "b" not in top
    with pytest.raises(ValueError):
        top.add("d", 0)
