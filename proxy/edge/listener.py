"""Request-head limits below ASGI: uvicorn's httptools protocol, subclassed once per listener.

uvicorn calls the app only once a request head is parsed, so whatever must bound the head itself lives
here. :class:`ListenerGuard` holds one listener's limits and live in-flight count; its ``protocol``
attribute is the class to give ``uvicorn.Config(http=...)``. What a connection gets:

=================================================================  ======  =================  ==========
what arrived                                                       status  ``on_reject``      then
=================================================================  ======  =================  ==========
a request head over ``max_header_bytes``                           431     headers_too_large  close
a head still incomplete ``head_timeout`` after its first byte      408     head_timeout       close
no byte at all ``head_timeout`` after the connection was accepted  --      --                 close
a body still incomplete ``body_timeout`` after its head            408     body_timeout       close
a body averaging under ``min_body_rate`` once 5-6 s have passed    408     body_too_slow      close
a body whose framing breaks (a bad chunk size, a truncated chunk)  400     parse_error        close
not HTTP/1.x syntax (httptools refuses it)                         400     parse_error        close
both ``Content-Length`` and ``Transfer-Encoding``; more than one   400     framing            close
``Content-Length`` or a list; ``Transfer-Encoding`` in HTTP/1.0
or not ending in ``chunked``
transfer codings besides ``chunked`` (``gzip, chunked``)           501     transfer_coding    close
``CONNECT`` (a tunnel), ``OPTIONS *``                              501     method             close
the ``*`` request-target with any other method                     400     target             close
the HTTP/2 preface (``PRI * HTTP/2.0``); a version other than 1.x  505     http_version       close
more than ``max_concurrency`` requests in flight on the listener   503     overloaded         keep-alive
=================================================================  ======  =================  ==========

Every answer is ``application/problem+json`` with a fresh ``request_id`` (the 503 keeps a well-formed
client ``x-request-id``, as the forwarder does) and none reaches the app: they are local-origin, seen
only through ``on_reject``. A closing answer ends with a lingering close: write, half-close, discard
what the client still sends for up to :data:`LINGER_SECONDS`, then close, so that a client still
sending reads the answer rather than a reset. A refusal that follows a pipelined request still being
answered is written after that answer.

A request with a body is admitted (started as an ASGI task, counted against ``max_concurrency``) once
its body has arrived, or once it fills the read buffer (a large body, streamed to the app from then
on), or at once when the client waits for ``100 Continue``. So a client that sends a head and then
drips its body holds a socket, never a slot: a few hundred of them cannot make the listener refuse
anyone. A body refused after its request was admitted tells the app the client left (it stops and its
slot is freed) and the client gets the answer at once; a response already begun is cut instead. When
the app answers and closes a request admitted before its body arrived (a refusal before the body is
read), the close lingers too.

The head's size is the bytes read while it is incomplete (an unterminated header is refused as soon as
those pass the limit, whatever httptools buffers) and, once complete, the request-target plus each
field's name and value and 4 bytes; the latter is computed only when the reads could hold more than
the limit, so an ordinary request pays no per-header cost.

Written against uvicorn 0.54 (pinned ``>=0.54,<0.55`` in pyproject.toml). It overrides these members of
``HttpToolsProtocol``: ``__init__``, ``connection_made``, ``connection_lost``, ``data_received``
(replaced whole, as it answers parse errors in plain text), ``on_message_begin``,
``on_headers_complete``, ``on_response_complete`` and the private ``_start_asgi_task`` (its body
repeated, to hold the task). It relies on: ``limit_concurrency`` being read only in
``on_headers_complete``; ``_start_asgi_task(cycle, app)`` being the one place a request's task starts,
pipelined or not; ``on_message_begin`` resetting ``url`` and ``headers``, building ``scope`` (a TLS
connection's ``extensions["tls"]`` is added to it, see ``tls_peer``) and ``on_header`` lowering names;
``connection_made`` setting ``scheme`` to ``https`` on a TLS transport; ``cycle`` being the last
request parsed, with ``more_body`` and ``response_complete``; the cycle calling
``on_response_complete`` after each response; and the attributes ``parser``,
``transport``, ``flow``, ``loop``, ``config``, ``tasks``, ``server_state.default_headers`` and the
private ``_unset_keepalive_if_required``, ``_should_upgrade``, ``_unsupported_upgrade_warning``.
"""

