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
import time
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
from .candidate import check_candidate, load_state
from .clock import utc_now
from .config import Config, LimitsConfig, Listen
from .controller import Controller
from .logs import AccessLog
from .metrics import Listener, ProxyMetrics
from .pii import Masker, MaskerConfig
from .protocol import HeadLimits, ListenerGuard, OnReject
from .reload import DataPlane, Generation, Reloader, Shared, open_generation
from .reports import canary_plan, rollout_decisions
from .shadow import ShadowBook
from .staging import StagingBook
from .store import FileStateStore, open_store
from .tls import ServerTls
from .tracing import Tracing

log = logging.getLogger("rollguard")


@dataclass(slots=True)
class Runtime:
    """Everything a running proxy holds; built by :func:`build`. The data-plane parts built from the
    config (forwarder, pools, mirror) are ``data.current`` and change on a reload."""

    registry: CollectorRegistry
    metrics: ProxyMetrics
    store: FileStateStore
    access_log: AccessLog
    tasks: TaskSet
    data: DataPlane  # the data listener's ASGI app
    admin: ASGIApp  # the Starlette admin app; wrapped by OpenTelemetry's ASGI middleware when tracing
    reloader: Reloader
    tracing: Tracing | None = None

    @property
    def config(self) -> Config:
        return self.data.current.config


@asynccontextmanager
async def build(config: Config) -> AsyncIterator[Runtime]:
    """Build and start every part; on exit close them in reverse order."""
    async with AsyncExitStack() as stack:
        # The exposition format only: rollguard's counters need no *_created twin series.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        registry = CollectorRegistry()
        metrics = ProxyMetrics(registry)
        metrics.config_reload_success.set(time.time())
        prime(metrics, config)
        store = open_store(config.state.path)
        store.subscribe(lambda s: metrics.set_rollout(s.weight, s.phase))
        verdict = check_candidate(config)
        await load_state(config, store, verdict)

        # Last out: every generation's upstream and mirror pools, once nothing can use them any more.
        pools = await stack.enter_async_context(AsyncExitStack())
        tasks = TaskSet("background")
        stack.push_async_callback(tasks.drain, 5.0)  # after the log below has stopped its flusher
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
        controller = Controller(
            config, store=store, metrics=metrics, tasks=tasks, shadow_report=lambda: book.report(utc_now())
        )
        staging = StagingBook(config, metrics, masker=masker, store=store, candidate=verdict)
        shared = Shared(
            store=store,
            metrics=metrics,
            access_log=access_log,
            tasks=tasks,
            shadow_tasks=shadow_tasks,
            recorder=controller.recorder,
            on_pair=book.observe,
            tracing=tracing,
            staging=staging,
        )
        data = DataPlane(await open_generation(config, verdict, shared))
        reloader = Reloader(data, shared)
        pools.push_async_callback(reloader.close)
        # Mirrors in flight get a short grace at shutdown, then are cancelled: never the client's wait.
        stack.push_async_callback(lambda: shadow_tasks.drain(data.current.config.shadow.timeout))
        loop_task = tasks.spawn(controller.run(), name="controller")
        stack.callback(loop_task.cancel)  # first out: no decision is taken while the rest shuts down

        async def decisions_text() -> str:
            return rollout_decisions(await store.decisions(10_000))

        reports = {
            "shadow_eval.json": lambda: book.report(utc_now()),
            "staging_report.json": lambda: staging.report(utc_now()),
            "canary_plan.md": lambda: canary_plan(data.current.config),
            "rollout_decision.txt": decisions_text,
        }
        # Every artifact, written as one folder when a rollout is promoted or rolled back (PRODUCT §8).
        writer = ArtifactWriter(config.reports_dir, reports, keep=config.reports.keep, tasks=tasks)
        store.subscribe(writer.watch(store.current))
        api = AdminApi(
            config=config,
            store=store,
            pools=data.current.pools,
            registry=registry,
            reports=reports,
            audit=access_log.audit,
            masker=masker,
            shadow_stats=lambda: data.current.mirror.stats(),
            controller=controller,
            on_rollback=lambda reason: metrics.rollbacks.labels(reason).inc(),
            candidate=verdict,
            config_reload=reloader,
        )

        def applied(gen: Generation) -> None:
            """What a reload tells the parts that outlive generations."""
            cfg = gen.config
            prime(metrics, cfg)
            book.config = cfg
            staging.reconfigure(cfg, gen.verdict)
            controller.reconfigure(cfg)
            api.reconfigure(cfg, pools=gen.pools, candidate=gen.verdict)
            access_log.sample_success = cfg.logging.sample_success
            if tracing is not None:
                tracing.set_sample_ratio(cfg.tracing.sample_ratio)

        reloader.subscribe(applied)
        admin = api.app()
        yield Runtime(
            registry=registry,
            metrics=metrics,
            store=store,
            access_log=access_log,
            tasks=tasks,
            data=data,
            admin=admin if tracing is None else tracing.instrument_admin(admin),
            reloader=reloader,
            tracing=tracing,
        )


def prime(metrics: ProxyMetrics, config: Config) -> None:
    metrics.prime(
        [r.name for r in config.routes],
        {"baseline": config.baseline.version, "candidate": config.candidate.version},
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
        interface="asgi3",  # not guessed: the data plane's app is a function that returns a coroutine
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
    """Run the data plane and the admin listener until SIGTERM/SIGINT (or ``stop`` is set); SIGHUP
    reloads the config (``reload.py``) and the listeners' TLS material.

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
            rt.reloader.attach_tls(data=data_tls, admin=admin_tls)
            limits = config.limits  # listener-level: a reload leaves these as they started
            servers = [
                _uvicorn(
                    rt.data,
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
                loop.add_signal_handler(signal.SIGHUP, rt.reloader.on_signal)
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
