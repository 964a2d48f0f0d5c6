"""Composition root: builds every part from a :class:`Config`, runs both listeners, tears down in order.

Resources live in one ``AsyncExitStack`` and close in reverse: listeners stop accepting first, then
in-flight requests drain, background tasks drain, the access log flushes, and the upstream pools close.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import secrets
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry, disable_created_metrics
from starlette.types import ASGIApp

from ._tasks import TaskSet
from .admin import AdminApi
from .artifacts import ArtifactWriter
from .clock import utc_now
from .config import Config, LimitsConfig, Listen
from .controller import Controller
from .edge import EdgePolicy
from .forward import Forwarder
from .logs import AccessLog
from .manifest import Verdict, load_public_key, verify
from .metrics import Listener, ProxyMetrics
from .mirror import Mirror
from .pii import Masker, MaskerConfig
from .protocol import HeadLimits, ListenerGuard, OnReject
from .reports import canary_plan, rollout_decisions
from .rollout import initial, reconcile_candidate
from .routing import Role, weight_to_bp
from .shadow import ShadowBook
from .staging import StagingBook
from .store import FileStateStore, open_store
from .tls import ServerTls
from .tracing import Tracing
from .upstream import UpstreamPool

log = logging.getLogger("rollguard")


@dataclass(slots=True)
class Runtime:
    """Everything a running proxy holds; built by :func:`build`."""

    config: Config
    registry: CollectorRegistry
    metrics: ProxyMetrics
    store: FileStateStore
    pools: dict[Role, UpstreamPool]
    access_log: AccessLog
    tasks: TaskSet
    forwarder: Forwarder
    admin: ASGIApp  # the Starlette admin app; wrapped by OpenTelemetry's ASGI middleware when tracing
    tracing: Tracing | None = None


def check_candidate(config: Config) -> Verdict:
    """The candidate's release manifest, when one is configured or required (PRODUCT §12)."""
    if config.candidate.manifest is None:
        return Verdict(ok=not config.security.require_signed_candidate, reason="no manifest configured")
    trusted = {k.name: load_public_key(k.key) for k in config.security.trusted_keys}
    verdict = verify(config.candidate.manifest, trusted, expected_version=config.candidate.version)
    if not config.security.require_signed_candidate and not verdict.ok:
        # Recorded and shown, but only enforced when security.require_signed_candidate says so.
        return Verdict(ok=True, reason=f"not enforced: {verdict.reason}", digest=verdict.digest)
    return verdict


async def _load_state(config: Config, store: FileStateStore, verdict: Verdict) -> None:
    """Load (or create) the rollout state; a different candidate (or manifest) resets it to idle."""
    digest = verdict.digest
    state = await store.load(
        lambda: initial(config.candidate.version, weight_to_bp(config.canary.weight), utc_now(), digest)
    )
    reset = reconcile_candidate(state, config.candidate.version, utc_now(), digest)
    if reset is not None:
        log.warning("%s", reset.reason)
        await store.update(
            lambda s: reconcile_candidate(s, config.candidate.version, utc_now(), digest) or s,
            {"ts": utc_now(), "actor": "rollguard", "action": "reset", "reason": reset.reason},
        )
    if not verdict.ok:
        log.error("candidate %s blocked: %s", config.candidate.version, verdict.reason)
        await store.append(
            {
                "ts": utc_now(),
                "actor": "rollguard",
                "action": "candidate_blocked",
                "reason": verdict.reason,
                "manifest": verdict.to_json(),
            }
        )


