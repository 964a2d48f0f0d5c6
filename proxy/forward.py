"""The terminal data-plane ASGI app: read, choose, forward, stream back.

Per request: take or mint ``x-request-id``; refuse upgrades (501); match a route; read the body,
holding it whole only up to ``limits.replay_body_bytes`` (beyond that it streams, unchecked); choose
baseline or candidate (forced by an operator, sticky, or random); forward through the upstream's pool;
stream the answer back with hop-by-hop headers dropped and ``x-rollguard-version`` added; record
metrics and one access-log line. A client that goes away cancels the upstream call.
"""

from __future__ import annotations

import asyncio
import hmac
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from ._tasks import TaskSet
from .config import Config, RouteConfig
from .contracts import MISSING, Contract, InvalidJSON, parse_json
from .errors import BadRequest, BodyTooLarge, NotImplementedProtocol, ProxyError, UpstreamError, problem_for
from .headers import client_response_headers, is_trusted, request_id, upstream_request_headers
from .logs import AccessLog
from .metrics import ProxyMetrics
from .routing import Role, RouteTable, choose, needs_body, sticky_value
from .store import StateStore
from .upstream import UpstreamPool, translate

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[Message], Any]

_CHUNK = 64 * 1024
_DRAIN_ALLOWANCE = 1024 * 1024
_JSON_TYPES = (b"application/json", b"application/problem+json")


class ClientGone(Exception):
    """The client disconnected before the exchange finished."""


@dataclass(slots=True)
class Body:
    """A client body: held whole (``data``), or a held prefix plus a stream of the rest."""

    data: bytes
    rest: AsyncIterator[bytes] | None = None
    length: int | None = None  # the declared Content-Length, when there was one
    # Why the client's side of a streamed body failed (too large, client gone). aiohttp wraps whatever
    # the body iterator raises as an upstream error; this keeps the real cause.
    failure: Exception | None = None

    @property
    def held(self) -> bool:
        return self.rest is None


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    route: RouteConfig
    request_contract: Contract | None
    response_contract: Contract | None

    @property
    def needs_json(self) -> bool:
        return self.request_contract is not None or needs_body(self.route.sticky_key)

    @property
    def inspects_response(self) -> bool:
        return self.response_contract is not None or self.route.score is not None


