"""The controller's evidence, fed by the data plane: each routed request's upstream attempts go into the
current step's windows, and through the trip-wire that can roll back before the window ends."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from proxy.config.model import Config
from proxy.observe.exchange import Exchange
from proxy.rollout.evidence import Evidence, VersionWindow, cluster_of
from proxy.rollout.tripwire import Tripwire

if TYPE_CHECKING:
    from proxy.content.contracts import CompiledRoute
    from proxy.upstream.attempt import Attempt


def _score(att: Attempt) -> float | None:
    return att.score if att.failure_kind is None else None


class Recorder:
    """Per-request evidence for the controller, and the trip-wire in front of it."""

    def __init__(
        self, config: Config, *, on_trip: Callable[[str], None], clock: Callable[[], float] = time.time
    ) -> None:
        self.clock = clock  # the controller's: wall time live, the trace's time in a backtest
        self.tripwire = Tripwire(config.canary.tripwire)
        self.on_trip = on_trip
        self.armed = False  # the trip-wire fires only while the candidate has real traffic
        self._costs = {
            "baseline": (config.baseline.cost_per_request, config.baseline.cost_per_second),
            "candidate": (config.candidate.cost_per_request, config.candidate.cost_per_second),
        }
        self.evidence = Evidence(baseline=VersionWindow(), candidate=VersionWindow())
        self.started = self.clock()
        # observe_deferred's requests not yet in the evidence, one tuple of VersionWindow.add's
        # arguments each, per version
        self._deferred: dict[str, list[tuple[float, bool, float | None, bool | None, float, int, int | None]]]
        self._deferred = {"baseline": [], "candidate": []}

    def observe_paired(self, route: CompiledRoute, candidate: Attempt, baseline: Attempt) -> None:
        """A paired canary request's two answers (``canary.paired_sample``): their decisions, if both
        answered with a score."""
        self.observe_pair(_score(candidate), _score(baseline), route.route.decision_threshold)

    def observe_pair(self, candidate: float | None, baseline: float | None, threshold: float) -> None:
        """Both versions' scores for one paired request (either None: no decision, not a pair)."""
        if candidate is not None and baseline is not None:
            self.evidence.pairs.add(candidate >= threshold, baseline >= threshold)

    def reconfigure(self, config: Config) -> None:
        """Take new costs and trip-wire settings; the evidence so far is kept (same step, same samples).
        A changed trip-wire starts its count afresh, as it would at a new step."""
        policy = config.canary.tripwire
        if policy != self.tripwire.policy:
            self.tripwire = Tripwire(policy)
        self._costs = {
            "baseline": (config.baseline.cost_per_request, config.baseline.cost_per_second),
            "candidate": (config.candidate.cost_per_request, config.candidate.cost_per_second),
        }

    def reset(self, *, armed: bool, weight: float | None = None) -> None:
        """Start afresh: a new step or phase is judged on its own samples only. ``weight`` is the step's
        candidate share (0..1), where the trip-wire's reading of the traffic share starts."""
        self.evidence = Evidence(baseline=VersionWindow(), candidate=VersionWindow())
        for pending in self._deferred.values():
            pending.clear()  # the old step's requests, as its evidence: gone
        self.tripwire.reset(weight)
        self.armed = armed
        self.started = self.clock()

    def on_exchange(self, ex: Exchange) -> None:
        """Every upstream attempt of a routed request is evidence (a candidate failure a fallback or a
        retry hid included); unmatched paths are not part of any rollout."""
        if ex.route is None:
            return
        threshold = ex.route.route.decision_threshold
        key = ex.sticky
        for att in ex.attempts:
            self.observe(att.pool.role, att.elapsed, att.failure_kind, att.score, threshold, key=key)

    def observe(
        self,
        role: str,
        latency_s: float,
        failure_kind: str | None,
        score: float | None,
        threshold: float,
        *,
        cost: float | None = None,
        violations: int = 0,
        key: str | None = None,
    ) -> None:
        """One upstream attempt on a routed request (a candidate attempt replaced by a fallback included).
        ``cost`` replaces the configured price (a trace that recorded it); ``violations`` are policy ones;
        ``key`` is the request's sticky key, whose group the clustered variance counts by."""
        if cost is None:
            per_request, per_second = self._costs[role]
            cost = per_request + per_second * latency_s
        window = self.evidence.candidate if role == "candidate" else self.evidence.baseline
        failed = failure_kind is not None
        window.add(
            latency_s=latency_s,
            failed=failed,
            score=score,
            decision=None if score is None else score >= threshold,
            cost=cost,
            policy_violations=violations,
            cluster=None if key is None else cluster_of(key),
        )
        self._to_tripwire(role, failed)

    def _to_tripwire(self, role: str, failed: bool) -> None:
        """The trip-wire sees every outcome at once, whenever the evidence is added."""
        if role == "baseline":
            self.tripwire.observe_baseline(failed)
        elif self.armed:
            reason = self.tripwire.observe_candidate(failed)
            if reason is not None:
                self.armed = False  # one trip per step: the rollback that follows resets everything
                self.on_trip(reason)

    def observe_deferred(
        self,
        role: str,
        latency_s: float,
        failed: bool,
        score: float | None,
        threshold: float,
        cost: float | None,
        violations: int,
        cluster: int | None,
    ) -> None:
        """:meth:`observe` for a caller that replays requests faster than one window add each (a
        backtest): the trip-wire sees the outcome at once, exactly as in ``observe``, while its evidence
        waits in a batch until :meth:`flush`, which the caller owes before anything reads
        ``evidence`` (a tick, a trip-wire rollback). ``failed`` is ``failure_kind is not None``;
        ``cluster`` is the sticky key's :func:`cluster_of`. The evidence is the same to the last bit."""
        if cost is None:
            per_request, per_second = self._costs[role]
            cost = per_request + per_second * latency_s
        self._deferred[role].append(
            (
                latency_s,
                failed,
                score,
                None if score is None else score >= threshold,
                cost,
                violations,
                cluster,
            )
        )
        self._to_tripwire(role, failed)

    def flush(self) -> None:
        """Add the deferred requests to the evidence, in the order they were observed."""
        for role, pending in self._deferred.items():
            if not pending:
                continue
            latency, failed, score, decision, cost, violations, cluster = zip(*pending, strict=True)
            pending.clear()
            window = self.evidence.candidate if role == "candidate" else self.evidence.baseline
            window.add_many(
                latency_s=latency,
                failed=failed,
                score=score,
                decision=decision,
                cost=cost,
                policy_violations=violations,
                cluster=cluster,
            )
