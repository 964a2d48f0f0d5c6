"""``add_many`` on the sketches is ``add`` one value at a time, to the last bit and the last random draw:
a replay feeds a window's values in one call, and the gates must judge what the proxy would have."""

from __future__ import annotations

import random

import orjson
import pytest

from proxy.stats.sketches import LogHistogram, Moments, Reservoir


def streams(seed: int) -> list[list[float]]:
    """Batches of lognormal, heavy-tailed, zero and out-of-span values, in uneven sizes."""
    rng = random.Random(seed)
    out: list[list[float]] = []
    for i in range(40):
        n = rng.choice([0, 1, 2, 7, 100, 999, 3000])
        kind = i % 4
        if kind == 0:
            out.append([rng.lognormvariate(-3.0, 1.0) for _ in range(n)])
        elif kind == 1:
            out.append([0.03 * rng.paretovariate(1.2) for _ in range(n)])
        elif kind == 2:
            out.append([rng.choice([0.0, -0.0, 1e-300, 5e300, 0.5]) for _ in range(n)])
        else:
            out.append([round(rng.expovariate(10.0), 3) for _ in range(n)])
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("max_buckets", [2048, 64])
def test_log_histogram_add_many_is_add_one_by_one(seed: int, max_buckets: int) -> None:
    one, many = LogHistogram(max_buckets=max_buckets), LogHistogram(max_buckets=max_buckets)
    for batch in streams(seed):
        for x in batch:
            one.add(x)
        many.add_many(batch)
        assert orjson.dumps(many.to_json()) == orjson.dumps(one.to_json())
    assert many.collapsed == one.collapsed


def test_log_histogram_add_many_refuses_a_batch_with_a_non_finite_value_whole() -> None:
    h = LogHistogram()
    with pytest.raises(ValueError, match="finite"):
        h.add_many([1.0, float("inf")])
    assert h.count == 0


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("size", [1, 50, 4096])
def test_reservoir_add_many_keeps_the_same_sample_and_draws(seed: int, size: int) -> None:
    one, many = Reservoir(size, seed=seed), Reservoir(size, seed=seed)
    for batch in streams(seed):
        for x in batch:
            one.add(x)
        many.add_many(batch)
        assert many.count == one.count
        assert many.values() == one.values()
    # The same random state too: what enters next is the same.
    tail = [float(i) for i in range(20_000)]
    for x in tail:
        one.add(x)
    many.add_many(tail)
    assert many.values() == one.values()


def test_reservoir_add_many_after_a_merge() -> None:
    one, many = Reservoir(100, seed=5), Reservoir(100, seed=5)
    other = Reservoir(100, seed=9)
    other.add_many([float(i) for i in range(1000)])
    for r in (one, many):
        r.add_many([0.5] * 300)
        r.merge(other)
    batch = [float(-i) for i in range(5000)]
    for x in batch:
        one.add(x)
    many.add_many(batch)
    assert many.values() == one.values() and many.count == one.count


def test_moments_add_many_is_the_same_arithmetic() -> None:
    one, many = Moments(), Moments()
    for batch in streams(7):
        for x in batch:
            one.add(x)
        many.add_many(batch)
        assert (many.count, many.mean, many.variance) == (one.count, one.mean, one.variance)