@asynccontextmanager
async def build(config: Config) -> AsyncIterator[Runtime]:
    """Build and start every part; on exit close them in reverse order."""
    async with AsyncExitStack() as stack:
        # The exposition format only: rollguard's counters need no *_created twin series.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        registry = CollectorRegistry()
        metrics = ProxyMetrics(registry)
        metrics.prime(
            [r.name for r in config.routes],
            {"baseline": config.baseline.version, "candidate": config.candidate.version},
        )
        store = open_store(config.state.path)
        store.subscribe(lambda s: metrics.set_rollout(s.weight, s.phase))
        verdict = check_candidate(config)
        await _load_state(config, store, verdict)

        pools: dict[Role, UpstreamPool] = {}
        for role in ("baseline", "candidate"):
            pool = UpstreamPool(config.upstream(role))
            await pool.start()
            stack.push_async_callback(pool.close)
            pools[role] = pool

        tasks = TaskSet("background")
        stack.push_async_callback(tasks.drain, 5.0)  # last: after the log below has stopped its flusher
        masker = build_masker(config)
        access_log = AccessLog(
            config.logging.access_log, masker=masker, sample_success=config.logging.sample_success
        )
        access_log.start(tasks)
        stack.push_async_callback(access_log.close)
        tracing = None
        if config.tracing.enabled:
            tracing = Tracing(config.tracing, mask=masker.mask_text)
            # Closed after the mirrors below have drained, so their spans are flushed too.
            stack.push_async_callback(tracing.close)

        book = ShadowBook(config, metrics, masker=masker.mask_text)
        book.start_rollout(store.current.rollout_id)
        store.subscribe(lambda s: book.start_rollout(s.rollout_id))
        shadow_tasks = TaskSet("shadow")
        mirror = Mirror(
            config.shadow,
            candidate=config.candidate,
            baseline=config.baseline,
            store=store,
            metrics=metrics,
            tasks=shadow_tasks,
            on_pair=book.observe,
            candidate_allowed=verdict.ok,
            tracing=tracing,
        )
        await mirror.start()
        stack.push_async_callback(mirror.close)
        # Mirrors in flight get a short grace at shutdown, then are cancelled: never the client's wait.
        stack.push_async_callback(shadow_tasks.drain, config.shadow.timeout)

        controller = Controller(
            config, store=store, metrics=metrics, tasks=tasks, shadow_report=lambda: book.report(utc_now())
        )
        loop_task = tasks.spawn(controller.run(), name="controller")
        stack.callback(loop_task.cancel)  # first out: no decision is taken while the rest shuts down

        staging = StagingBook(config, metrics, masker=masker, store=store, candidate=verdict)
        forwarder = Forwarder(
            config=config,
            pools=pools,
            store=store,
            metrics=metrics,
            access_log=access_log,
            tasks=tasks,
            mirror=mirror,
            recorder=controller.recorder,
            candidate_allowed=verdict.ok,
            edge=EdgePolicy.from_config(
                config, on_auth_failure=metrics.auth_failure, on_rate_limited=metrics.rate_limit
            ),
            tracing=tracing,
            staging=staging,
        )

        async def decisions_text() -> str:
            return rollout_decisions(await store.decisions(10_000))

        reports = {
            "shadow_eval.json": lambda: book.report(utc_now()),
            "staging_report.json": lambda: staging.report(utc_now()),
            "canary_plan.md": lambda: canary_plan(config),
            "rollout_decision.txt": decisions_text,
        }
        # Every artifact, written as one folder when a rollout is promoted or rolled back (PRODUCT §8).
        writer = ArtifactWriter(config.reports_dir, reports, keep=config.reports.keep, tasks=tasks)
        store.subscribe(writer.watch(store.current))
        admin = AdminApi(
            config=config,
            store=store,
            pools=pools,
            registry=registry,
            reports=reports,
            audit=access_log.audit,
            masker=masker,
            shadow_stats=mirror.stats,
            controller=controller,
            on_rollback=lambda reason: metrics.rollbacks.labels(reason).inc(),
            candidate=verdict,
        ).app()
        yield Runtime(
            config=config,
            registry=registry,
            metrics=metrics,
            store=store,
            pools=pools,
            access_log=access_log,
            tasks=tasks,
            forwarder=forwarder,
            admin=admin if tracing is None else tracing.instrument_admin(admin),
            tracing=tracing,
        )


def build_masker(config: Config) -> Masker:
    """The PII masker; without ``logging.pii.key`` pseudonyms are stable only until a restart."""
    pii = config.logging.pii
    key = pii.key
    if key is None:
        log.warning("logging.pii.key is not set: PII pseudonyms use a random key and change on restart")
        key = secrets.token_bytes(32)
    return Masker(
        MaskerConfig(
            key=key, ip_addresses=pii.ip_addresses, json_fields=pii.json_fields, header_names=pii.header_names
        )
    )


def bind(listen: Listen) -> socket.socket:
    """Bind the listening socket ourselves: a clear error on a taken port, and port 0 works."""
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    try:
        sock = socket.create_server((listen.host, listen.port), family=family, backlog=2048)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot listen on {listen}: {exc.strerror}") from exc
    sock.setblocking(False)
    return sock


def bound(sock: socket.socket) -> Listen:
    host, port = sock.getsockname()[:2]
    return Listen(host=host, port=port)


