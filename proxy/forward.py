"""The terminal data-plane ASGI app: read, choose, forward, fall back, stream back.

Per request: take or mint ``x-request-id``; refuse upgrades (501); match a route; read the body (held
whole up to ``limits.replay_body_bytes``); choose baseline or candidate (forced by an operator, sticky,
or random); check the request contract; send one attempt; when the candidate's attempt fails (connect,
timeout, reset, 5xx, contract) and the body is held, answer with the baseline within what is left of the
route's deadline; stream the answer back. A sampled share of baseline-answered requests is mirrored to
the candidate (``mirror.py``) without the client ever waiting on it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ._tasks import TaskSet
from .attempt import (
    Attempt,
    CompiledRoute,
    Progress,
    attempt,
    send_answer,
    send_problem,
    watch_disconnect,
)
from .body import Body, ClientGone, Receive, declared_length, read_body
from .config import Config
from .contracts import MISSING, InvalidJSON, Violation, parse_json
from .controller import Recorder
from .edge import EdgePolicy
from .errors import BadRequest, BodyTooLarge, NotImplementedProtocol, ProxyError, UpstreamError
from .force import ForcedRole
from .headers import TrustedPeers, request_id, upstream_request_headers
from .logs import AccessLog
from .metrics import ProxyMetrics
from .mirror import Mirror, MirrorRequest
from .retry import RetryBudget, retryable
from .routing import Role, RouteTable, choose, sticky_value
from .staging import StagingBook
from .store import StateStore
from .tracing import RequestTrace, Tracing
from .upstream import UpstreamPool

Scope = dict[str, Any]
Message = dict[str, Any]
Send = Callable[[Message], Any]

_DRAIN_ALLOWANCE = 1024 * 1024
_WATCH_AFTER = 0.25  # seconds


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
        mirror: Mirror | None = None,
        recorder: Recorder | None = None,
        candidate_allowed: bool = True,
        edge: EdgePolicy | None = None,
        rand: Callable[[], float] = random.random,
        tracing: Tracing | None = None,
        staging: StagingBook | None = None,
    ) -> None:
        self.config = config
        self.pools = pools
        self.store = store
        self.metrics = metrics
        self.access_log = access_log
        self.tasks = tasks
        self.mirror = mirror
        self.recorder = recorder
        # False when security.require_signed_candidate refused the candidate's manifest: then no request
        # of any kind (weighted, forced) reaches it; the mirror is told the same.
        self.candidate_allowed = candidate_allowed
        self.rand = rand
        self.edge = edge  # client auth and rate limits; None when neither is configured
        self.tracing = tracing  # None when tracing is off: one `is None` check per request
        self.staging = staging  # staging_report.json's latency sketches and request samples
        self.table = RouteTable(config.routes)
        self.compiled = {
            r.name: CompiledRoute.build(r, config.limits.inspect_body_bytes) for r in config.routes
        }
        self._forced = ForcedRole(t.token for t in config.admin.tokens if t.role == "operator")
        self._fallback = config.canary.fallback_to_baseline
        self._trusted = TrustedPeers(config.forwarded.trusted)
        self.budget = RetryBudget()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan is driven by app.py; websockets arrive as plain HTTP and get a 501
        started = time.perf_counter()
        self.budget.active += 1
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        rid = request_id(headers)
        method: str = scope["method"]
        path: str = scope["path"]
        route = self.table.match(method, path)
        compiled = self.compiled[route.name] if route is not None else None
        route_name = route.name if route is not None else "unmatched"
        log: dict[str, Any] = {
            "log": "access",
            "ts": time.time(),
            "request_id": rid,
            "method": method,
            "path": path,
            "route": route_name,
        }
        if scope.get("query_string"):
            log["query"] = scope["query_string"].decode("latin-1")
        client = scope.get("client")
        if client:
            log["client"] = client[0]
        trace = self.tracing.begin(headers, method, route, rid, log) if self.tracing is not None else None
        status = 500
        answered: Attempt | None = None
        body: Body | None = None
        breach: Violation | None = None
        try:
            if scope.get("http_version") == "2" or _is_upgrade(headers):
                raise NotImplementedProtocol("WebSocket upgrades and HTTP/2 are not proxied by this version")
            if self.edge is not None:  # before the body: an unknown client cannot make us buffer one
                self.edge.admit(scope, route_name, log)
            limits = self.config.limits
            body = await read_body(
                receive,
                declared=declared_length(headers, limits.max_body_bytes),
                max_bytes=limits.max_body_bytes,
                hold_bytes=limits.replay_body_bytes,
                on_stream=lambda: self.metrics.body_streamed.labels(route_name, "request").inc(),
            )
            doc = self._parse_request(compiled, body)
            role = self._forced(headers) or self._choose(compiled, headers, doc)
            if not self.candidate_allowed:
                role = "baseline"
            if compiled is not None:
                breach = self._check_request(compiled, doc, role)
                if breach is not None and compiled.route.mode == "enforce":
                    raise BadRequest(f"request body breaks the route's contract at {breach}")
            if isinstance(doc, InvalidJSON):
                doc = MISSING  # observe mode forwards it; nothing downstream can use it
            answered = await self._exchange(
                scope, receive, send, compiled, route_name, role, body, doc, rid, log, trace
            )
            status = answered.status
        except ClientGone:
            status = 499  # nginx's "client closed request": logged, never sent
        except ProxyError as exc:
            status = exc.status
            log["error"] = exc.detail
            await send_problem(send, exc, rid, _closing(exc))
        finally:
            self.budget.active -= 1
            elapsed = time.perf_counter() - started
            if answered is not None and answered.role is not None:
                version = answered.pool.version
                self.metrics.count_request(route_name, answered.role, version, status)
                self.metrics.exchange(route_name, answered.role, version).request_duration.observe(elapsed)
                log.update(role=answered.role, version=version)
            elif status != 499:
                # Answered by the proxy before any model was involved: never counts against a version.
                self.metrics.local_response(route_name, status)
            log.update(status=status, latency_ms=round(elapsed * 1000, 3))
            if self.staging is not None:
                self.staging.request(route_name, scope, status, answered, elapsed, body, breach, rid)
            if trace is not None:
                trace.end(status, log)
            self.access_log.record(log)

    def _parse_request(self, compiled: CompiledRoute | None, body: Body) -> Any:
        """The parsed JSON body when the route needs it (contract, ``json:`` key, segment).

        Returns MISSING when not needed or not held, or the :class:`InvalidJSON` error for a body that
        is not strict JSON (judged by ``_check_request`` once the version it was meant for is known).
        """
        if compiled is None or not compiled.needs_json:
            return MISSING
        if not body.held:
            if compiled.request_contract is not None and compiled.route.mode == "enforce":
                raise BodyTooLarge(
                    f"body is over limits.replay_body_bytes ({self.config.limits.replay_body_bytes} bytes), "
                    "too large to check against the route's contract"
                )
            return MISSING
        try:
            return parse_json(body.data)
        except InvalidJSON as exc:
            return exc

    def _check_request(self, compiled: CompiledRoute, doc: Any, role: Role) -> Violation | None:
        """Count a request-contract breach, charged to the version it was meant for, and return it."""
        contract = compiled.request_contract
        if contract is None or doc is MISSING:
            return None
        where = (
            Violation("/", f"not valid JSON: {doc}") if isinstance(doc, InvalidJSON) else contract.check(doc)
        )
        if where is not None:
            self.metrics.schema_violation(compiled.route.name, role, self.pools[role].version, "request")
        return where

    def _choose(self, compiled: CompiledRoute | None, headers: list[tuple[bytes, bytes]], doc: Any) -> Role:
        if compiled is None:
            return "baseline"
        state = self.store.current
        sticky = compiled.route.sticky_key
        key = sticky_value(sticky, headers, doc) if sticky is not None else None
        return choose(state.weight_bp, state.rollout_id, key, self.rand)

    async def _exchange(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        compiled: CompiledRoute | None,
        route: str,
        role: Role,
        body: Body,
        doc: Any,
        rid: str,
        log: dict[str, Any],
        trace: RequestTrace | None,
    ) -> Attempt:
        """One attempt, a fallback if the candidate's fails, then the answer to the client."""
        client = scope.get("client")
        peer = client[0] if client else None
        out_headers = upstream_request_headers(
            scope["headers"],
            peer=peer,
            scheme=scope.get("scheme", "http"),
            trusted=self._trusted(peer),
            request_id=rid,
            content_length=body.outgoing_length(),
        )
        target = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        method: str = scope["method"]
        deadline = compiled.route.deadline if compiled is not None else None
        started = time.perf_counter()
        progress = Progress()
        # Most exchanges end long before a disconnect watcher would matter: arm one (a task that waits
        # on receive()) only for exchanges still running after _WATCH_AFTER, so the common case pays for
        # a timer, not a task.
        timer = (
            asyncio.get_running_loop().call_later(
                _WATCH_AFTER, self._watch, receive, asyncio.current_task(), progress
            )
            if body.held
            else None
        )
        shadow = None
        if (
            role == "baseline"
            and self.mirror is not None
            and compiled is not None
            and body.held
            and self.mirror.sample > 0.0
        ):
            shadow, outcome = self.mirror.offer(
                MirrorRequest(
                    route=compiled,
                    method=method,
                    target=target.decode("latin-1"),
                    headers=out_headers,
                    body=body.data,
                    doc=doc,
                    link=trace.span_context if trace is not None else None,
                )
            )
            if outcome is not None:
                log["shadow"] = outcome
        answer: Attempt | None = None
        try:
            answer = await self._attempt(
                role, compiled, route, method, target, out_headers, body, deadline, started, trace
            )
            if answer.failed and role == "candidate" and self._fallback and body.held:
                self._account(route, answer, compiled)
                self.metrics.fallback(route, answer.failure_kind or "unknown")
                log["fallback"] = answer.failure_kind
                answer.release()
                left = None if deadline is None else max(deadline - (time.perf_counter() - started), 0.001)
                answer = await self._attempt(
                    "baseline",
                    compiled,
                    route,
                    method,
                    target,
                    out_headers,
                    body,
                    left,
                    time.perf_counter(),
                    trace,
                )
            try:
                await send_answer(answer, send, compiled, progress, rid)
            except UpstreamError as exc:
                # Bytes already reached the client: all that is left is to end the connection short
                # (uvicorn closes it when the app returns with the response incomplete).
                log["error"] = exc.detail
            return answer
        except asyncio.CancelledError:
            if progress.client_gone:
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()  # our own cancellation, turned into an outcome
                raise ClientGone() from None
            raise
        finally:
            if timer is not None:
                timer.cancel()
            if progress.watcher is not None:
                progress.watcher.cancel()
            if answer is not None:
                answer.release()
                self._account(route, answer, compiled)
                log["upstream_ms"] = round(answer.elapsed * 1000, 3)
            if shadow is not None:
                shadow.complete(answer)

    async def _attempt(
        self,
        role: Role,
        compiled: CompiledRoute | None,
        route: str,
        method: str,
        target: bytes,
        headers: list[tuple[str, str]],
        body: Body,
        deadline: float | None,
        started: float,
        trace: RequestTrace | None = None,
    ) -> Attempt:
        """One attempt, retried while it is safe, the deadline allows it and the retry budget has room.

        Safe means: the body is held (replayable), nothing reached the client yet, the candidate is not
        about to be replaced by a fallback anyway, and either the connection was refused before anything
        was sent, or the request is idempotent (by method, or by ``Idempotency-Key`` where the route
        allows it). Backoff is fully jittered exponential; the failed tries count as upstream errors.
        """
        pool = self.pools[role]
        left = deadline
        att = await _send(trace, 0, pool, compiled, method, target, headers, body, left)
        tries = 0
        while (
            att.failed
            and tries < pool.cfg.retries
            and body.held
            and retryable(att, method, headers, compiled)
            and not (role == "candidate" and self._fallback)
        ):
            delay = random.uniform(
                0.0, min(pool.cfg.retry_backoff_cap, pool.cfg.retry_backoff_base * 2**tries)
            )
            if deadline is not None:
                left = deadline - (time.perf_counter() - started) - delay
                if left <= 0.01:
                    break
            if not self.budget.acquire(pool.cfg.retry_budget):
                break
            try:
                self._account(route, att, compiled)
                self.metrics.retries.labels(route, role, att.failure_kind or "unknown").inc()
                att.release()
                await asyncio.sleep(delay)
                att = await _send(trace, tries + 1, pool, compiled, method, target, headers, body, left)
            finally:
                self.budget.release()
            tries += 1
        return att

    def _watch(self, receive: Receive, exchange: asyncio.Task[Any] | None, progress: Progress) -> None:
        if not progress.finishing:
            progress.watcher = self.tasks.spawn(
                watch_disconnect(receive, exchange, progress), name="disconnect-watch"
            )

    def _account(self, route: str, att: Attempt, compiled: CompiledRoute | None) -> None:
        """Upstream latency and failure metrics of one attempt, exactly once; routed attempts are also
        evidence for the canary controller (a candidate failure a fallback hid included)."""
        if att.accounted:
            return
        att.accounted = True
        if self.recorder is not None and compiled is not None:
            self.recorder.observe(
                att.pool.role, att.elapsed, att.failure_kind, att.score, compiled.route.decision_threshold
            )
        if self.staging is not None:
            self.staging.attempt(route, att.pool.role, att.elapsed)
        version = att.pool.version
        self.metrics.exchange(route, att.pool.role, version).upstream_duration.observe(att.elapsed)
        if att.violation is not None:
            self.metrics.schema_violation(route, att.pool.role, version, "response")
        if att.failure_kind is not None:
            self.metrics.upstream_error(route, att.pool.role, version, att.failure_kind)


def _send(
    trace: RequestTrace | None,
    resend: int,
    pool: UpstreamPool,
    compiled: CompiledRoute | None,
    method: str,
    target: bytes,
    headers: list[tuple[str, str]],
    body: Body,
    budget: float | None,
) -> Awaitable[Attempt]:
    """One attempt; under its CLIENT span when the request is traced (``resend``: 0 first, then 1...)."""
    if trace is None:
        return attempt(pool, compiled, method, target, headers, body, budget)
    return trace.attempt(resend, pool, compiled, method, target, headers, body, budget)


def _is_upgrade(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(k == b"upgrade" for k, _ in headers)


def _closing(exc: ProxyError) -> list[tuple[bytes, bytes]]:
    """``connection: close`` when the rest of the request is not worth reading."""
    if isinstance(exc, NotImplementedProtocol) or (
        isinstance(exc, BodyTooLarge) and exc.unread > _DRAIN_ALLOWANCE
    ):
        # Smaller leftovers are read and discarded by the server, so the client reads our answer
        # instead of a reset while it is still sending.
        return [(b"connection", b"close")]
    return []
