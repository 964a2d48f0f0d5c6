"""When a failed upstream attempt may be tried again, how long to wait, and how many may be in flight.

Retrying is safe only when the request cannot have had effects twice: the connection was refused
before a byte was sent, or the request is idempotent (by method, or by ``Idempotency-Key`` where the
route allows it). Backoff is fully jittered exponential; a budget keeps retries under a share of the
active requests so they never amplify an outage.
"""

from __future__ import annotations

import random

from .attempt import Attempt, CompiledRoute

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


def backoff(tries: int, base: float, cap: float) -> float:
    """Seconds before retry number ``tries`` (0-based): uniform(0, min(cap, base * 2**tries))."""
    return random.uniform(0.0, min(cap, base * 2**tries))


def retryable(
    att: Attempt, method: str, headers: list[tuple[str, str]], compiled: CompiledRoute | None
) -> bool:
    kind = att.failure_kind
    if kind == "connect":
        return True  # refused before a byte was sent: safe for any method
    if kind not in ("timeout", "reset", "protocol", "http_5xx"):
        return False  # circuit_open / pool_full are local answers; contract breaches are answers
    if method in IDEMPOTENT:
        return True
    return bool(
        compiled and compiled.route.retry_idempotency_key and any(k == "idempotency-key" for k, _ in headers)
    )


class RetryBudget:
    """Retries in flight stay under a share of the active requests, so retries never amplify an outage."""

    __slots__ = ("active", "retrying")

    MIN_CONCURRENT = 3  # a quiet proxy may still retry a few requests

    def __init__(self) -> None:
        self.active = 0
        self.retrying = 0

    def acquire(self, share: float) -> bool:
        if self.retrying >= max(self.MIN_CONCURRENT, share * self.active):
            return False
        self.retrying += 1
        return True

    def release(self) -> None:
        self.retrying -= 1
