"""Composition root: builds every part from a :class:`Config`, runs both listeners, tears down in order.

Resources live in one ``AsyncExitStack`` and close in reverse: listeners stop accepting first, then
in-flight requests drain, background tasks drain, the access log flushes, and the upstream pools close.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, disable_created_metrics
from starlette.types import ASGIApp

from proxy._tasks import TaskSet
from proxy.admin.api import AdminApi
from proxy.app.generation import DataPlane, Generation, Shared, open_generation
from proxy.app.reload import Reloader
from proxy.clock import utc_now
from proxy.config.model import Config
from proxy.content.pii import Masker, MaskerConfig
from proxy.observe.exchange import Observer, Observers
from proxy.observe.logs import AccessLog
from proxy.observe.metrics import ProxyMetrics, UpstreamCollector, UpstreamGauge
from proxy.observe.tracing import Tracing
from proxy.reports.artifacts import (
    CANARY_PLAN,
    ROLLOUT_DECISION,
    SHADOW_EVAL,
    STAGING_REPORT,
    ArtifactWriter,
)
from proxy.reports.plan import canary_plan, rollout_decisions
from proxy.reports.staging import StagingBook
from proxy.rollout.candidate import check_candidate, load_state
from proxy.rollout.controller import Controller
from proxy.rollout.state import Phase
from proxy.rollout.store import FileStateStore, open_store
from proxy.shadow.book import ShadowBook
from proxy.shadow.capture import TraceCapture
from proxy.shadow.mirror import PairObserver, ShadowPair

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
        store.subscribe(lambda s: metrics.set_rollout(s.weight, s.phase, Phase))
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

        book = ShadowBook(config, metrics, masker=masker)
        book.start_rollout(store.current.rollout_id)
        store.subscribe(lambda s: book.start_rollout(s.rollout_id))
        shadow_tasks = TaskSet("shadow")
        controller = Controller(
            config, store=store, metrics=metrics, tasks=tasks, shadow_report=lambda: book.report(utc_now())
        )
        staging = StagingBook(config, metrics, masker=masker, store=store, candidate=verdict)
        # The one place the exchange observers are registered, in the order they run for each request:
        # the counters and the controller's evidence first, the access line last.
        watching: list[tuple[str, Observer]] = [
            ("metrics", metrics),
            ("evidence", controller.recorder),
            ("staging", staging),
        ]
        if tracing is not None:
            watching.append(("tracing", tracing))
        watching.append(("access_log", access_log))
        observers = Observers(watching, on_failure=metrics.observer_failure)
        on_pair: PairObserver = book.observe
        if config.shadow.capture is not None:
            capture = TraceCapture(config.shadow.capture, masker)
            stack.callback(capture.close)  # after the mirrors have drained (registered later, run earlier)

            def on_pair(pair: ShadowPair) -> None:
                book.observe(pair)
                capture.observe(pair)

        shared = Shared(
            store=store,
            metrics=metrics,
            observers=observers,
            tasks=tasks,
            shadow_tasks=shadow_tasks,
            on_pair=on_pair,
            on_paired=controller.recorder.observe_paired,
            tracing=tracing,
        )
        data = DataPlane(await open_generation(config, verdict, shared))
        registry.register(
            UpstreamCollector(
                lambda: [
                    UpstreamGauge(role, pool.version, pool.in_flight, pool.breaker.state.value)
                    for role, pool in data.current.pools.items()
                ]
            )
        )
        reloader = Reloader(data, shared, audit=access_log.audit)
        pools.push_async_callback(reloader.close)
        # Mirrors in flight get a short grace at shutdown, then are cancelled: never the client's wait.
        stack.push_async_callback(lambda: shadow_tasks.drain(data.current.config.shadow.timeout))
        loop_task = tasks.spawn(controller.run(), name="controller")
        stack.callback(loop_task.cancel)  # first out: no decision is taken while the rest shuts down

        async def decisions_text() -> str:
            return rollout_decisions(await store.decisions(10_000))

        reports = {
            SHADOW_EVAL: lambda: book.report(utc_now()),
            STAGING_REPORT: lambda: staging.report(utc_now()),
            CANARY_PLAN: lambda: canary_plan(data.current.config),
            ROLLOUT_DECISION: decisions_text,
        }
        # Every artifact, written as one folder when a rollout is promoted or rolled back.
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
        {r.name: [s.name for s in r.compat_schemas] for r in config.routes if r.compat_schemas},
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
