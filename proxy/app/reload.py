"""Live configuration reload (SIGHUP, or ``POST /config/reload``) without dropping a connection.

The data listener calls a :class:`DataPlane`, which hands each request to the current
:class:`Generation`: the forwarder, its upstream pools, the mirror and the edge policy, all built from one
:class:`Config`. A reload re-reads and fully validates the file the proxy was started with, builds a new
generation beside the running one (reusing the pools, mirror and edge policy whose settings did not
change), and swaps it in with one assignment. Requests already in flight finish on the generation they
started on; kept-alive connections send their next request to the new one. The pools no longer used are
closed once the old generation has no request in flight, and at the latest after the old routes' longest
deadline.

What a process cannot take over (listeners, listener-level limits, the state store, the access-log
target, the PII key, the trace exporter) keeps running as it is and is named in a WARNING; see
``reload_diff``. A file that does not validate changes nothing: an ERROR names the key path and the
proxy keeps serving with the config it has. The rollout state is kept, except that a different candidate
(version or signed manifest) resets it to idle, as a restart would (``candidate.reconcile_state``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from proxy._tasks import TaskSet
from proxy.app.generation import Closeable, DataPlane, Generation, Shared, open_generation
from proxy.clock import utc_now
from proxy.config.diff import changed_sections, effective, restart_keys
from proxy.config.load import load_config
from proxy.config.model import Config, ListenerTls
from proxy.config.tls_contexts import ServerTls
from proxy.errors import ConfigError, ReloadFailed
from proxy.rollout.candidate import check_candidate, reconcile_state

log = logging.getLogger("rollguard.reload")

_POLL = 0.05  # seconds between checks of a retiring generation's requests in flight


Applied = Callable[[Generation], None]


class Reloader:
    """Re-reads the config file, applies what changed, retires what is no longer used."""

    def __init__(self, plane: DataPlane, shared: Shared, *, audit: Callable[[dict[str, Any]], None]) -> None:
        self.plane = plane
        self.shared = shared
        self.audit = audit  # the audit log: every reload, applied or not, is an audit line
        self.generation = 1
        self.loaded_at = time.time()
        self.last: dict[str, Any] | None = None  # the last reload's outcome, for /status
        self._applied: list[Applied] = []
        self._lock = asyncio.Lock()
        self._retiring: set[Closeable] = set()
        self._tasks = TaskSet("reload")
        self._tls: list[tuple[str, ServerTls]] = []

    def subscribe(self, fn: Applied) -> None:
        """``fn(generation)`` runs after each successful swap (controller, admin API, metrics...)."""
        self._applied.append(fn)

    def attach_tls(self, *, data: ServerTls | None, admin: ServerTls | None) -> None:
        """The listeners whose TLS material each reload re-reads (built by ``serve``, not ``build``)."""
        self._tls = [(at, t) for at, t in (("tls", data), ("admin.tls", admin)) if t is not None]

    def on_signal(self) -> None:
        """SIGHUP: reload in the background; the signal handler itself must not wait."""
        self._tasks.spawn(self._quietly(), name="config-reload")

    async def _quietly(self) -> None:
        try:
            await self.reload("rollguard")
        except ReloadFailed:
            pass  # logged and counted by reload()

    def status(self) -> dict[str, Any]:
        current = self.plane.current.config
        return {
            "source": None if current.source is None else str(current.source),
            "generation": self.generation,
            "loaded_at": self.loaded_at,
            "retiring": len(self._retiring),
            "last_reload": self.last,
        }

    async def reload(self, actor: str) -> dict[str, Any]:
        """Apply the config file as it is now; raises :class:`ReloadFailed` when nothing was applied."""
        async with self._lock:
            old = self.plane.current
            gen: Generation | None = None
            try:
                new = await self._read(old.config)
                restart = restart_keys(old.config, new)
                config = effective(old.config, new)
                changed = changed_sections(old.config, config)
                verdict = await asyncio.to_thread(check_candidate, config)
                gen = await open_generation(config, verdict, self.shared, previous=old)
                # Before the swap: a new candidate never sees a request at the old rollout's weight.
                reset = await reconcile_state(config, self.shared.store, verdict)
            except Exception as exc:  # whatever failed, nothing is in use yet: the running config stays
                if gen is not None:
                    running = {id(r) for r in old.resources()}
                    for r in gen.resources():
                        if id(r) not in running:
                            await r.close()
                self._reload_tls(old.config)  # the listeners' certificates follow SIGHUP regardless
                await self._record(actor, "error", error=str(exc))
                log.error("config reload failed, the running config stays in force: %s", exc)
                raise ReloadFailed(str(exc)) from exc
            kept = {id(r) for r in gen.resources()}
            self.plane.current = gen
            stale = [r for r in old.resources() if id(r) not in kept]
            if stale:
                self._retiring.update(stale)
                self._tasks.spawn(self._retire(old, stale), name="retire-generation")
            for fn in self._applied:
                fn(gen)
            if config.logging.level != old.config.logging.level:
                # Only when it changed: an embedding process keeps the level it chose for itself.
                logging.getLogger().setLevel(config.logging.level.upper())
            self._reload_tls(config)
            self.generation += 1
            self.loaded_at = time.time()
            if restart:
                log.warning(
                    "config reload: these keys changed and need a restart to take effect: %s",
                    ", ".join(restart),
                )
            log.info(
                "config reloaded (generation %d): %s",
                self.generation,
                ", ".join(changed) if changed else "no changes",
            )
            return await self._record(
                actor, "ok", changed=changed, restart_required=restart, candidate_reset=reset
            )

    async def _read(self, current: Config) -> Config:
        if current.source is None:
            raise ReloadFailed("the running config was not loaded from a file: nothing to re-read")
        try:
            return await asyncio.to_thread(load_config, current.source)
        except ConfigError as exc:
            raise ReloadFailed(f"{current.source}: {exc}") from exc

    def _reload_tls(self, config: Config) -> None:
        wanted: dict[str, ListenerTls | None] = {"tls": config.tls, "admin.tls": config.admin.tls}
        for at, tls in self._tls:
            cfg = wanted[at]
            if cfg is not None and cfg != tls.cfg:
                tls.cfg = cfg  # new file paths; the listener's own settings stay (reload_diff)
            tls.reload()

    async def _record(self, actor: str, outcome: str, **detail: Any) -> dict[str, Any]:
        """Count the reload, and log it to the decision log (durably) and the audit log."""
        metrics = self.shared.metrics
        metrics.config_reloads.labels(outcome).inc()
        if outcome == "ok":
            metrics.config_reload_success.set(self.loaded_at)
        entry = {
            "ts": utc_now(),
            "actor": actor,
            "action": "config_reload",
            "outcome": outcome,
            "generation": self.generation,
            **{k: v for k, v in detail.items() if v is not None},
        }
        changed = detail.get("changed")
        entry["reason"] = (
            f"config reload failed: {detail.get('error')}"
            if outcome == "error"
            else "config reloaded: " + (", ".join(changed) if changed else "no changes")
        )
        self.last = entry
        try:
            await self.shared.store.append(entry)
        except OSError as exc:  # the reload itself stands; only its record is missing
            log.error("config reload not written to the decision log: %s", exc)
        self.audit(entry)
        return entry

    async def _retire(self, old: Generation, stale: list[Closeable]) -> None:
        """Close ``stale`` once ``old`` has no request (or mirror) in flight; at the latest after its
        longest deadline, when whatever is still running would have timed out anyway."""
        cfg = old.config
        bound = max([r.deadline for r in cfg.routes] + [cfg.baseline.timeout + cfg.candidate.timeout])
        bound = max(bound, cfg.shadow.timeout) + 1.0
        loop = asyncio.get_running_loop()
        until = loop.time() + bound
        try:
            # Polled, not signalled: the request path stays free of any wake-up check for this rare wait.
            while loop.time() < until and (  # noqa: ASYNC110
                old.forwarder.budget.active > 0 or (old.mirror in stale and old.mirror.in_flight > 0)
            ):
                await asyncio.sleep(_POLL)
        finally:
            for r in stale:
                try:
                    await r.close()
                finally:
                    self._retiring.discard(r)

    async def close(self) -> None:
        """At shutdown: close what is retiring now (no request is in flight any more), then the current."""
        await self._tasks.drain(0)
        for r in [*self._retiring, *self.plane.current.resources()]:
            await r.close()
        self._retiring.clear()
