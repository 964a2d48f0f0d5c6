"""Sending a request's attempts: the one send, the retry loop around it, and when a retry is allowed.

Every upstream attempt of a client request goes through :func:`send`: it stamps the attempt's trace
headers when the request is traced (``Exchange.trace``), sends, and records the attempt on the exchange,
where the observers read it once the request is over. Tracing only watches: it opens a span here and
closes it from the exchange; the call itself is ``upstream.attempt``.

Retrying is safe only when the request cannot have had effects twice: the connection was refused
before a byte was sent, or the request is idempotent (by method, or by ``Idempotency-Key`` where the
route allows it). Backoff is fully jittered exponential; a budget keeps retries under a share of the
active requests so they never amplify an outage.
"""

from __future__ import annotations

import asyncio
import random
import time

from proxy.observe.exchange import Exchange
from proxy.upstream.attempt import Attempt, Outgoing, attempt
from proxy.upstream.pool import UpstreamPool

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


def backoff(tries: int, base: float, cap: float) -> float:
    """Seconds before retry number ``tries`` (0-based): uniform(0, min(cap, base * 2**tries))."""
    return random.uniform(0.0, min(cap, base * 2**tries))


def retryable(att: Attempt, out: Outgoing) -> bool:
    kind = att.failure_kind
    if kind == "connect":
        return True  # refused before a byte was sent: safe for any method
    if kind not in ("timeout", "reset", "protocol", "http_5xx"):
        return False  # circuit_open / pool_full are local answers; contract breaches are answers
    if out.method in IDEMPOTENT:
        return True
    route = out.route
    return bool(
        route and route.route.retry_idempotency_key and any(k == "idempotency-key" for k, _ in out.headers)
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


async def send(
    ex: Exchange, pool: UpstreamPool, out: Outgoing, *, budget: float | None, resend: int
) -> Attempt:
    """One attempt, under its span when the request is traced, recorded on ``ex``."""
    headers = ex.trace.stamp(resend, pool, out.headers) if ex.trace is not None else None
    att = await attempt(pool, out, budget=budget, headers=headers)
    ex.attempts.append(att)
    return att


async def send_with_retries(
    ex: Exchange,
    pool: UpstreamPool,
    out: Outgoing,
    *,
    deadline: float | None,
    started: float,
    retries: RetryBudget | None,
) -> Attempt:
    """One attempt, retried while it is safe, ``deadline`` (seconds from ``started``) allows it and the
    ``retries`` budget has room; ``retries=None`` sends once (a candidate a fallback would replace).

    Safe means: the body is held (replayable), nothing reached the client yet, and :func:`retryable`.
    Each retried attempt is marked ``retried`` and stays on the exchange: it counts as an upstream error.
    """
    left = deadline
    att = await send(ex, pool, out, budget=left, resend=0)
    if retries is None:
        return att
    cfg = pool.cfg
    tries = 0
    while att.failed and tries < cfg.retries and out.body.held and retryable(att, out):
        delay = backoff(tries, cfg.retry_backoff_base, cfg.retry_backoff_cap)
        if deadline is not None:
            left = deadline - (time.perf_counter() - started) - delay
            if left <= 0.01:
                break
        if not retries.acquire(cfg.retry_budget):
            break
        try:
            att.retried = True
            att.release()
            await asyncio.sleep(delay)
            att = await send(ex, pool, out, budget=left, resend=tries + 1)
        finally:
            retries.release()
        tries += 1
    return att
