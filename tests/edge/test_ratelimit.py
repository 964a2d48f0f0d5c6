"""GCRA rate limits, pure, with an injected clock: burst, steady rate, Retry-After, memory bound."""

from __future__ import annotations

import pytest

from proxy.edge.ratelimit import Gcra, acquire_all, retry_after


def admitted_at(limit: Gcra, key: str, now: float, tries: int) -> int:
    return sum(limit.acquire(key, now) == 0.0 for _ in range(tries))


@pytest.mark.parametrize(("rate", "burst"), [(10.0, 5), (100.0, 50), (1 / 60, 1), (3.0, 1), (0.5, 7)])
def test_exactly_burst_at_once_then_rate_per_second(rate: float, burst: int) -> None:
    limit = Gcra(rate, burst)
    assert admitted_at(limit, "k", 0.0, burst * 3) == burst
    # Step the clock by the emission interval: exactly one more each step, never two.
    interval = 1.0 / rate
    for step in range(1, 21):
        assert admitted_at(limit, "k", step * interval, 5) == 1, step
    # Over a long span at saturation the count is rate x span (plus the burst spent at t=0).
    limit2 = Gcra(rate, burst)
    span = 50 * interval
    now, admitted = 0.0, 0
    while now <= span + 1e-9:
        admitted += admitted_at(limit2, "k", now, 10)
        now += interval / 4
    assert admitted == burst + 50


def test_retry_after_says_when_the_next_request_passes() -> None:
    limit = Gcra(2.0, 3)  # one every 0.5 s
    for _ in range(3):
        assert limit.acquire("k", 10.0) == 0.0
    wait = limit.acquire("k", 10.0)
    assert wait == pytest.approx(0.5)
    assert limit.acquire("k", 10.0 + wait - 0.01) > 0.0  # not a moment sooner
    assert limit.acquire("k", 10.0 + wait) == 0.0
    slow = Gcra(1 / 90, 1)  # 40/h-ish: a refused request waits a long time
    assert slow.acquire("k", 0.0) == 0.0
    assert slow.acquire("k", 30.0) == pytest.approx(60.0)


@pytest.mark.parametrize(("wait", "header"), [(0.001, 1), (0.5, 1), (1.0, 1), (1.01, 2), (59.2, 60)])
def test_retry_after_header_rounds_up_and_is_at_least_one(wait: float, header: int) -> None:
    assert retry_after(wait) == header


def test_idle_keys_regain_their_burst_but_never_more() -> None:
    limit = Gcra(1.0, 4)
    assert admitted_at(limit, "k", 0.0, 10) == 4
    assert admitted_at(limit, "k", 1000.0, 10) == 4


def test_keys_are_independent_and_memory_is_bounded() -> None:
    limit = Gcra(1.0, 1, max_keys=3)
    for key in ("a", "b", "c"):
        assert limit.acquire(key, 0.0) == 0.0
        assert limit.acquire(key, 0.0) > 0.0
    assert limit.acquire("a", 0.1) > 0.0  # "a" is now the most recently seen
    assert limit.acquire("d", 0.1) == 0.0  # evicts "b", the least recently seen
    assert len(limit) == 3
    assert limit.acquire("b", 0.2) == 0.0  # forgotten: a fresh burst, never a wrong refusal
    assert limit.acquire("a", 0.2) > 0.0  # kept
    for i in range(10_000):
        limit.acquire(f"flood-{i}", 1.0)
    assert len(limit) == 3


def test_acquire_all_admits_against_every_limit_or_none() -> None:
    per_client = Gcra(10.0, 5)
    per_route = Gcra(1.0, 2)
    both = [(per_client, "alice"), (per_route, "")]
    assert acquire_all(both, 0.0) == 0.0
    assert acquire_all(both, 0.0) == 0.0
    wait = acquire_all(both, 0.0)  # the route limit refuses...
    assert wait == pytest.approx(1.0)
    # ...and the refused request used none of alice's own room: 3 of her 5 remain.
    assert admitted_at(per_client, "alice", 0.0, 10) == 3
