"""One client request's record, and the observers that watch it.

The data plane fills one :class:`Exchange` per request as it goes: the route, the version chosen, every
upstream attempt in order (retries and the fallback included), the client's status. When the request is
over (answered, refused, or the client gone) it hands the record to :class:`Observers`, which calls each
registered observer's one verb, ``on_exchange``, under one guard: an observer that raises is logged and
counted, and the request it watched is not affected. The observers (metrics, the controller's evidence,
the staging book, spans, the access log) are registered in one place, ``app/build.py``.

Observers are plain method calls on the request's own task: no task, no queue, so the record's objects
are theirs to read and nothing outlives the request unless an observer keeps it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from opentelemetry.trace import SpanContext

from proxy._types import Role
from proxy.content.contracts import MISSING, CompiledRoute, Violation
from proxy.upstream.attempt import Attempt
from proxy.upstream.body import Body
from proxy.upstream.pool import UpstreamPool

Headers = list[tuple[str, str]]

log = logging.getLogger("rollguard.observe")

_LOG_EVERY = 1000  # after an observer's first failure, one line per this many more


class Trace(Protocol):
    """The spans of one request, as the data plane sees them (``observe/tracing.py`` makes them)."""

    @property
    def span_context(self) -> SpanContext:
        """The SERVER span's context: what a mirror of this request links to."""
        ...

    def stamp(self, resend: int, pool: UpstreamPool, headers: Headers) -> Headers:
        """Open the span of the attempt about to be sent to ``pool``; the headers to send it with (its
        traceparent). ``resend`` is 0 for a first attempt, then 1, 2... for its retries."""
        ...

    def end(self, exchange: Exchange) -> None:
        """End every span of the request with what ``exchange`` says happened."""
        ...


@dataclass(slots=True, eq=False)
class Exchange:
    """What happened to one client request: filled by the data plane, read by the observers."""

    request_id: str
    method: str
    path: str
    route_name: str  # the matched route, or "unmatched"
    route: CompiledRoute | None
    scope: dict[str, Any]  # the ASGI scope (peer, TLS, raw headers)
    started: float = field(default_factory=time.perf_counter)
    ts: float = field(default_factory=time.time)
    client_name: str | None = None  # the authenticated client, never its credential
    credential_header: bytes | None = None  # the header holding the credential verified, not forwarded
    trace: Trace | None = None  # spans, when tracing is on
    trace_id: str | None = None
    sticky: str | None = None  # the request's sticky key value, when the route has one and it was sent
    role: Role | None = None  # the version chosen (before any fallback)
    version: str | None = None
    body: Body | None = None
    body_streamed: bool = False  # too large to hold: streamed to one upstream without checks
    doc: Any = MISSING  # the parsed request body, when the route needed it
    breach: Violation | None = None  # the request contract's violation, charged to ``role``
    attempts: list[Attempt] = field(default_factory=list)  # in the order they were sent
    fallback: str | None = None  # the candidate failure the baseline's answer replaced
    answered: Attempt | None = None  # the attempt whose answer (or problem) the client got
    shadow: str | None = None  # the mirror's outcome when this request was offered to it
    status: int = 500  # what the client got; 499 when it left first
    error: str | None = None  # the problem's detail when the proxy answered or cut the answer short
    elapsed: float = 0.0  # seconds, from the head to the last byte sent

    @property
    def query(self) -> str | None:
        raw: bytes = self.scope.get("query_string") or b""
        return raw.decode("latin-1") if raw else None

    @property
    def peer(self) -> str | None:
        client = self.scope.get("client")
        return client[0] if client else None


class Observer(Protocol):
    def on_exchange(self, exchange: Exchange) -> None:
        """Read one finished exchange; must not change it. Failures are the guard's to handle."""
        ...


class Observers:
    """The registered observers, called in order for every exchange under one guard (mitmproxy's
    ``safecall``): a failure is logged (the first with its traceback, then one line per thousand) and
    counted in ``failures``; the next observer still runs and the client never sees it."""

    __slots__ = ("_observers", "failures", "on_failure")

    def __init__(
        self, observers: Iterable[tuple[str, Observer]], on_failure: Callable[[str], None] | None = None
    ) -> None:
        self._observers = tuple(observers)
        self.failures: dict[str, int] = {name: 0 for name, _ in self._observers}
        self.on_failure = on_failure  # called with the observer's name, e.g. a Prometheus counter's inc

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self._observers)

    def on_exchange(self, exchange: Exchange) -> None:
        for name, observer in self._observers:
            try:
                observer.on_exchange(exchange)
            except Exception:
                self._failed(name)

    def _failed(self, name: str) -> None:
        n = self.failures[name] = self.failures[name] + 1
        if n == 1:
            log.exception("observer %s failed; the request it watched was not affected", name)
        elif n % _LOG_EVERY == 0:
            log.error("observer %s has failed %d times", name, n)
        if self.on_failure is not None:
            try:
                self.on_failure(name)
            except Exception:  # the counter itself: nothing left to tell
                pass