def _uvicorn(
    app: Any,
    *,
    graceful: int,
    limits: LimitsConfig,
    name: str,
    on_reject: OnReject | None = None,
    tls: ServerTls | None = None,
) -> uvicorn.Server:
    """One listener's server: uvicorn's httptools protocol with rollguard's head and concurrency limits.

    ``on_reject(status, reason)`` counts what the listener answers itself (431, 408, 400, 501, 505, 503),
    below the app: those never reach the forwarder and count against no model version. With ``tls`` the
    listener serves HTTPS with that context, which uvicorn passes to ``loop.create_server(ssl=...)``.
    """
    guard = ListenerGuard(
        HeadLimits(
            max_header_bytes=limits.max_header_bytes,
            head_timeout=limits.head_timeout,
            max_concurrency=limits.max_concurrency,
        ),
        on_reject=on_reject,
        name=name,
    )
    cfg = uvicorn.Config(
        app,
        http=guard.protocol,
        ws="none",
        lifespan="off",
        access_log=False,
        log_config=None,
        proxy_headers=False,
        server_header=False,
        date_header=False,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=graceful,
        # uvicorn's hook for a context built elsewhere: ours, kept for the listener's life (reloads
        # switch certificates inside it, see tls.ServerTls).
        ssl_context_factory=(lambda _cfg, _default: tls.context) if tls is not None else None,
    )
    cfg.load()
    server = uvicorn.Server(cfg)
    server.lifespan = cfg.lifespan_class(cfg)
    return server


async def serve(
    config: Config,
    *,
    on_ready: Callable[[Listen, Listen], None] | None = None,
    stop: asyncio.Event | None = None,
    handle_signals: bool = True,
) -> None:
    """Run the data plane and the admin listener until SIGTERM/SIGINT (or ``stop`` is set).

    ``handle_signals=False`` leaves signal handling to the caller (an embedding process, the demo, tests).
    """
    stop = stop or asyncio.Event()
    async with AsyncExitStack() as sockets:
        # Bound before anything is built, closed on every way out (a failed build included).
        data_sock = sockets.enter_context(bind(config.listen))
        admin_sock = sockets.enter_context(bind(config.admin.listen))
        # Contexts first: a certificate that cannot be loaded stops the start before anything is built.
        data_tls = ServerTls(config.tls) if config.tls is not None else None
        admin_tls = ServerTls(config.admin.tls) if config.admin.tls is not None else None
        async with build(config) as rt:
            limits = rt.config.limits
            servers = [
                _uvicorn(
                    rt.forwarder,
                    graceful=10,
                    limits=limits,
                    name="data",
                    on_reject=lambda code, why: rt.metrics.rejected(Listener.DATA, code, why),
                    tls=data_tls,
                ),
                _uvicorn(
                    rt.admin,
                    graceful=2,
                    limits=limits,
                    name="admin",
                    on_reject=lambda code, why: rt.metrics.rejected(Listener.ADMIN, code, why),
                    tls=admin_tls,
                ),
            ]
            loop = asyncio.get_running_loop()
            signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP) if handle_signals else ()
            for sig in signals[:2]:
                loop.add_signal_handler(sig, stop.set)
            if handle_signals:
                loop.add_signal_handler(signal.SIGHUP, reload_tls, data_tls, admin_tls)
            try:
                await servers[0].startup(sockets=[data_sock])
                await servers[1].startup(sockets=[admin_sock])
                tune_gc()
                if on_ready is not None:
                    on_ready(bound(data_sock), bound(admin_sock))
                await stop.wait()
            finally:
                for sig in signals:
                    loop.remove_signal_handler(sig)
                log.info("stopping: no new connections; draining in-flight requests")
                for server in servers:
                    server.should_exit = True
                await asyncio.gather(
                    *(
                        s.shutdown(sockets=[sock])
                        for s, sock in zip(servers, (data_sock, admin_sock), strict=True)
                        if getattr(s, "servers", None) is not None
                    )
                )


def reload_tls(*listeners: ServerTls | None) -> None:
    """SIGHUP: re-read the listeners' certificates, keys and client CAs; nothing else is reloaded."""
    log.warning(
        "SIGHUP: live config reload is not available in this version; restart to apply"
        " (TLS certificates, keys and client CAs are reloaded)"
    )
    for tls in listeners:
        if tls is not None:
            tls.reload()


def tune_gc() -> None:
    """Move everything built at start-up out of the collector's way, and collect young objects less often.

    Every request allocates a few dozen short-lived objects; with the default gen-0 threshold (700) the
    collector runs every few requests and re-walks the long-lived start-up objects each time. Measured
    on the benchmark's small JSON POST: about 8% more requests per second with this.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def announcer(config: Config) -> Callable[[Listen, Listen], None]:
    """The start-up line operators (and tests) read to learn the bound ports and schemes."""
    data_scheme = "https" if config.tls is not None else "http"
    admin_scheme = "https" if config.admin.tls is not None else "http"

    def announce(data: Listen, admin: Listen) -> None:
        line = f"rollguard listening data={data_scheme}://{data} admin={admin_scheme}://{admin}"
        print(line, file=sys.stderr, flush=True)

    return announce


def run(config: Config) -> None:
    """Blocking entry point for ``rollguard serve``: uvloop when available."""
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported platform
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(config, on_ready=announcer(config)))
