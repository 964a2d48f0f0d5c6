"""The canary controller: evidence from the data plane, a tick per window, a trip-wire per request.

Three parts, each thin around the pure core (``analysis``, ``gates``, ``tripwire``, ``rollout``):

- :class:`Recorder` is fed every upstream attempt on a routed request (never the proxy's own local
  answers, never mirrors) and accumulates both versions' evidence since the current step began. Each
  candidate outcome also goes through the trip-wire, which can roll back between ticks.
- :class:`Controller.tick` closes a window every ``canary.interval``: in ``canary`` it judges the gates
  and decides PROCEED/HOLD/ROLLBACK/PROMOTE/WAIT; in ``shadow`` it judges the shadow evaluation. Each
  decision is one state-store update, so it is persisted and logged (with its gate values) or not at all.
- A change of rollout, phase or step (by the controller or an operator) starts the evidence afresh.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

from proxy._tasks import TaskSet
from proxy.clock import iso_at
from proxy.config.model import Config
from proxy.errors import IllegalTransition
from proxy.observe.metrics import ProxyMetrics
from proxy.rollout.decide import Decision, GateResult, StepPolicy, StepProgress, decide
from proxy.rollout.evidence import Evidence, VersionWindow
from proxy.rollout.figures import VersionFigures, live_figures, mirror_figures
from proxy.rollout.gates import GatePolicy, judge
from proxy.rollout.history import WindowHistory, WindowRecord
from proxy.rollout.needs import eta_seconds, evidence_needed
from proxy.rollout.recorder import Recorder
from proxy.rollout.shadow_gate import judge_shadow
from proxy.rollout.state import (
    Phase,
    RolloutState,
    advance,
    promote,
    record_window,
    rollback,
    wait_for_operator,
)
from proxy.rollout.store import StateStore

log = logging.getLogger("rollguard.controller")


class Controller:
    """The side loop. ``run`` ticks every ``canary.interval``; ``trip`` rolls back between ticks."""

    def __init__(
        self,
        config: Config,
        *,
        store: StateStore,
        metrics: ProxyMetrics,
        tasks: TaskSet,
        shadow_report: Callable[[], dict[str, Any]],
        clock: Callable[[], float] = time.time,
        offload: bool = True,
    ) -> None:
        self.config = config
        # Judge a copy of the evidence in a worker thread, so traffic goes on meanwhile; False judges it
        # in place on the caller's thread, for a replay that adds nothing while a tick runs.
        self.offload = offload
        self.store = store
        self.metrics = metrics
        self.tasks = tasks
        self.shadow_report = shadow_report
        self.clock = clock
        self.policy = GatePolicy.from_config(config.canary)
        self.steps = StepPolicy.from_config(config.canary)
        self.recorder = Recorder(config, on_trip=self.trip, clock=clock)
        self.last: Decision | None = None
        self.last_gates: tuple[GateResult, ...] = ()
        self.last_needs: dict[str, Any] | None = None  # what the last inconclusive step still needed
        self.history = WindowHistory()  # the windows judged recently, for the status page's charts
        self._tripping = False
        self._published_version: str | None = None  # whose gate gauges /metrics exports
        self._publish_thresholds()
        self._reconfigured = asyncio.Event()
        self._marker = self._key(store.current)
        self.recorder.reset(armed=self._armed(store.current), weight=store.current.weight_bp / 10_000)
        store.subscribe(self._on_state)

    @staticmethod
    def _key(state: RolloutState) -> tuple[str, str, int]:
        """What the evidence belongs to: one rollout's phase and step. A pause and its resume stay in the
        step (the operator stopped the judging, not the traffic), so its evidence survives them."""
        phase = state.paused_from if state.phase is Phase.PAUSED and state.paused_from else state.phase
        return (state.rollout_id, phase.value, state.step)

    @staticmethod
    def _armed(state: RolloutState) -> bool:
        return state.phase is Phase.CANARY and state.weight_bp > 0

    def _on_state(self, state: RolloutState) -> None:
        key = self._key(state)
        if key != self._marker:
            self._marker = key
            self.recorder.reset(armed=self._armed(state), weight=state.weight_bp / 10_000)
            self._tripping = False
        else:
            self.recorder.armed = self._armed(state) and self.recorder.tripwire.tripped is None

    def reconfigure(self, config: Config) -> None:
        """A reloaded config: new gates, steps, interval, trip-wire and costs; the rollout and the evidence
        of the current step are kept. A new interval applies to the window in progress."""
        self.config = config
        self.policy = GatePolicy.from_config(config.canary)
        self.steps = StepPolicy.from_config(config.canary)
        self.recorder.reconfigure(config)
        self._publish_thresholds()
        self._reconfigured.set()

    async def _next_window(self) -> None:
        """Sleep until one ``canary.interval`` after the last window closed, following interval changes."""
        loop = asyncio.get_running_loop()
        opened = loop.time()
        while (left := opened + self.config.canary.interval - loop.time()) > 0:
            self._reconfigured.clear()
            try:
                await asyncio.wait_for(self._reconfigured.wait(), left)
            except TimeoutError:
                return

    async def run(self) -> None:
        while True:
            await self._next_window()
            try:
                await self.tick()
            except Exception:  # the loop must outlive a bad tick; the next one tries again
                log.exception("controller tick failed")

    async def tick(self) -> Decision | None:
        """Close one window: judge, decide, persist. Returns the decision (None when nothing is judged)."""
        state = self.store.current
        if state.phase is Phase.CANARY:
            # Judging full reservoirs takes tens of milliseconds: do it on a snapshot, off the event loop,
            # so a tick never stalls traffic (the recorder keeps adding to the live evidence meanwhile).
            if self.offload:
                snapshot = copy.deepcopy(self.recorder.evidence)
                gates = await asyncio.to_thread(judge, snapshot, self.policy, self._scale(state))
            else:
                snapshot = self.recorder.evidence
                gates = judge(snapshot, self.policy, self._scale(state))
            figures = (live_figures(snapshot.baseline), live_figures(snapshot.candidate))
        elif state.phase is Phase.SHADOW:
            report = self.shadow_report()
            gates, _ = judge_shadow(report, self.policy, self.config.canary.shadow_samples)
            # The candidate has no live traffic yet: its evidence is what it answered to the mirrors.
            figures = (live_figures(self.recorder.evidence.baseline), mirror_figures(report))
        else:
            return None
        progress = StepProgress(
            step=state.step,  # -1 in the shadow phase: its PROCEED goes to the first step
            passes=state.passes,
            consecutive_failures=state.failed_windows,
            step_started_at=state.step_started_ts,
            now=self.clock(),
        )
        decision = decide(progress, gates, self.steps)
        if (
            state.phase is Phase.CANARY
            and decision.action == "HOLD"
            and decision.reason.startswith("inconclusive")
        ):
            decision = dataclasses.replace(
                decision, reason=decision.reason + self._needs(snapshot, gates, progress)
            )
        else:
            self.last_needs = None
        await self._apply(state, decision, gates, figures)
        return decision

    def _scale(self, state: RolloutState) -> float:
        """How much wider than configured this step's relative margins are (``canary.step_evidence``)."""
        return self.policy.scale(state.weight_bp / 100, self.steps.steps[-2])

    def _needs(self, snapshot: Evidence, gates: list[GateResult], progress: StepProgress) -> str:
        """The HOLD's "how long": what the undecided gates still need, at this step's candidate rate."""
        state = self.store.current
        weight = state.weight_bp / 10_000
        needs = evidence_needed(snapshot, self.policy, gates, self._scale(state))
        held = progress.now - progress.step_started_at
        total = snapshot.baseline.requests + snapshot.candidate.requests
        eta = eta_seconds(needs, held, total, weight)
        left = self.steps.max_hold_s - held
        self.last_needs = {
            "per_gate": needs.per_gate,
            "candidate_requests": needs.have,
            "more": needs.more,
            "eta_s": None if eta is None else round(eta, 1),
            "max_hold_left_s": round(left, 1),
        }
        if needs.more is None:
            if not needs.per_gate:
                return ""
            stuck = [g for g, v in needs.per_gate.items() if v is None]
            return f"; {', '.join(stuck)} cannot pass as the candidate is doing: waiting will not decide it"
        if eta is None:
            return f"; needs ~{needs.more} more candidate requests"
        text = f"; needs ~{needs.more} more candidate requests, ~{_duration(eta)} at this step's rate"
        return text + (f", more than max_hold leaves ({_duration(max(0.0, left))})" if eta > left else "")

    async def _apply(
        self,
        state: RolloutState,
        decision: Decision,
        gates: tuple[GateResult, ...] | list[GateResult],
        figures: tuple[VersionFigures, VersionFigures],
    ) -> None:
        self.last, self.last_gates = decision, tuple(gates)
        self._publish_gates(gates, shadow=state.phase is Phase.SHADOW)
        ts = self.clock()
        now = iso_at(ts)
        p = decision.progress
        changes: dict[str, Callable[[RolloutState], RolloutState]] = {
            "PROCEED": lambda s: advance(s, self.config.canary.steps, now=now, ts=ts, reason=decision.reason),
            "PROMOTE": lambda s: promote(s, self.config.canary.steps, now=now, ts=ts, reason=decision.reason),
            "ROLLBACK": lambda s: rollback(s, now=now, ts=ts, reason=decision.reason),
            "WAIT": lambda s: wait_for_operator(s, now=now, reason=decision.reason),
            "HOLD": lambda s: record_window(
                s, passes=p.passes, failed_windows=p.consecutive_failures, now=now, reason=decision.reason
            ),
        }
        entry = {
            "ts": now,
            "actor": "controller",
            "action": decision.action,
            "reason": decision.reason,
            "gates": [g.to_json() for g in gates],
            "window": self.window_summary(),
        }
        try:
            await self.store.update(_guarded(state, changes[decision.action]), entry)
        except IllegalTransition as exc:
            log.info("decision %s not applied: %s", decision.action, exc)  # an operator moved first
            return
        self.history.add(
            WindowRecord(
                ts=now,
                rollout_id=state.rollout_id,
                phase=state.phase.value,
                step=state.step,
                weight=state.weight,
                action=decision.action,
                baseline=figures[0],
                candidate=figures[1],
            )
        )
        if decision.action == "ROLLBACK":
            self.metrics.rollbacks.labels("gates").inc()
        log.info("%s: %s", decision.action, decision.reason)

    def trip(self, reason: str) -> None:
        """Called by the recorder on the request that decides it: roll back now, not at the next tick."""
        if self._tripping:
            return
        self._tripping = True
        self.tasks.spawn(self._trip(reason), name="tripwire-rollback")

    async def _trip(self, why: str) -> None:
        state = self.store.current
        now = iso_at(self.clock())
        reason = "trip-wire: " + why.removeprefix("tripwire: ").removeprefix("trip-wire: ")
        entry = {
            "ts": now,
            "actor": "tripwire",
            "action": "ROLLBACK",
            "reason": reason,
            "tripwire": self.recorder.tripwire.state,
            "window": self.window_summary(),
        }
        try:
            await self.store.update(
                _guarded(state, lambda s: rollback(s, now=now, ts=self.clock(), reason=reason)),
                entry,
            )
        except IllegalTransition as exc:
            log.info("trip-wire rollback not applied: %s", exc)
            return
        self.last = Decision(
            action="ROLLBACK",
            reason=reason,
            gates=(),
            next_step=None,
            progress=StepProgress(
                step=state.step,
                passes=state.passes,
                consecutive_failures=state.failed_windows,
                step_started_at=state.step_started_ts,
                now=self.clock(),
            ),
        )
        self.metrics.rollbacks.labels("tripwire").inc()
        log.warning("trip-wire rolled back the candidate: %s", reason)

    def _publish_thresholds(self) -> None:
        """The configured thresholds, from the start and at every reload: alerts and dashboards read
        them, and must not wait for the first judged window (or hold a reloaded gate's old value)."""
        empty = Evidence(baseline=VersionWindow(), candidate=VersionWindow())
        self._publish_gates(judge(empty, self.policy), shadow=False)  # NODATA: thresholds, no values

    def _publish_gates(self, gates: Any, *, shadow: bool) -> None:
        version = self.config.candidate.version
        if version != self._published_version:
            # A new candidate: the old one's gauges would go on being exported, frozen at its last
            # window, and mixed into every max by (gate) of a dashboard or alert.
            self.metrics.gate_value.clear()
            self.metrics.gate_threshold.clear()
            self._published_version = version
        for g in gates:
            value = _gauge_value(g, shadow=shadow)
            if value is not None:
                self.metrics.gate_value.labels(g.gate, version).set(value)
            if g.threshold is not None:
                self.metrics.gate_threshold.labels(g.gate, version).set(g.threshold)

    def window_summary(self) -> dict[str, Any]:
        ev = self.recorder.evidence
        return {
            "baseline": ev.baseline.to_json(),
            "candidate": ev.candidate.to_json(),
            "paired": ev.pairs.to_json(),
            "seconds": round(self.clock() - self.recorder.started, 3),
        }

    def status(self) -> dict[str, Any]:
        """For ``/status``: the current window per version, the last decision and its gates, the trip-wire.
        In the shadow phase the window also carries ``mirror``: the candidate's figures on its mirrors."""
        last = self.last
        window = self.window_summary()
        if self.store.current.phase is Phase.SHADOW:
            window["mirror"] = mirror_figures(self.shadow_report()).to_json()
        return {
            "window": window,
            "last_decision": None if last is None else {"action": last.action, "reason": last.reason},
            "gates": [g.to_json() for g in self.last_gates],
            "tripwire": {**self.recorder.tripwire.state, "armed": self.recorder.armed},
            "needs": self.last_needs,
            "interval_s": self.config.canary.interval,
            "steps": list(self.config.canary.steps),
            "shadow_samples": self.config.canary.shadow_samples,
            "thresholds": dataclasses.asdict(self.config.canary.gates),
        }


def _guarded(
    seen: RolloutState, change: Callable[[RolloutState], RolloutState]
) -> Callable[[RolloutState], RolloutState]:
    """Apply ``change`` only if nobody moved the rollout since the decision was made (else 409 inside)."""

    def apply(current: RolloutState) -> RolloutState:
        if (current.rollout_id, current.phase, current.step) != (seen.rollout_id, seen.phase, seen.step):
            raise IllegalTransition("the rollout moved while this decision was being made")
        return change(current)

    return apply


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _gauge_value(g: GateResult, *, shadow: bool) -> float | None:
    """The gate's value in its threshold's units, so a dashboard or alert compares the two gauges directly.

    In canary ``decision_delta`` carries both versions' positive-decision shares; its threshold is the
    distance between them in percentage points. The shadow gate already reports paired divergence in pp.
    """
    if g.gate == "decision_delta" and not shadow and g.value is not None and g.baseline is not None:
        return abs(g.value - g.baseline) * 100.0
    return g.value
