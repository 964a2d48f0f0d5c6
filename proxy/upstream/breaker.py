"""A circuit breaker (pure; the caller passes the clock): stop calling what keeps failing.

Closed: calls flow; ``failures`` consecutive failures open it. Open: calls are refused until
``open_for`` seconds have passed, then it is half-open: ``probes`` calls are let through; one success
closes it, a failure opens it again for another ``open_for``. So a hung dependency costs a handful of
calls per ``open_for`` instead of every call.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerPolicy:
    failures: int = 20  # consecutive failures that open the breaker
    open_for: float = 5.0  # seconds before a half-open probe
    probes: int = 1  # calls let through while half-open
    failure_rate: float = 1.1  # also open when this share of the last `window` calls failed (>1: off)...
    min_volume: int = 20  # ...and at least this many calls were seen
    window: int = 100  # outcomes remembered for the rate


class CircuitBreaker:
    def __init__(self, policy: BreakerPolicy) -> None:
        self.policy = policy
        self.state = BreakerState.CLOSED
        self.consecutive = 0
        self.opened_at = 0.0
        self.opened_total = 0
        self._probes_out = 0
        self._recent: deque[bool] = deque(maxlen=policy.window)  # True = failed
        self._recent_failures = 0

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.state.value} consecutive={self.consecutive}>"

    def allow(self, now: float) -> bool:
        """Whether a call may go out now (a half-open probe counts as one of ``probes``)."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            if now - self.opened_at < self.policy.open_for:
                return False
            self.state = BreakerState.HALF_OPEN
            self._probes_out = 0
        if self._probes_out < self.policy.probes:
            self._probes_out += 1
            return True
        return False

    def record(self, ok: bool, now: float) -> None:
        if len(self._recent) == self._recent.maxlen and self._recent[0]:
            self._recent_failures -= 1
        self._recent.append(not ok)
        self._recent_failures += not ok
        if ok:
            self.consecutive = 0
            if self.state is BreakerState.HALF_OPEN:
                self._recent.clear()  # a fresh start: old failures do not re-open a recovered upstream
                self._recent_failures = 0
            self.state = BreakerState.CLOSED
            return
        self.consecutive += 1
        rate_tripped = (
            len(self._recent) >= self.policy.min_volume
            and self._recent_failures / len(self._recent) >= self.policy.failure_rate
        )
        if self.state is BreakerState.HALF_OPEN or (
            self.state is BreakerState.CLOSED and (self.consecutive >= self.policy.failures or rate_tripped)
        ):
            self.state = BreakerState.OPEN
            self.opened_at = now
            self.opened_total += 1

    def retry_after(self, now: float) -> int:
        """Whole seconds until a probe may go out (at least 1)."""
        return max(1, int(self.policy.open_for - (now - self.opened_at) + 0.999))

    def to_json(self) -> dict[str, object]:
        return {
            "state": self.state.value,
            "consecutive_failures": self.consecutive,
            "opened": self.opened_total,
        }