from __future__ import annotations

import asyncio
import contextvars
import http
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, NoReturn

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from proxy.config.model import LimitsConfig
from proxy.edge.tls_peer import tls_extension
from proxy.errors import BadRequest, NotImplementedProtocol, problem
from proxy.upstream.headers import request_id

__all__ = [
    "BODY_GRACE",
    "LINGER_SECONDS",
    "GuardedHttpToolsProtocol",
    "ListenerGuard",
    "ListenerLimits",
    "OnReject",
]

log = logging.getLogger("rollguard.protocol")

OnReject = Callable[[int, str], None]
"""``on_reject(status, reason)``: called once per request answered here, ``reason`` from the table above."""

LINGER_SECONDS = 2.0
"""Longest a closing answer waits for the client to stop sending before the socket is closed."""

BODY_GRACE = 5.0
BODY_GRACE_SPREAD = 0.2  # the first rate check of each body falls in BODY_GRACE * [1, 1.2)
"""Seconds a body may start slowly before ``min_body_rate`` applies (a client's first round trips)."""

# status -> (title, problem type slug); 400 and 501 share the error tree's, the rest exist only here.
_PROBLEMS: dict[int, tuple[str, str]] = {
    400: (BadRequest.title, BadRequest.slug),
    408: ("Request timeout", "request-timeout"),
    431: ("Request header fields too large", "header-too-large"),
    501: (NotImplementedProtocol.title, NotImplementedProtocol.slug),
    503: ("Overloaded", "overloaded"),
    505: ("HTTP version not supported", "http-version"),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenerLimits:
    """What one listener enforces below the app; built from ``limits`` (``config/model.py``)."""

    max_header_bytes: int  # request line + header fields; 431 beyond
    head_timeout: float  # seconds from a request's first byte to the end of its head; 408 beyond
    body_timeout: float  # seconds from the end of the head to the body's last byte; 408 beyond
    min_body_rate: int  # bytes/s a body must average after BODY_GRACE; 408 below; 0: no minimum
    max_concurrency: int  # requests in flight on the listener; 503 + Retry-After beyond

    @classmethod
    def from_config(cls, limits: LimitsConfig, **overrides: Any) -> ListenerLimits:
        """The listener's part of ``limits``; ``overrides`` replace fields."""
        fields = {
            "max_header_bytes": limits.max_header_bytes,
            "head_timeout": limits.head_timeout,
            "body_timeout": limits.body_timeout,
            "min_body_rate": limits.min_body_rate,
            "max_concurrency": limits.max_concurrency,
        }
        return cls(**{**fields, **overrides})


class ListenerGuard:
    """One listener's limits and in-flight count; ``protocol`` goes to ``uvicorn.Config(http=...)``.

    One guard per listener: the count is shared by every connection that listener accepts.
    ``on_reject`` must not raise; if it does, the failure is logged once and swallowed.
    """

    def __init__(
        self, limits: ListenerLimits, *, on_reject: OnReject | None = None, name: str = "data"
    ) -> None:
        self.limits = limits
        self.name = name
        self._on_reject = on_reject
        self._hook_failed = False
        # Read and written by the protocol on the hot path, hence plain attributes.
        self._in_flight = 0
        self._max_in_flight = limits.max_concurrency
        self.protocol: type[GuardedHttpToolsProtocol] = type(
            f"GuardedHttpToolsProtocol_{name}", (GuardedHttpToolsProtocol,), {"guard": self}
        )

    @property
    def in_flight(self) -> int:
        """Requests of this listener whose app task has started and not yet ended."""
        return self._in_flight

    def _release(self, _task: object) -> None:
        self._in_flight -= 1

    def rejected(self, status: int, reason: str) -> None:
        if self._on_reject is None:
            return
        try:
            self._on_reject(status, reason)
        except Exception:
            if not self._hook_failed:
                self._hook_failed = True
                log.exception("on_reject hook of listener %s failed; further failures are silent", self.name)

    def __repr__(self) -> str:
        return f"<ListenerGuard {self.name} in_flight={self._in_flight}/{self.limits.max_concurrency}>"


class _LingerOnClose:
    """A cycle's transport whose ``close`` lingers (see :meth:`GuardedHttpToolsProtocol._close_answered`);
    everything else goes to the real transport."""

    __slots__ = ("_protocol", "_transport")

    def __init__(self, protocol: GuardedHttpToolsProtocol, transport: asyncio.Transport) -> None:
        self._protocol = protocol
        self._transport = transport

    def close(self) -> None:
        self._protocol._close_answered()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _Refused(Exception):
    """Raised inside a parser callback to stop httptools; the answer is in ``_refusal``."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` with the limits of :attr:`guard`; use ``ListenerGuard(...).protocol``."""

    guard: ClassVar[ListenerGuard]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limit_concurrency = None  # the guard's 503 replaces uvicorn's plain-text one
        limits = self.guard.limits
        self._max_head = limits.max_header_bytes
        self._head_timeout = limits.head_timeout
        self._timer: asyncio.TimerHandle | None = None  # idle-before-first-byte, then head deadline
        self._linger: asyncio.TimerHandle | None = None
        self._in_head = False  # a message began and its head is not complete
        self._head_started = 0.0  # loop time of the current head's first byte
        # Head size without a per-header cost: bytes read while the head was incomplete, and whether they
        # are all of it so far. The head's part of the chunk being fed is at most that chunk's length.
        self._head_raw = 0
        self._head_raw_exact = True
        self._chunk_len = 0
        self._begun = 0  # messages begun in the chunk being fed
        self._refusal: tuple[int, str, str] | None = None
        self._closing = False  # answered here: the connection only drains and closes
        self._deferred: bytes | None = None  # our answer, waiting for a pipelined response ahead of it
        self._tls: dict[str, Any] | None = None  # the scope's TLS extension, built once per connection
        self._body_timeout = limits.body_timeout
        self._min_rate = limits.min_body_rate
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_due = False  # a body began in the read being parsed; its timer is not armed yet
        self._body_started = 0.0  # loop time the current body's clock started (moved while reading is ours)
        self._body_checked = 0.0  # loop time of the body timer's last look
        self._body_bytes = 0
        self._has_body = False  # the head just checked declares a body
        self._from_head = False  # _start_asgi_task is being called for the head just parsed
        self._held: tuple[RequestResponseCycle, Any] | None = None  # admitted once its body has arrived
        self._running: RequestResponseCycle | None = None  # the request admitted last

    # -- connection ----------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        if self.scheme == "https":  # set by uvicorn from the transport; plain HTTP pays nothing here
            self._tls = tls_extension(transport.get_extra_info("ssl_object"))
        # uvicorn arms no timer before the first request: an accepted socket that never sends would be
        # held forever. Nothing was asked, so nothing is answered (nginx does the same).
        self._timer = self.loop.call_later(self._head_timeout, self._on_timer)

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._timer, self._linger, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._linger = self._body_timer = None
        self._held = None  # never started: nothing to tell
        running, self._running = self._running, None
        if running is not None and running is not self.cycle and not running.response_complete:
            running.disconnected = True
            running.message_event.set()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # uvicorn's data_received, replaced: it answers parse errors in plain text.
        if self._closing:
            return  # answered and closing: what the client still sends is discarded
        # Nothing in progress: a message beginning in this chunk begins at its start (leading CRLFs
        # aside). A response completed before its request body leaves more_body set: not idle then.
        cycle = self.cycle
        idle = not self._in_head and (cycle is None or not cycle.more_body)
        self._begun = 0
        self._chunk_len = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # As uvicorn: rollguard configures no WebSocket protocol, so the app answers the upgrade (501).
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            self._parse_failed(exc)
            return
        if self._body_due and not self._closing:  # a body began in this read and has not ended in it
            self._arm_body_timer()
        if not self._in_head or self._closing:
            return
        # The head is still incomplete: this chunk is head from the message's start on. Where that start
        # is unknown (a pipelined message ended inside the chunk) the chunk is left out, the count stays a
        # lower bound (short by under one read), and the exact size is taken when the head completes.
        if self._begun == 0 or (self._begun == 1 and idle):
            self._head_raw += len(data)
        else:
            self._head_raw_exact = False
        if self._head_raw > self._max_head:
            self._reject(431, "headers_too_large", self._head_too_large())
        elif self.url and self.parser.get_method() == b"PRI":
            # An HTTP/2 client sends the preface and waits; do not leave it waiting for the rest.
            self._reject(505, "http_version", _H2_DETAIL)
        elif self._timer is None:
            self._timer = self.loop.call_at(self._head_started + self._head_timeout, self._on_timer)

    # -- parser callbacks ---------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._tls is not None:  # a copy per request: one app's change must not reach the next request
            self.scope["extensions"] = {"tls": self._tls.copy()}  # type: ignore[dict-item]
        # Here rather than on any byte, as uvicorn does: stray CRLFs must not keep an idle connection.
        self._unset_keepalive_if_required()
        if self._timer is not None:  # the idle timer of a fresh connection
            self._timer.cancel()
            self._timer = None
        self._head_started = self.loop.time()
        self._in_head = True
        self._begun += 1
        self._head_raw = 0
        self._head_raw_exact = True

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._check_head()
        before = self.cycle
        self._from_head = True
        try:
            super().on_headers_complete()
        finally:
            self._from_head = False
        if self._has_body and self.cycle is not before:  # a new request (not an upgrade) with a body
            now = self.loop.time()
            self._body_started = self._body_checked = now
            self._body_bytes = 0
            # Armed by data_received only if the body is still incomplete when this read is parsed: most
            # bodies arrive with their head, and a timer made and cancelled per request is not free.
            self._body_due = True

    def _arm_body_timer(self) -> None:
        self._body_due = False
        # The first look at the rate is spread over BODY_GRACE..1.2x: drippers that connected together
        # would otherwise all be refused in the same few milliseconds, and their reconnects with them, a
        # burst of work every BODY_GRACE that sets everyone else's p99.
        grace = BODY_GRACE * (1.0 + BODY_GRACE_SPREAD * random.random())
        first = min(self._body_timeout, grace) if self._min_rate else self._body_timeout
        self._body_timer = self.loop.call_at(self._body_started + first, self._on_body_timer)

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self._body_bytes += len(body)
        if self._held is not None and self.flow.read_paused:
            self._release_held()  # a large body filled the buffer: the app streams the rest

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._body_due = False
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        if self._held is not None:
            self._release_held()

    # -- requests --------------------------------------------------------------------------------------

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        # Called when a request is about to start: at once, or when a pipelined one's turn comes. A
        # request with a body waits for it (see the module docstring) unless its client waits for us.
        if self._from_head and self._has_body and not cycle.waiting_for_100_continue:
            self._held = (cycle, app)
            return
        self._admit(cycle, app)

    def _release_held(self) -> None:
        assert self._held is not None
        cycle, app = self._held
        self._held = None
        self._admit(cycle, app)

    def _close_answered(self) -> None:
        """Close after the app's closing answer; linger when the request's body is still arriving."""
        transport = self.transport
        cycle = self.cycle
        if cycle is None or not cycle.more_body or transport.is_closing():
            transport.close()
            return
        self._closing = True  # what the client still sends of its body is discarded
        self._write_and_linger(b"")

    def _admit(self, cycle: RequestResponseCycle, app: Any) -> None:
        # uvicorn's _start_asgi_task body, repeated to get hold of the task: its done callback balances
        # the admission, even for a task cancelled before its first step.
        guard = self.guard
        admitted = guard._in_flight < guard._max_in_flight
        if admitted:
            guard._in_flight += 1
        else:
            guard.rejected(503, "overloaded")
            self._shed(cycle)
            return
        if cycle.more_body:
            # Admitted before its body arrived (a large body, or 100-continue): if the app answers and
            # closes without reading it all, a plain close would reset the client before it reads the answer.
            cycle.transport = _LingerOnClose(self, cycle.transport)  # type: ignore[assignment]
        # uvicorn's connection_lost tells only the newest parsed request that the client left; a pipelined
        # one still running would write to a closed transport (uvloop raises), so it is told here.
        self._running = cycle
        coro = cycle.run_asgi(app)
        if self.config.reset_contextvars:
            task = self.loop.create_task(coro, context=contextvars.Context())
        else:
            task = self.loop.create_task(coro)
        task.add_done_callback(self.tasks.discard)
        if admitted:
            task.add_done_callback(guard._release)
        self.tasks.add(task)

    def _shed(self, cycle: RequestResponseCycle) -> None:
        """Answer 503 straight to the socket: no task, no ASGI round trip. Shedding must cost far less
        than serving, or a flood of retried requests would starve the admitted ones of the core."""
        rid = request_id(list(cycle.scope["headers"]))
        body = _problem(
            503, f"more than {self.guard.limits.max_concurrency} requests in flight on this listener", rid
        )
        head = [b"HTTP/1.1 503 Service Unavailable\r\n"]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head.append(
            b"content-type: application/problem+json\r\ncontent-length: %d\r\nx-request-id: %s\r\n"
            b"retry-after: 1\r\n%s\r\n"
            % (len(body), rid.encode(), b"" if cycle.keep_alive else b"connection: close\r\n")
        )
        self.transport.write(b"".join(head) + body)
        # What uvicorn's cycle.send does on a complete response: the rest of this request's body is
        # discarded as it arrives, and the connection carries on (or closes) as for any answer.
        cycle.response_started = True
        cycle.response_complete = True
        cycle.message_event.set()
        if not cycle.keep_alive:
            self.transport.close()
        self.on_response_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._deferred is None:
            return
        if self.cycle.response_complete and not self.transport.is_closing():
            answer, self._deferred = self._deferred, None
            self._write_and_linger(answer)

    # -- refusals ---------------------------------------------------------------------------------------

    def _check_head(self) -> None:
        """Size, version and framing of a complete head. httptools refuses most framing conflicts itself;
        this does not rely on it."""
        headers = self.headers
        if not self._head_raw_exact or self._head_raw + self._chunk_len > self._max_head:
            # Only a head that may be over the limit is measured: request-target and fields as parsed.
            size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in headers)
            if size > self._max_head:
                self._refuse(431, "headers_too_large", self._head_too_large())
        version = self.parser.get_http_version()
        if version != "1.1" and version != "1.0":
            self._refuse(505, "http_version", f"HTTP/{version} is not served here; use HTTP/1.1")
        method = self.parser.get_method()
        if method == b"CONNECT":
            # llhttp treats CONNECT as an upgrade and stops parsing the connection: a tunnel is no
            # request to a model, and forwarding it would leave whatever follows unread.
            self._refuse(501, "method", "CONNECT (tunnels) is not served here")
        if self.url == b"*":
            # Asterisk-form (RFC 9112 §3.2.4) asks about the server, not a resource: nothing to forward.
            if method == b"OPTIONS":
                self._refuse(501, "method", "OPTIONS * is not served here; ask about a path")
            self._refuse(400, "target", "the * request-target is only for OPTIONS")
        lengths = 0
        te: bytes | None = None
        declared = b""
        for name, value in headers:
            if name == b"content-length":
                lengths += 1
                declared = value
            elif name == b"transfer-encoding":
                te = value if te is None else te + b"," + value
        self._has_body = te is not None or (lengths == 1 and declared.strip() not in (b"0", b""))
        if lengths > 1:
            self._refuse(400, "framing", "more than one Content-Length")
        if te is not None:
            if lengths:
                self._refuse(400, "framing", "both Content-Length and Transfer-Encoding")
            if version == "1.0":
                self._refuse(400, "framing", "Transfer-Encoding in an HTTP/1.0 request")
            codings = [c.strip().lower() for c in te.split(b",")]
            if codings[-1] != b"chunked":
                # RFC 9112 §6.3: the body's length cannot be known.
                self._refuse(400, "framing", "Transfer-Encoding does not end in chunked")
            if len(codings) > 1:
                # RFC 9112 §6.1; uvicorn would hand the app the still-encoded body.
                self._refuse(501, "transfer_coding", "only the chunked transfer coding is accepted")

    def _head_too_large(self) -> str:
        return f"the request head is over limits.max_header_bytes ({self._max_head} bytes)"

    def _refuse(self, status: int, reason: str, detail: str) -> NoReturn:
        """Stop httptools from inside a callback; ``data_received`` answers."""
        self._refusal = (status, reason, detail)
        raise _Refused(detail)

    def _parse_failed(self, exc: httptools.HttpParserError) -> None:
        if self._refusal is not None:
            status, reason, detail = self._refusal
        elif getattr(self, "url", b"") == b"*" and self.parser.get_method() == b"PRI":
            status, reason, detail = 505, "http_version", _H2_DETAIL
        elif isinstance(exc, httptools.HttpParserCallbackError):
            # One of uvicorn's own callbacks failed on the head (an undecodable path, for one).
            status, reason, detail = 400, "parse_error", "invalid HTTP request: the request target is invalid"
        else:
            # llhttp refuses most framing conflicts itself; its message is all httptools tells of which.
            # Only the label depends on the wording.
            text = str(exc)
            framing = "Content-Length" in text or "Transfer-Encoding" in text
            status, reason, detail = (
                400,
                "framing" if framing else "parse_error",
                f"invalid HTTP request: {text}",
            )
        self._reject(status, reason, detail)

    def _on_timer(self) -> None:
        self._timer = None
        if self._closing or self.transport.is_closing():
            return
        if not self._in_head:
            self.transport.close()  # a fresh connection that never sent a byte
            return
        if self.flow.read_paused:
            # Reading is paused behind a pipelined request: bytes we do not read are not the client's delay.
            self._timer = self.loop.call_later(self._head_timeout, self._on_timer)
            return
        self._reject(408, "head_timeout", f"the request head did not arrive within {self._head_timeout:g}s")

    def _on_body_timer(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if self._closing or self.transport.is_closing() or cycle is None or not cycle.more_body:
            return
        now = self.loop.time()
        if self.flow.read_paused and self._held is None:
            # We are not reading (the app, or the upstream behind it, is slower than the client, or a
            # pipelined request waits its turn): that time is not the client's, so its clock stops.
            self._body_started += now - self._body_checked
        self._body_checked = now
        elapsed = now - self._body_started
        if elapsed >= self._body_timeout:
            self._reject(
                408, "body_timeout", f"the request body did not arrive within {self._body_timeout:g}s"
            )
        elif self._min_rate and elapsed >= BODY_GRACE and self._body_bytes < self._min_rate * elapsed:
            rate = self._body_bytes / elapsed
            self._reject(
                408,
                "body_too_slow",
                f"the request body arrived at {rate:.0f} bytes/s, under limits.min_body_rate "
                f"({self._min_rate} bytes/s)",
            )
        else:
            left = self._body_started + self._body_timeout - now
            self._body_timer = self.loop.call_later(max(0.05, min(1.0, left)), self._on_body_timer)

    def _reject(self, status: int, reason: str, detail: str) -> None:
        """Answer ``status`` as problem+json and close, after any pipelined response still being written."""
        if self._closing:
            return
        self._closing = True
        self._in_head = False
        for timer in (self._timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._body_timer = None
        self.guard.rejected(status, reason)
        log.debug("%s:%s refused with %d: %s", *(self.client or ("?", 0)), status, detail)
        answer = self._render(status, detail)
        cycle = self.cycle
        if self._held is not None:
            self._held = None  # its body failed before it reached the app: nobody else to tell
            self._write_and_linger(answer)
        elif cycle is not None and not cycle.response_complete and cycle.more_body:
            # This request's own body failed while the app reads it: the app is told the client left
            # (it stops, and its slot is freed) and the client hears why now, not after the app gives up.
            cycle.disconnected = True
            cycle.message_event.set()
            if cycle.response_started:
                self.transport.close()  # an answer is under way: nothing valid can be added to it
            else:
                self._write_and_linger(answer)
        elif cycle is not None and not cycle.response_complete:
            self._deferred = answer  # a pipelined request's refusal: written by on_response_complete
        else:
            self._write_and_linger(answer)

    def _render(self, status: int, detail: str) -> bytes:
        rid = request_id(())
        body = _problem(status, detail, rid)
        head = [b"HTTP/1.1 %d %s\r\n" % (status, http.HTTPStatus(status).phrase.encode())]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head.append(
            b"content-type: application/problem+json\r\ncontent-length: %d\r\nx-request-id: %s\r\n"
            b"connection: close\r\n\r\n" % (len(body), rid.encode())
        )
        return b"".join(head) + body

    def _write_and_linger(self, answer: bytes) -> None:
        transport = self.transport
        transport.write(answer)
        if not transport.can_write_eof():
            transport.close()
            return
        # Half-close and keep reading: closing with unread input would send a reset, and the client
        # could lose the answer before reading it. The client's FIN (eof_received) or the timer ends it.
        transport.write_eof()
        self.flow.resume_reading()
        self._linger = self.loop.call_later(LINGER_SECONDS, transport.close)


_H2_DETAIL = "HTTP/2 is not served on this listener (prior-knowledge preface received); use HTTP/1.1"


def _problem(status: int, detail: str, rid: str) -> bytes:
    title, slug = _PROBLEMS[status]
    return problem(status, title, detail, request_id=rid, slug=slug)