class Forwarder:
    """The data-plane ASGI callable. Everything it uses is injected by ``app.build``."""

    def __init__(
        self,
        *,
        config: Config,
        pools: Mapping[Role, UpstreamPool],
        store: StateStore,
        metrics: ProxyMetrics,
        access_log: AccessLog,
        tasks: TaskSet,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.config = config
        self.pools = pools
        self.store = store
        self.metrics = metrics
        self.access_log = access_log
        self.tasks = tasks
        self.rand = rand
        self.table = RouteTable(config.routes)
        self.compiled = {
            r.name: CompiledRoute(
                route=r,
                request_contract=Contract.from_file(r.request_schema) if r.request_schema else None,
                response_contract=Contract.from_file(r.response_schema) if r.response_schema else None,
            )
            for r in config.routes
        }
        self._operator_tokens = [t.token.encode() for t in config.admin.tokens if t.role == "operator"]
        self._versions = {role: pool.version.encode() for role, pool in pools.items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan is driven by app.py; websockets are refused below as plain HTTP
        started = time.perf_counter()
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        rid = request_id(headers)
        method: str = scope["method"]
        path: str = scope["path"]
        compiled = self._match(method, path)
        route_name = compiled.route.name if compiled else "unmatched"
        log: dict[str, Any] = {
            "ts": time.time(),
            "request_id": rid,
            "method": method,
            "path": path,
            "route": route_name,
        }
        status = 500
        role: Role | None = None  # None: answered by the proxy itself, before any upstream was chosen
        try:
            if scope.get("http_version") == "2" or _is_upgrade(headers):
                raise NotImplementedProtocol("WebSocket upgrades and HTTP/2 are not proxied by this version")
            body = await self._read_body(headers, receive, route_name)
            doc = self._check_request(compiled, body, route_name) if compiled else MISSING
            role = self._choose(compiled, headers, doc)
            status = await self._exchange(scope, receive, send, compiled, route_name, role, body, rid, log)
        except ClientGone:
            status = 499  # nginx's "client closed request": logged, never sent
        except ProxyError as exc:
            status = exc.status
            log["error"] = exc.detail
            await _send_problem(send, exc, rid)
        finally:
            elapsed = time.perf_counter() - started
            # Local-origin answers (400/413/501...) are labelled role="local": they never count
            # against either model version.
            role_label = role or "local"
            version = self.pools[role].version if role else "local"
            if status != 499:
                self.metrics.count_request(route_name, role_label, version, status)
            self.metrics.exchange(route_name, role_label, version).request_duration.observe(elapsed)
            log.update(status=status, role=role_label, version=version, latency_ms=round(elapsed * 1000, 3))
            self.access_log.record(log)

    def _match(self, method: str, path: str) -> CompiledRoute | None:
        route = self.table.match(method, path)
        return self.compiled[route.name] if route is not None else None

    async def _read_body(self, headers: list[tuple[bytes, bytes]], receive: Receive, route: str) -> Body:
        """Read the client body, whole up to ``replay_body_bytes``; enforce ``max_body_bytes``."""
        limits = self.config.limits
        declared: int | None = None
        for k, v in headers:
            if k == b"content-length":
                try:
                    declared = int(v)
                except ValueError as exc:
                    raise BadRequest("Content-Length is not a number") from exc
                if declared > limits.max_body_bytes:
                    raise BodyTooLarge(
                        f"body of {declared} bytes is over the limit of {limits.max_body_bytes}"
                    )
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limits.max_body_bytes:
                raise BodyTooLarge(f"body is over the limit of {limits.max_body_bytes} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return Body(data=b"".join(chunks), length=declared)
            if size > limits.replay_body_bytes:
                self.metrics.body_streamed.labels(route, "request").inc()
                body = Body(data=b"".join(chunks), length=declared)
                body.rest = self._stream_rest(receive, size, body)
                return body

    async def _stream_rest(self, receive: Receive, already: int, body: Body) -> AsyncIterator[bytes]:
        size = already
        limit = self.config.limits.max_body_bytes
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                body.failure = ClientGone()
                raise body.failure
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                body.failure = BodyTooLarge(f"body is over the limit of {limit} bytes")
                raise body.failure
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return

    def _check_request(self, compiled: CompiledRoute, body: Body, route: str) -> Any:
        """Parse the body when the route needs it (contract, json: sticky key); enforce the contract."""
        if not compiled.needs_json or not body.held:
            return MISSING
        try:
            doc = parse_json(body.data)
        except InvalidJSON as exc:
            if compiled.request_contract is not None and compiled.route.mode == "enforce":
                raise BadRequest(f"request body is not valid JSON: {exc}") from exc
            return MISSING
        if compiled.request_contract is not None:
            violation = compiled.request_contract.check(doc)
            if violation is not None:
                self.metrics.schema_violation(route, "baseline", self.pools["baseline"].version, "request")
                if compiled.route.mode == "enforce":
                    raise BadRequest(f"request body breaks the route's contract at {violation}")
        return doc

    def _choose(self, compiled: CompiledRoute | None, headers: list[tuple[bytes, bytes]], doc: Any) -> Role:
        forced = self._forced(headers)
        if forced is not None:
            return forced
        if compiled is None:
            return "baseline"
        state = self.store.current
        key = sticky_value(compiled.route.sticky_key, headers, doc) if compiled.route.sticky_key else None
        return choose(state.weight_bp, state.rollout_id, key, self.rand)

    def _forced(self, headers: list[tuple[bytes, bytes]]) -> Role | None:
        """``x-rollguard-force`` counts only with a valid operator token; otherwise it is ignored."""
        force = token = None
        for k, v in headers:
            if k == b"x-rollguard-force":
                force = v
            elif k == b"x-rollguard-token":
                token = v
        if force not in (b"baseline", b"candidate") or token is None:
            return None
        valid = False
        for known in self._operator_tokens:
            valid |= hmac.compare_digest(known, token)  # no early exit: constant time over the set
        return ("candidate" if force == b"candidate" else "baseline") if valid else None

    async def _exchange(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        compiled: CompiledRoute | None,
        route: str,
        role: Role,
        body: Body,
        rid: str,
        log: dict[str, Any],
    ) -> int:
        """Forward to ``role`` and stream the answer back; returns the status sent to the client."""
        pool = self.pools[role]
        client = scope.get("client")
        peer = client[0] if client else None
        out_headers = upstream_request_headers(
            scope["headers"],
            peer=peer,
            scheme=scope.get("scheme", "http"),
            trusted=is_trusted(peer, self.config.forwarded.trusted),
            request_id=rid,
            content_length=_outgoing_length(body),
        )
        target = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        payload: bytes | AsyncIterator[bytes] | None = (
            (body.data or None if body.length is None else body.data)
            if body.held
            else _chain(body.data, body.rest)
        )
        deadline = compiled.route.deadline if compiled else None
        progress = _Progress()
        watcher = (
            self.tasks.spawn(
                _watch_disconnect(receive, asyncio.current_task(), progress), name="disconnect-watch"
            )
            if body.held
            else None
        )
        sent_head = False
        up_started = time.perf_counter()
        pool.in_flight += 1
        try:
            resp = await pool.send(
                scope["method"], target.decode("latin-1"), out_headers, payload, budget=deadline
            )
            try:
                resp_headers = client_response_headers(
                    resp.raw_headers, version=self._versions[role], request_id=rid.encode()
                )
                if (
                    compiled is not None
                    and compiled.inspects_response
                    and _inspectable(resp, self.config.limits.inspect_body_bytes)
                ):
                    data = await _read(resp, pool)
                    self._check_response(compiled, route, role, data)
                    await send(
                        {"type": "http.response.start", "status": resp.status, "headers": resp_headers}
                    )
                    sent_head = True
                    progress.finishing = True
                    await send({"type": "http.response.body", "body": data})
                else:
                    await send(
                        {"type": "http.response.start", "status": resp.status, "headers": resp_headers}
                    )
                    sent_head = True
                    await _stream(resp, send, pool, progress)
            finally:
                resp.release()
        except UpstreamError as exc:
            if body.failure is not None:
                raise body.failure from exc  # the client's side failed, not the upstream
            self.metrics.upstream_error(route, role, pool.version, exc.kind)
            if sent_head:
                log["error"] = exc.detail
                raise ClientGone() from exc  # bytes already reached the client: all we can do is cut it
            raise
        except asyncio.CancelledError:
            if progress.client_gone:
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()  # our own cancellation, turned into an outcome
                raise ClientGone() from None
            raise
        finally:
            pool.in_flight -= 1
            if watcher is not None:
                watcher.cancel()
            elapsed = time.perf_counter() - up_started
            self.metrics.exchange(route, role, pool.version).upstream_duration.observe(elapsed)
            log["upstream_ms"] = round(elapsed * 1000, 3)
        if resp.status >= 500:
            self.metrics.upstream_error(route, role, pool.version, "http_5xx")
        return resp.status

    def _check_response(self, compiled: CompiledRoute, route: str, role: Role, data: bytes) -> None:
        """Count contract breaches of a held response; the answer passes through unchanged."""
        if compiled.response_contract is None:
            return
        try:
            doc = parse_json(data)
        except InvalidJSON:
            self.metrics.schema_violation(route, role, self.pools[role].version, "response")
            return
        if compiled.response_contract.check(doc) is not None:
            self.metrics.schema_violation(route, role, self.pools[role].version, "response")


def _outgoing_length(body: Body) -> int | None:
    """Content-Length to send: the held size, the client's declared one, or none (chunked / no body)."""
    if body.held:
        return len(body.data) if body.data or body.length is not None else None
    return body.length


def _is_upgrade(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(k == b"upgrade" for k, _ in headers)


def _inspectable(resp: aiohttp.ClientResponse, cap: int) -> bool:
    """A JSON answer with a declared length within ``cap``: held, checked, then sent."""
    length = resp.content_length
    ctype = resp.headers.get("content-type", "").split(";", 1)[0].strip().encode()
    return length is not None and length <= cap and ctype in _JSON_TYPES


async def _read(resp: aiohttp.ClientResponse, pool: UpstreamPool) -> bytes:
    try:
        return await resp.read()
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise translate(exc, pool.role, pool.cfg) from exc


async def _stream(resp: aiohttp.ClientResponse, send: Send, pool: UpstreamPool, progress: _Progress) -> None:
    """Relay the body as it arrives (SSE and chunked included); never holds more than one chunk."""
    try:
        async for chunk in resp.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise translate(exc, pool.role, pool.cfg) from exc
    progress.finishing = True
    await send({"type": "http.response.body", "body": b""})


async def _chain(first: bytes, rest: AsyncIterator[bytes] | None) -> AsyncIterator[bytes]:
    if first:
        yield first
    if rest is not None:
        async for chunk in rest:
            yield chunk


@dataclass(slots=True)
class _Progress:
    finishing: bool = False  # the last body message is being sent: a disconnect now changes nothing
    client_gone: bool = False


async def _watch_disconnect(
    receive: Receive, exchange: asyncio.Task[Any] | None, progress: _Progress
) -> None:
    """Cancel the exchange when the client disconnects; uvicorn would otherwise let it run on.

    uvicorn also answers ``receive()`` with ``http.disconnect`` once the response is complete, hence
    the ``finishing`` flag: only a disconnect before the last body message cancels anything.
    """
    message = await receive()
    if message["type"] == "http.disconnect" and exchange is not None and not progress.finishing:
        progress.client_gone = True
        exchange.cancel()


async def _send_problem(send: Send, exc: ProxyError, rid: str) -> None:
    body = problem_for(exc, rid)
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", rid.encode()),
    ]
    if exc.retry_after is not None:
        headers.append((b"retry-after", str(exc.retry_after).encode()))
    if isinstance(exc, NotImplementedProtocol) or (
        isinstance(exc, BodyTooLarge) and exc.unread > _DRAIN_ALLOWANCE
    ):
        # Reading the rest is not worth it: close. Smaller leftovers are read and discarded by the
        # server, so the client reads our answer instead of a reset while it is still sending.
        headers.append((b"connection", b"close"))
    try:
        await send({"type": "http.response.start", "status": exc.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    except OSError:
        pass
