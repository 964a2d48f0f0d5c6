"""The circuit breaker's states, table-driven with an injected clock."""

from __future__ import annotations

from proxy.upstream.breaker import BreakerPolicy, BreakerState, CircuitBreaker


def test_opens_after_consecutive_failures_and_probes_after_open_for() -> None:
    b = CircuitBreaker(BreakerPolicy(failures=3, open_for=5.0, probes=1))
    for t in range(2):
        assert b.allow(t)
        b.record(False, t)
    assert b.state is BreakerState.CLOSED
    b.record(True, 2)  # a success in between resets the count
    for t in (3, 4, 5):
        assert b.allow(t)
        b.record(False, t)
    assert b.state is BreakerState.OPEN and b.opened_total == 1
    assert not b.allow(9.9)  # still open
    assert b.allow(10.0)  # half-open: one probe
    assert b.state is BreakerState.HALF_OPEN
    assert not b.allow(10.1)  # only one probe at a time
    b.record(False, 12.0)  # the probe failed: open again, for another open_for
    assert b.state is BreakerState.OPEN and b.opened_total == 2
    assert not b.allow(16.9)
    assert b.allow(17.0)
    b.record(True, 17.5)  # the probe succeeded: closed
    assert b.state is BreakerState.CLOSED and b.allow(17.6)
