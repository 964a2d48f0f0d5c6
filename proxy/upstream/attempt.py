"""One upstream attempt and the relay of its answer to the client.

An attempt sends the request and reads the response head; a JSON answer small enough to inspect
(``limits.inspect_body_bytes``) is read whole, parsed strictly and checked against the route's response
contract *before* a byte reaches the client, so a breaking candidate answer can still be replaced by the
baseline's. Anything else streams through as it arrives. A candidate's inspected 2xx answer is also
checked against the route's ``compat_schemas`` (older schemas consumers still read): recorded on the
attempt for the observers to count, never a failure, never a change to the answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from proxy._types import Role
from proxy.content.contracts import (
    MISSING,
    CompiledRoute,
    InvalidJSON,
    Violation,
    compat_breaches,
    parse_json,
    score_of,
)
from proxy.errors import UpstreamContractError, UpstreamError, problem_for
from proxy.upstream.body import Body, Receive
from proxy.upstream.headers import client_response_headers
from proxy.upstream.pool import TRANSPORT_ERRORS, UpstreamPool, translate

Send = Callable[[dict[str, Any]], Any]
_JSON_TYPES = frozenset({"application/json", "application/problem+json"})


@dataclass(slots=True)
class Progress:
    finishing: bool = False  # the last body message is being sent: a disconnect now changes nothing
    client_gone: bool = False
    watcher: asyncio.Task[None] | None = None  # the disconnect watcher, once armed


@dataclass(slots=True, eq=False)
class Attempt:
    """What one upstream attempt produced. ``status`` is what the client got (set by ``send_answer``)."""

    pool: UpstreamPool
    started: float
    resp: aiohttp.ClientResponse | None = None
    data: bytes | None = None  # the held answer, when it was inspected
    doc: Any = MISSING  # its parsed JSON
    score: float | None = None
    violation: Violation | None = None
    # The route's compat_schemas this answer breaks; None when they were not checked (not a candidate's
    # inspected 2xx answer, or none configured). An observation only: never a failure.
    compat: tuple[str, ...] | None = None
    error: UpstreamError | None = None
    elapsed: float = 0.0  # upstream time: to the head, or to the last byte once relayed
    status: int = 0
    retried: bool = False  # failed, and tried again (the next attempt on the same exchange)

    @property
    def role(self) -> Role:
        return self.pool.role

    @property
    def upstream_status(self) -> int:
        return self.resp.status if self.resp is not None else 0

    @property
    def failure_kind(self) -> str | None:
        """The ``rollguard_upstream_errors_total`` kind of this attempt, None when it succeeded."""
        if self.error is not None:
            return self.error.kind
        if self.violation is not None:
            return "contract"
        if self.resp is not None and self.resp.status >= 500:
            return "http_5xx"
        return None

    @property
    def failed(self) -> bool:
        return self.failure_kind is not None

    def release(self) -> None:
        if self.resp is not None:
            self.resp.release()


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One client request as every attempt at it is sent: same target, headers and (held or streamed) body.

    ``route`` is the compiled route whose response contract and score an inspectable answer is checked
    against; None for an unmatched path (nothing is inspected)."""

    method: str
    target: bytes  # the raw path and query, as the client sent them
    headers: list[tuple[str, str]]
    body: Body
    route: CompiledRoute | None


async def attempt(
    pool: UpstreamPool, out: Outgoing, *, budget: float | None, headers: list[tuple[str, str]] | None = None
) -> Attempt:
    """Send ``out`` once (with ``headers`` instead of its own when given: a traced attempt's); read and check
    an inspectable answer. Upstream failures are returned, not raised; a failure of the client's streamed
    body is raised as that failure."""
    compiled = out.route
    body = out.body
    att = Attempt(pool=pool, started=time.perf_counter())
    try:
        pool.admit()
    except UpstreamError as exc:
        # Refused locally (open circuit, full pool), before any I/O: the breaker learns nothing new, but
        # the attempt is still a failure of this version (the controller counts it against the candidate).
        att.error = exc
        return att
    pool.in_flight += 1
    try:
        att.resp = await pool.send(
            out.method,
            out.target.decode("latin-1"),
            out.headers if headers is None else headers,
            body.payload(),
            budget=budget,
        )
        if (
            compiled is not None
            # compat_schemas hold the candidate's answers only: the baseline's still stream unless the
            # route inspects responses anyway.
            and (compiled.inspects_response or (compiled.compat and pool.role == "candidate"))
            and _inspectable(att.resp, compiled.inspect_bytes)
        ):
            att.data = await _read(att.resp, pool)
            _inspect(att, compiled)
    except UpstreamError as exc:
        if body.failure is not None:
            raise body.failure from exc  # the client's side failed, not the upstream
        att.error = exc
    finally:
        pool.in_flight -= 1
        att.elapsed = time.perf_counter() - att.started
    # The breaker judges the upstream's health: errors and 5xx, not contract breaches (it answered).
    pool.record(att.error is None and (att.resp is None or att.resp.status < 500))
    return att


