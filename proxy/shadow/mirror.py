"""Shadow dispatch: mirror a sampled share of baseline-answered requests to the candidate.

The client never waits on a mirror: ``offer`` decides in a few microseconds and returns at once; the
mirror runs as its own task on its own connection pools (never the data plane's), with its own timeout,
and at most ``shadow.max_in_flight`` at a time: beyond that a mirror is dropped and counted, never
queued, so a hung candidate costs a bounded number of sockets and tasks. A client that disconnects does
not cancel a mirror already sent. When both answers are in, the pair goes to the ``on_pair`` observer
(comparison and evaluation, off the client's path), under a guard that logs and swallows its failures.

A ``shadow.noise_sample`` share of the mirrored requests is also sent to the baseline a second time, so
fields that differ between two baseline answers (ids, timestamps) are learned as noise.

The paired canary (``canary.paired_sample``) is a mirror in reverse: a share of the requests the
*candidate* answers is also sent to the baseline, on the same shadow pool, bound and isolation rules
(credentials stripped, ``x-rollguard-shadow: 1``), and both answers go to ``on_paired`` for the
controller's paired decisions. The client's answer never waits on it either.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from proxy._tasks import TaskSet
from proxy.config.model import ShadowConfig, UpstreamConfig
from proxy.content.contracts import CompiledRoute
from proxy.observe.metrics import ProxyMetrics
from proxy.rollout.state import Phase, RolloutState
from proxy.rollout.store import StateStore
from proxy.upstream.attempt import Attempt, Outgoing, attempt
from proxy.upstream.body import Body
from proxy.upstream.breaker import BreakerPolicy, CircuitBreaker
from proxy.upstream.pool import UpstreamPool

if TYPE_CHECKING:
    from opentelemetry.trace import SpanContext

    from proxy.observe.tracing import Tracing

log = logging.getLogger("rollguard.shadow")

# Stripped from every mirror unless shadow.forward_credentials, beside shadow.credential_headers:
# the standard credential headers and the common vendor and framework ones. A mirror must not act as the
# user on the candidate (a session, a cloud token, a CSRF token), even when the candidate would accept it.
ALWAYS_STRIPPED = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "x-rollguard-token",
        "x-api-key",
        "x-auth-token",
        "x-access-token",
        "x-csrf-token",
        "x-xsrf-token",
        "x-amz-security-token",
        "x-goog-iap-jwt-assertion",
        "x-ms-token-aad-access-token",
        "x-forwarded-access-token",
        "x-forwarded-user",
        "x-id-token",
        "x-session-token",
    }
)


def mirror_share(cfg: ShadowConfig, state: RolloutState) -> float:
    """The share of requests to mirror: the operator's override, else ``shadow.sample``; during the
    shadow phase at least something, since the phase exists to mirror (a configured 0 means all); none to
    a rolled-back candidate unless ``shadow.after_rollback`` or an operator asks again."""
    if state.shadow_sample is not None:
        return state.shadow_sample  # after a rollback, only an operator's PUT /shadow since then
    if state.phase is Phase.ROLLED_BACK and not cfg.after_rollback:
        return 0.0  # rolled back for being slow or broken: mirrors would only load it (shadow.after_rollback)
    if cfg.sample == 0.0 and state.phase is Phase.SHADOW:
        return 1.0
    return cfg.sample


@dataclass(frozen=True, slots=True)
class MirrorRequest:
    route: CompiledRoute
    method: str
    target: str
    headers: list[tuple[str, str]]  # as sent to the baseline (hop-by-hop dropped, forwarding added)
    body: bytes
    doc: Any  # the parsed request body, or MISSING
    link: SpanContext | None = None  # the client's SERVER span, when tracing is on
    sticky: str | None = None  # the request's sticky key value (a capture writes only its pseudonym)


@dataclass(frozen=True, slots=True)
class ShadowPair:
    """What one mirror produced: the client's (baseline) answer, the candidate's, maybe a second baseline."""

    request: MirrorRequest
    baseline: Attempt | None  # None when the client went away before its answer
    candidate: Attempt
    noise: Attempt | None


PairObserver = Callable[[ShadowPair], None]
# A paired canary request: the route, the candidate's answer (the client's), the baseline's.
PairedObserver = Callable[[CompiledRoute, Attempt, Attempt], None]


class ShadowHandle:
    """Links a mirror to the client's answer, which arrives after the mirror has been sent."""

    __slots__ = ("_answer",)

    def __init__(self) -> None:
        self._answer: asyncio.Future[Attempt | None] = asyncio.get_running_loop().create_future()

    def complete(self, answer: Attempt | None) -> None:
        if not self._answer.done():
            self._answer.set_result(answer)

    async def wait(self) -> Attempt | None:
        return await self._answer


