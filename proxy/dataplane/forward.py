"""The terminal data-plane ASGI app: read, choose, forward, fall back, stream back.

Per request: take or mint ``x-request-id``; refuse upgrades (501); match a route; admit the client (edge
policy); read the body (held whole up to ``limits.replay_body_bytes``); choose baseline or candidate
(forced by an operator, sticky, or random); check the request contract; send one attempt (retried when
safe, ``retry.py``); when the candidate's attempt fails (connect, timeout, reset, 5xx, contract) and the
body is held, answer with the baseline within what is left of the route's deadline; stream the answer
back. A sampled share of baseline-answered requests is mirrored to the candidate (``shadow/mirror.py``)
without the client ever waiting on it.

What happened is written on one :class:`~proxy.observe.exchange.Exchange` per request, handed to the
observers (metrics, evidence, staging, spans, access log) when the request is over: this module knows
the exchange and the observers, not what each of them does with it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from proxy._tasks import TaskSet
from proxy._types import Role
from proxy.config.model import Config
from proxy.content.contracts import MISSING, CompiledRoute, InvalidJSON, Violation, parse_json
from proxy.dataplane.force import ForcedRole
from proxy.dataplane.retry import RetryBudget, send_with_retries
from proxy.dataplane.routing import RouteTable, choose, sticky_value
from proxy.edge.policy import EdgePolicy
from proxy.errors import (
    BadRequest,
    BodyTooLarge,
    ClientGone,
    NotImplementedProtocol,
    ProxyError,
    UpstreamError,
)
from proxy.observe.exchange import Exchange, Observers
from proxy.observe.tracing import Tracing
from proxy.rollout.store import StateStore
from proxy.shadow.mirror import Mirror, MirrorRequest
from proxy.upstream.attempt import Attempt, Outgoing, Progress, send_answer, send_problem, watch_disconnect
from proxy.upstream.body import DRAIN_ALLOWANCE, Receive, declared_length, read_request_body
from proxy.upstream.headers import TrustedPeers, request_id, upstream_request_headers
from proxy.upstream.pool import UpstreamPool

Scope = dict[str, Any]
Message = dict[str, Any]
Send = Callable[[Message], Any]

_WATCH_AFTER = 0.25  # seconds


class Forwarder:
    """The data-plane ASGI callable. Everything it uses is injected by ``app/generation.py``."""

    def __init__(
        self,
        config: Config,
        *,
        pools: Mapping[Role, UpstreamPool],
        store: StateStore,
        observers: Observers,
        tasks: TaskSet,
        mirror: Mirror | None = None,
        edge: EdgePolicy | None = None,
        forced: ForcedRole | None = None,
        tracing: Tracing | None = None,
        candidate_allowed: bool = True,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.config = config
        self.pools = pools
        self.store = store
        self.observers = observers  # read every exchange once it is over
        self.tasks = tasks
        self.mirror = mirror
        self.edge = edge  # client auth and rate limits; None when neither is configured
        self.tracing = tracing  # opens each exchange's spans; None when tracing is off
        # False when security.require_signed_candidate refused the candidate's manifest: then no request
        # of any kind (weighted, forced) reaches it; the mirror is told the same.
        self.candidate_allowed = candidate_allowed
        self.rand = rand
        self.table = RouteTable(config.routes)
        self.compiled = {
            r.name: CompiledRoute.build(r, config.limits.inspect_body_bytes) for r in config.routes
        }
        # The operator's force header; the generation passes one whose throttle outlives reloads.
        self._forced = forced or ForcedRole(t.token for t in config.admin.tokens if t.role == "operator")
        self._fallback = config.canary.fallback_to_baseline
        self._trusted = TrustedPeers(config.forwarded.trusted)
        self.budget = RetryBudget()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan is driven by app/; websockets arrive as plain HTTP and get a 501
        self.budget.active += 1
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        method: str = scope["method"]
        path: str = scope["path"]
        route = self.table.match(method, path)
        compiled = self.compiled[route.name] if route is not None else None
        ex = Exchange(
            request_id=request_id(headers),
            method=method,
            path=path,
            route_name=route.name if route is not None else "unmatched",
            route=compiled,
            scope=scope,
        )
        if self.tracing is not None:
            self.tracing.begin(ex)
        try:
            if scope.get("http_version") == "2" or _is_upgrade(headers):
                raise NotImplementedProtocol("WebSocket upgrades and HTTP/2 are not proxied by this version")
            if self.edge is not None:  # before the body: an unknown client cannot make us buffer one
                self.edge.admit(ex)
            limits = self.config.limits
            body = ex.body = await read_request_body(
                receive,
                declared=declared_length(headers, limits.max_body_bytes),
                max_bytes=limits.max_body_bytes,
                hold_bytes=limits.replay_body_bytes,
            )
            doc = self._parse_request(compiled, body.held, body.data)
            role: Role = self._forced(headers, ex) or self._choose(ex, headers, doc)
            if not self.candidate_allowed:
                role = "baseline"
            ex.role = role
            ex.version = self.pools[role].version
            if compiled is not None:
                ex.breach = _check_request(compiled, doc)
                if ex.breach is not None and compiled.route.mode == "enforce":
                    raise BadRequest(f"request body breaks the route's contract at {ex.breach}")
            # observe mode forwards a body that is not JSON; nothing downstream can use it
            ex.doc = MISSING if isinstance(doc, InvalidJSON) else doc
            ex.answered = await self._exchange(ex, receive, send)
            ex.status = ex.answered.status
        except ClientGone:
            ex.status = 499  # nginx's "client closed request": logged, never sent
        except ProxyError as exc:
            ex.status = exc.status
            ex.error = exc.detail
            await send_problem(send, exc, ex.request_id, _closing(exc))
        finally:
            self.budget.active -= 1
            ex.elapsed = time.perf_counter() - ex.started
            self.observers.on_exchange(ex)

    def _parse_request(self, compiled: CompiledRoute | None, held: bool, data: bytes) -> Any:
        """The parsed JSON body when the route needs it (contract, ``json:`` key, segment).

        Returns MISSING when not needed or not held, or the :class:`InvalidJSON` error for a body that
        is not strict JSON (judged by ``_check_request`` once the version it was meant for is known).
        """
        if compiled is None or not compiled.needs_json:
            return MISSING
        if not held:
            if compiled.request_contract is not None and compiled.route.mode == "enforce":
                raise BodyTooLarge(
                    f"body is over limits.replay_body_bytes ({self.config.limits.replay_body_bytes} bytes), "
                    "too large to check against the route's contract"
                )
            return MISSING
        try:
            return parse_json(data)
        except InvalidJSON as exc:
            return exc

    def _choose(self, ex: Exchange, headers: list[tuple[bytes, bytes]], doc: Any) -> Role:
        compiled = ex.route
        if compiled is None:
            return "baseline"
        state = self.store.current
        sticky = compiled.route.sticky_key
        key = ex.sticky = sticky_value(sticky, headers, doc) if sticky is not None else None
        return choose(state.weight_bp, state.rollout_id, key, self.rand)

    async def _exchange(self, ex: Exchange, receive: Receive, send: Send) -> Attempt:
        """One attempt, a fallback if the candidate's fails, then the answer to the client."""
        scope = ex.scope
        body = ex.body
        role = ex.role
        assert body is not None and role is not None
        compiled = ex.route
        peer = ex.peer
        target = scope.get("raw_path") or ex.path.encode()
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        out = Outgoing(
            method=ex.method,
            target=target,
            headers=upstream_request_headers(
                scope["headers"],
                peer=peer,
                scheme=scope.get("scheme", "http"),
                trusted=self._trusted(peer),
                request_id=ex.request_id,
                content_length=body.outgoing_length(),
                credential=ex.credential_header,
            ),
            body=body,
            route=compiled,
        )
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
        mirror = self.mirror
        # A baseline answer may be mirrored to the candidate, a candidate answer paired with the baseline's.
        if (
            mirror is not None
            and compiled is not None
            and body.held
            and (mirror.sample if role == "baseline" else mirror.paired) > 0.0
        ):
            req = MirrorRequest(
                route=compiled,
                method=ex.method,
                target=target.decode("latin-1"),
                headers=out.headers,
                body=body.data,
                doc=ex.doc,
                link=ex.trace.span_context if ex.trace is not None else None,
                sticky=ex.sticky,
            )
            if role == "baseline":
                shadow, ex.shadow = mirror.offer(req)
            else:
                shadow = mirror.offer_pair(req)
        # A candidate that a fallback would replace is not retried: the baseline answers sooner.
        falls_back = role == "candidate" and self._fallback and body.held
        answer: Attempt | None = None
        try:
            answer = await send_with_retries(
                ex,
                self.pools[role],
                out,
                deadline=deadline,
                started=started,
                retries=None if falls_back else self.budget,
            )
            if answer.failed and falls_back:
                ex.fallback = answer.failure_kind or "unknown"
                answer.release()
                left = None if deadline is None else max(deadline - (time.perf_counter() - started), 0.001)
                answer = await send_with_retries(
                    ex,
                    self.pools["baseline"],
                    out,
                    deadline=left,
                    started=time.perf_counter(),
                    retries=self.budget,
                )
            try:
                await send_answer(answer, send, compiled, progress, ex.request_id)
            except UpstreamError as exc:
                # Bytes already reached the client: all that is left is to end the connection short
                # (uvicorn closes it when the app returns with the response incomplete).
                ex.error = exc.detail
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
            if shadow is not None:
                shadow.complete(answer)

    def _watch(self, receive: Receive, exchange: asyncio.Task[Any] | None, progress: Progress) -> None:
        if not progress.finishing:
            progress.watcher = self.tasks.spawn(
                watch_disconnect(receive, exchange, progress), name="disconnect-watch"
            )


def _check_request(compiled: CompiledRoute, doc: Any) -> Violation | None:
    """The request contract's breach, if any (charged to the chosen version by the observers)."""
    contract = compiled.request_contract
    if contract is None or doc is MISSING:
        return None
    if isinstance(doc, InvalidJSON):
        return Violation("/", f"not valid JSON: {doc}")
    return contract.check(doc)


def _is_upgrade(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(k == b"upgrade" for k, _ in headers)


def _closing(exc: ProxyError) -> list[tuple[bytes, bytes]]:
    """``connection: close`` when the rest of the request is not worth reading."""
    if isinstance(exc, NotImplementedProtocol) or (
        isinstance(exc, BodyTooLarge) and exc.unread > DRAIN_ALLOWANCE
    ):
        # Smaller leftovers are read and discarded by the server, so the client reads our answer
        # instead of a reset while it is still sending.
        return [(b"connection", b"close")]
    return []