def _inspect(att: Attempt, compiled: CompiledRoute) -> None:
    assert att.data is not None and att.resp is not None
    if att.resp.status >= 300:
        return  # error answers are judged by their status, not the success contract
    try:
        att.doc = parse_json(att.data)
    except InvalidJSON as exc:
        if compiled.response_contract is not None:
            att.violation = Violation(path="/", message=f"not valid JSON: {exc}")
        if compiled.compat and att.role == "candidate":
            att.compat = tuple(c.name for c in compiled.compat)  # no reader of any schema can use it
        return
    if compiled.response_contract is not None:
        att.violation = compiled.response_contract.check(att.doc)
    # Only the candidate's answers: the metric has no version label, and the baseline is what consumers
    # already read.
    if compiled.compat and att.role == "candidate":
        att.compat = compat_breaches(compiled.compat, att.doc)
    if compiled.route.score is not None:
        att.score = score_of(att.doc, compiled.route.score)


def _inspectable(resp: aiohttp.ClientResponse, cap: int) -> bool:
    """A JSON answer with a declared length within ``cap``: held, checked, then sent."""
    length = resp.content_length
    if length is None or length > cap:
        return False
    ctype = resp.headers.get("content-type", "")
    return ctype.split(";", 1)[0].strip().lower() in _JSON_TYPES


async def _read(resp: aiohttp.ClientResponse, pool: UpstreamPool) -> bytes:
    try:
        return await resp.read()
    except TRANSPORT_ERRORS as exc:
        raise translate(exc, pool.role, pool.cfg) from exc


async def send_answer(
    att: Attempt, send: Send, compiled: CompiledRoute | None, progress: Progress, rid: str
) -> None:
    """Relay the attempt to the client: its answer, or the problem+json its failure maps to.

    A contract breach is passed through (and counted) unless the route enforces the response
    contract, in which case the client gets a 502. Once response bytes have left, a failure can only
    cut the connection short.
    """
    if att.error is None and att.violation is not None and compiled is not None:
        if compiled.route.response_mode == "enforce":
            att.error = UpstreamContractError(
                f"{att.role} answer breaks the route's response contract at {att.violation}", role=att.role
            )
    if att.error is not None:
        await send_problem(send, att.error, rid)
        att.status = att.error.status
        return
    resp = att.resp
    assert resp is not None
    headers = client_response_headers(
        resp.raw_headers, version=att.pool.version.encode(), request_id=rid.encode()
    )
    att.status = resp.status
    await send({"type": "http.response.start", "status": resp.status, "headers": headers})
    if att.data is not None:
        progress.finishing = True
        await send({"type": "http.response.body", "body": att.data})
        return
    try:
        async for chunk in resp.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except TRANSPORT_ERRORS as exc:
        att.error = translate(exc, att.pool.role, att.pool.cfg)
        att.elapsed = time.perf_counter() - att.started
        raise att.error from exc
    progress.finishing = True
    att.elapsed = time.perf_counter() - att.started
    await send({"type": "http.response.body", "body": b""})


async def send_problem(
    send: Send, exc: Any, rid: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Answer with ``exc`` (a ProxyError) as problem+json; a client already gone is not an error."""
    body = problem_for(exc, rid)
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", rid.encode()),
        *(extra or []),
        *exc.headers,
    ]
    if exc.retry_after is not None:
        headers.append((b"retry-after", str(exc.retry_after).encode()))
    try:
        await send({"type": "http.response.start", "status": exc.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    except OSError:
        pass


async def watch_disconnect(receive: Receive, exchange: asyncio.Task[Any] | None, progress: Progress) -> None:
    """Cancel the exchange when the client disconnects; uvicorn would otherwise let it run on.

    uvicorn also answers ``receive()`` with ``http.disconnect`` once the response is complete, hence
    the ``finishing`` flag: only a disconnect before the last body message cancels anything.
    """
    message = await receive()
    if message["type"] == "http.disconnect" and exchange is not None and not progress.finishing:
        progress.client_gone = True
        exchange.cancel()