class Mirror:
    """Owns the shadow pools and the bounded set of mirrors in flight."""

    def __init__(
        self,
        cfg: ShadowConfig,
        *,
        candidate: UpstreamConfig,
        baseline: UpstreamConfig,
        store: StateStore,
        metrics: ProxyMetrics,
        tasks: TaskSet,
        on_pair: PairObserver,
        candidate_allowed: bool = True,
        rand: Callable[[], float] = random.random,
        tracing: Tracing | None = None,
        paired: float = 0.0,
        on_paired: PairedObserver | None = None,
    ) -> None:
        self.cfg = cfg
        self.paired = paired  # canary.paired_sample
        self.on_paired = on_paired
        self.store = store
        self.metrics = metrics
        self.tasks = tasks
        self.on_pair = on_pair
        self.candidate_allowed = candidate_allowed  # an unverified candidate gets no mirrored traffic either
        self.rand = rand
        self.tracing = tracing
        self.candidate = UpstreamPool(_shadow_upstream(candidate, cfg))
        self.noise = UpstreamPool(_shadow_upstream(baseline, cfg))
        self.in_flight = 0
        self.breaker = CircuitBreaker(
            BreakerPolicy(failures=cfg.breaker_failures, open_for=cfg.breaker_open_for)
        )
        self._strip = frozenset() if cfg.forward_credentials else ALWAYS_STRIPPED | cfg.credential_headers

    def __repr__(self) -> str:
        return f"<Mirror in_flight={self.in_flight}/{self.cfg.max_in_flight} sample={self.sample}>"

    @property
    def sample(self) -> float:
        """The operator's override, else ``shadow.sample``; during the shadow phase at least something:
        the phase exists to mirror, so a configured 0 means "everything" there."""
        return mirror_share(self.cfg, self.store.current) if self.candidate_allowed else 0.0

    async def start(self) -> None:
        await self.candidate.start()
        await self.noise.start()

    async def close(self) -> None:
        await self.candidate.close()
        await self.noise.close()

    def stats(self) -> dict[str, Any]:
        return {
            "breaker": self.breaker.to_json(),
            "sample": self.sample,
            "in_flight": self.in_flight,
            "max_in_flight": self.cfg.max_in_flight,
            "candidate_pool": self.candidate.stats(),
        }

    def offer(self, req: MirrorRequest) -> tuple[ShadowHandle | None, str | None]:
        """Maybe mirror ``req``: the handle to complete with the client's answer (or None) and the
        outcome for the access log (``sent``, ``dropped``, ``skipped``, or None when not sampled)."""
        if req.method not in self.cfg.methods:
            return None, None
        sample = self.sample
        if sample <= 0.0 or (sample < 1.0 and self.rand() >= sample):
            return None, None
        route = req.route.route.name
        if len(req.body) > self.cfg.max_body_bytes:
            self.metrics.shadow_request(route, "skipped")
            return None, "skipped"
        if self.in_flight >= self.cfg.max_in_flight or not self.breaker.allow(time.monotonic()):
            # Full, or the candidate keeps failing mirrors (breaker open): drop, never queue. A hung
            # candidate then costs a probe every few seconds instead of a socket per request.
            self.metrics.shadow_request(route, "dropped")
            return None, "dropped"
        self._hold()
        self.metrics.shadow_request(route, "sent")
        handle = ShadowHandle()
        noise = self.cfg.noise_sample > 0 and self.rand() < self.cfg.noise_sample
        self.tasks.spawn(self._run(req, handle, noise), name="shadow-mirror")
        return handle, "sent"

    def offer_pair(self, req: MirrorRequest) -> ShadowHandle | None:
        """Maybe send candidate-routed ``req`` to the baseline as well (the paired canary): the handle to
        complete with the client's (candidate's) answer, or None. Same bound and rules as a mirror."""
        if self.on_paired is None or req.method not in self.cfg.methods:
            return None
        share = self.paired
        if share <= 0.0 or (share < 1.0 and self.rand() >= share):
            return None
        route = req.route.route.name
        if len(req.body) > self.cfg.max_body_bytes:
            self.metrics.paired_request(route, "skipped")
            return None
        if self.in_flight >= self.cfg.max_in_flight:
            self.metrics.paired_request(route, "dropped")
            return None
        self._hold()
        self.metrics.paired_request(route, "sent")
        handle = ShadowHandle()
        self.tasks.spawn(self._run_pair(req, handle), name="paired-canary")
        return handle

    async def _run_pair(self, req: MirrorRequest, handle: ShadowHandle) -> None:
        try:
            base = await attempt(self.noise, self._outgoing(req, self._headers(req)), budget=None)
            base.release()
            self._account(req.route.route.name, base)
            if base.failed:
                self.metrics.paired_request(req.route.route.name, "failed")
            cand = await handle.wait()
            if cand is None or cand.pool.role != "candidate" or self.on_paired is None:
                return  # the client went away, or a fallback answered it: no candidate answer to pair
            try:
                self.on_paired(req.route, cand, base)
            except Exception:  # an observer never breaks the pair, let alone traffic
                log.exception("paired canary observer failed for route %s", req.route.route.name)
        finally:
            self._let_go()

    async def _run(self, req: MirrorRequest, handle: ShadowHandle, noise: bool) -> None:
        span = None
        try:
            headers = self._headers(req)
            if self.tracing is not None and req.link is not None:
                span = self.tracing.mirror(req.link, req.method, req.route.route.name, self.candidate.version)
                headers = span.headers(headers)
            out = self._outgoing(req, headers)
            sends = [attempt(self.candidate, out, budget=None)]
            if noise:
                sends.append(attempt(self.noise, out, budget=None))
            answers = await asyncio.gather(*sends)
            if span is not None:
                span.end(answers[0])  # the candidate's attempt, not the wait for the client's answer below
                span = None
            for att in answers:
                att.release()
                self._account(req.route.route.name, att)
            self.breaker.record(answers[0].error is None, time.monotonic())
            if answers[0].error is not None:
                self.metrics.shadow_request(req.route.route.name, "failed")
            baseline = await handle.wait()
            pair = ShadowPair(
                request=req, baseline=baseline, candidate=answers[0], noise=answers[1] if noise else None
            )
            try:
                self.on_pair(pair)
            except Exception:  # an observer never breaks the mirror, let alone traffic
                log.exception("shadow comparison failed for route %s", req.route.route.name)
        finally:
            self._let_go()
            if span is not None:
                span.end(None)  # cancelled before the candidate answered

    def _hold(self) -> None:
        self.in_flight += 1
        self.metrics.shadow_in_flight.inc()

    def _let_go(self) -> None:
        self.in_flight -= 1
        self.metrics.shadow_in_flight.dec()

    def _headers(self, req: MirrorRequest) -> list[tuple[str, str]]:
        """The client's headers less the stripped credentials, marked as shadow traffic."""
        headers = [(k, v) for k, v in req.headers if k.lower() not in self._strip]
        headers.append(("x-rollguard-shadow", "1"))
        return headers

    @staticmethod
    def _outgoing(req: MirrorRequest, headers: list[tuple[str, str]]) -> Outgoing:
        body = Body(data=req.body, length=len(req.body))
        target = req.target.encode("latin-1")
        return Outgoing(method=req.method, target=target, headers=headers, body=body, route=req.route)

    def _account(self, route: str, att: Attempt) -> None:
        version = att.pool.version
        self.metrics.exchange(route, "shadow", version).upstream_duration.observe(att.elapsed)
        kind = att.failure_kind
        if att.violation is not None:
            self.metrics.schema_violation(route, "shadow", version, "response")
        if att.compat:  # the candidate's mirrored answer, counted like one it serves
            self.metrics.compat_violation(route, att.compat)
        if kind is not None:
            self.metrics.upstream_error(route, "shadow", version, kind)


def _shadow_upstream(up: UpstreamConfig, cfg: ShadowConfig) -> UpstreamConfig:
    """The mirror's own pool settings: the shadow timeout, at most ``max_in_flight`` connections."""
    # The mirror's own breaker decides when to stop mirroring; the pool's would only double-count.
    return replace(
        up,
        timeout=cfg.timeout,
        read_timeout=cfg.timeout,
        max_connections=cfg.max_in_flight,
        breaker_failures=2**31,
        breaker_failure_rate=2.0,
        retries=0,
    )
