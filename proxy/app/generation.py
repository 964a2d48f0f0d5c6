"""One generation of the data plane: the forwarder and the parts built from one :class:`Config`.

:func:`open_generation` is the one assembly of those parts, for start-up (``app/build.py``) and for a
reload (``app/reload.py``) alike; on a reload it takes over the pools, mirror and edge policy whose
settings did not change. :class:`DataPlane` is the data listener's app: one indirection to the current
generation, swapped by a reload with one assignment.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Protocol

from proxy._tasks import TaskSet
from proxy._types import Role
from proxy.config.diff import same_auth
from proxy.config.model import Config, UpstreamConfig
from proxy.dataplane.force import ForcedRole
from proxy.dataplane.forward import Forwarder
from proxy.edge.policy import EdgePolicy
from proxy.edge.throttle import FailureThrottle
from proxy.errors import ConfigError, TlsError
from proxy.observe.exchange import Observers
from proxy.observe.metrics import ProxyMetrics
from proxy.observe.tracing import Tracing
from proxy.rollout.manifest import ManifestVerdict
from proxy.rollout.store import StateStore
from proxy.shadow.mirror import Mirror, PairedObserver, PairObserver
from proxy.upstream.pool import UpstreamPool

_ROLES: tuple[Role, ...] = ("baseline", "candidate")


class Closeable(Protocol):
    async def close(self) -> None: ...


@dataclass(slots=True)
class Shared:
    """What every generation uses and a reload never replaces."""

    store: StateStore
    metrics: ProxyMetrics
    observers: Observers  # every exchange's observers: metrics, evidence, staging, spans, access log
    tasks: TaskSet
    shadow_tasks: TaskSet
    on_pair: PairObserver
    on_paired: PairedObserver | None = None
    tracing: Tracing | None = None
    # Wrong x-rollguard-token values per peer: a reload must not hand a guesser a fresh budget.
    force_throttle: FailureThrottle = field(default_factory=FailureThrottle)


@dataclass(slots=True)
class Generation:
    """The data plane built from one config."""

    config: Config
    verdict: ManifestVerdict
    pools: dict[Role, UpstreamPool]
    mirror: Mirror
    edge: EdgePolicy | None
    forwarder: Forwarder

    def resources(self) -> list[Closeable]:
        return [*self.pools.values(), self.mirror]


class DataPlane:
    """The data listener's ASGI app: each request goes to the current generation's forwarder.

    A plain function returning the forwarder's coroutine, so the indirection costs an attribute lookup,
    not an extra coroutine per request (the listener is told it is ASGI 3).
    """

    __slots__ = ("current",)

    def __init__(self, current: Generation) -> None:
        self.current = current

    def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Awaitable[None]:
        return self.current.forwarder(scope, receive, send)


def _reusable(old: UpstreamConfig, new: UpstreamConfig) -> bool:
    # https:// pools are always rebuilt: a reload re-reads the CA bundle and client certificate too.
    return old == new and not new.url.startswith("https://")


async def open_generation(
    config: Config, verdict: ManifestVerdict, shared: Shared, previous: Generation | None = None
) -> Generation:
    """Build (and start) a generation; with ``previous``, take over what did not change."""
    opened: list[Closeable] = []
    try:
        pools: dict[Role, UpstreamPool] = {}
        for role in _ROLES:
            old = previous.pools[role] if previous is not None else None
            if old is not None and _reusable(old.cfg, config.upstream(role)):
                pools[role] = old
                continue
            pool = pools[role] = UpstreamPool(config.upstream(role))
            opened.append(pool)
            try:
                await pool.start()
            except TlsError as exc:
                raise ConfigError(f"upstreams.{role}.tls.{exc.field}", str(exc)) from exc
        if (
            previous is not None
            and previous.mirror.cfg == config.shadow
            and _reusable(previous.config.candidate, config.candidate)
            and _reusable(previous.config.baseline, config.baseline)
        ):
            mirror = previous.mirror
            mirror.candidate_allowed = verdict.ok
            mirror.paired = config.canary.paired_sample
        else:
            mirror = Mirror(
                config.shadow,
                candidate=config.candidate,
                baseline=config.baseline,
                store=shared.store,
                metrics=shared.metrics,
                tasks=shared.shadow_tasks,
                on_pair=shared.on_pair,
                candidate_allowed=verdict.ok,
                tracing=shared.tracing,
                paired=config.canary.paired_sample,
                on_paired=shared.on_paired,
            )
            opened.append(mirror)
            try:
                await mirror.start()
            except TlsError as exc:
                raise ConfigError(f"upstreams.candidate.tls.{exc.field}", str(exc)) from exc
        metrics = shared.metrics
        edge = (
            previous.edge
            if previous is not None and same_auth(previous.config, config)
            else EdgePolicy.from_config(
                config, on_auth_failure=metrics.auth_failure, on_rate_limited=metrics.rate_limit
            )
        )
        forwarder = Forwarder(
            config,
            pools=pools,
            store=shared.store,
            observers=shared.observers,
            tasks=shared.tasks,
            mirror=mirror,
            edge=edge,
            forced=ForcedRole(
                (t.token for t in config.admin.tokens if t.role == "operator"),
                throttle=shared.force_throttle,
                on_wrong_token=metrics.auth_failure,
            ),
            tracing=shared.tracing,
            candidate_allowed=verdict.ok,
        )
    except BaseException:
        for r in opened:
            await r.close()
        raise
    return Generation(
        config=config, verdict=verdict, pools=pools, mirror=mirror, edge=edge, forwarder=forwarder
    )
