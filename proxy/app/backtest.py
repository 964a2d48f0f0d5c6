"""``rollguard backtest``: a recorded trace replayed through the controller the proxy runs.

The parts are the live ones — the recorder (evidence and trip-wire), the gates, ``decide``, the steps and
``max_hold``, the shadow book and gate, the state machine — assembled around an in-memory state store and
a virtual clock that reads the trace's ``t``. Each request is routed as live traffic is, by the current
weight and the same sticky hash (or, without a key, a seeded draw), and only the chosen version's outcome
is observed; a failed candidate attempt is followed by the baseline's when ``canary.fallback_to_baseline``
is on, exactly as the forwarder does. During the shadow phase a ``shadow.sample`` share of requests is
also compared as a mirrored pair. A window closes every ``canary.interval`` of trace time, before the
first request at or past its end; a trip-wire rollback is applied before the next request is routed.

The replay stops at the first terminal outcome (promoted, rolled back, or waiting for an operator after
``max_hold``), or at the trace's end (running).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from prometheus_client import CollectorRegistry

from proxy._tasks import TaskSet
from proxy.clock import iso_at
from proxy.config.model import Config, RouteConfig
from proxy.dataplane.routing import bucket
from proxy.errors import TraceError
from proxy.observe.metrics import ProxyMetrics
from proxy.rollout.controller import Controller
from proxy.rollout.evidence import cluster_of
from proxy.rollout.state import BUCKETS, Phase, RolloutState, initial, start
from proxy.rollout.store import MemoryStateStore
from proxy.rollout.trace import Outcome, read_line
from proxy.shadow.book import ShadowBook
from proxy.shadow.compare import Answer
from proxy.shadow.mirror import mirror_share

Result = Literal["promoted", "rolled_back", "waiting", "running"]

_MEMO = 1 << 20  # sticky keys whose bucket and cluster are remembered; beyond, the memo starts afresh

_TERMINAL: dict[Phase, Result] = {
    Phase.PROMOTED: "promoted",
    Phase.ROLLED_BACK: "rolled_back",
    Phase.PAUSED: "waiting",
}


@dataclass(slots=True)
class BacktestSummary:
    outcome: Result = "running"
    windows: int = 0  # windows judged (shadow and canary)
    rolled_back_by: str | None = None  # "gates" | "tripwire"
    decisive_gates: list[str] = field(default_factory=list)  # the gates that failed (or held) last
    requests: int = 0  # trace lines replayed
    observed: dict[str, int] = field(default_factory=lambda: {"baseline": 0, "candidate": 0})
    ended_at: float = 0.0  # trace seconds at the last request replayed (or the decision that ended it)
    final_weight: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "summary": True,
            "outcome": self.outcome,
            "windows": self.windows,
            "rolled_back_by": self.rolled_back_by,
            "decisive_gates": self.decisive_gates,
            "requests": self.requests,
            "observed": self.observed,
            "ended_at": round(self.ended_at, 3),
            "final_weight": self.final_weight,
        }


class _ReplayMetrics(ProxyMetrics):
    """A replay's metrics go nowhere; the shadow comparison's series, observed per mirrored pair, are not
    even kept (nothing in the controller or the shadow book reads them back)."""

    def shadow_comparison(self, route: str, match: bool, score_delta: float | None) -> None:
        return None


class _TraceClock:
    """Seconds since the epoch as the trace tells them: ``t`` from an origin of 0."""

    __slots__ = ("now",)

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _answer(outcome: Outcome, threshold: float) -> Answer:
    """A traced outcome as the shadow book compares it (the trace carries no bodies)."""
    kind = outcome.failure_kind
    score = outcome.score if outcome.contract_ok else None
    return Answer(
        status=outcome.status,
        schema_valid=outcome.contract_ok,
        latency_s=outcome.latency_ms / 1000.0,
        score=score,
        decision=None if score is None else score >= threshold,
        error=kind if kind not in (None, "contract") else None,
    )


def _decision_record(entry: dict[str, Any], t: float) -> dict[str, Any]:
    return {
        "t": round(t, 3),
        "actor": entry.get("actor"),
        "action": entry.get("action"),
        "reason": entry.get("reason"),
        "phase": entry.get("phase"),
        "step": entry.get("step"),
        "weight": entry.get("weight"),
        "gates": [
            {"gate": g["gate"], "verdict": g["verdict"], "value": g["value"], "detail": g["detail"]}
            for g in entry.get("gates", ())
        ],
    }


async def backtest(
    config: Config,
    lines: Iterable[bytes],
    *,
    seed: int = 0,
    on_decision: Callable[[dict[str, Any]], None] | None = None,
) -> BacktestSummary:
    """Replay ``lines`` (a trace, one JSON request per line) and return how the rollout ended.

    ``on_decision`` gets each decision as it is taken (``t``, actor, action, reason, where the rollout
    went, the gates). Raises :class:`TraceError` for a line that is not a traced request or goes back in
    time, naming its number.
    """
    clock = _TraceClock()
    canary = config.canary
    store = MemoryStateStore(initial(config.candidate.version, 0, iso_at(0.0)))
    metrics = _ReplayMetrics(CollectorRegistry())
    tasks = TaskSet("backtest")
    book = ShadowBook(config, metrics)
    controller = Controller(
        config,
        store=store,
        metrics=metrics,
        tasks=tasks,
        shadow_report=lambda: book.report(iso_at(clock())),
        clock=clock,
        offload=False,  # nothing adds evidence while a tick judges it: no copy, no thread
    )
    rollout_id = f"backtest-{seed}"  # the sticky draw of users, like the seed's draw for keyless requests
    started = await store.update(
        lambda s: start(
            s,
            canary.steps,
            shadow_first=canary.shadow_samples > 0,
            now=iso_at(0.0),
            ts=0.0,
            rollout_id=rollout_id,
        ),
        {"ts": iso_at(0.0), "actor": "backtest", "action": "start", "reason": "backtest"},
    )
    book.start_rollout(started.rollout_id)
    seen = 0  # the start is the timeline's first entry
    routes: dict[str, RouteConfig] = {r.name: r for r in config.routes}
    default_route = config.routes[0]
    rand = random.Random(seed).random
    paired = config.canary.paired_sample
    summary = BacktestSummary()
    interval = canary.interval
    next_window = interval
    last_t = 0.0
    fallback = canary.fallback_to_baseline

    def report(t: float) -> bool:
        """Hand on the new decisions; True once the rollout has ended."""
        nonlocal seen
        for entry in store.log[seen:]:
            if on_decision is not None:
                on_decision(_decision_record(entry, t))
        seen = len(store.log)
        phase = store.current.phase
        return phase in _TERMINAL

    report(0.0)
    recorder = controller.recorder
    observe = recorder.observe_deferred
    shadow_cfg = config.shadow
    observed = {"baseline": 0, "candidate": 0}
    requests = 0
    # What routing reads from the state, which changes only at a tick or a trip-wire rollback.
    state: RolloutState | None = None
    shadow = False
    weight_bp = 0
    share = 0.0
    rollout = ""
    # Per sticky key: its cluster, and its bucket in ``rollout`` (the live hash, computed once a key).
    clusters: dict[str, int] = {}
    buckets: dict[str, int] = {}

    def finish(t: float) -> BacktestSummary:
        summary.requests = requests
        summary.observed = observed
        return _finish(summary, store, t)

    number = 0
    for number, raw in enumerate(lines, 1):  # noqa: B007 - the count is the summary's
        try:
            req = read_line(raw, number)
        except TraceError:
            if not raw.strip():
                continue
            raise
        t, key, route_name, base, cand = req
        if t < last_t:
            raise TraceError(number, f"t {t:g} is before the previous line's {last_t:g}")
        last_t = t
        while t >= next_window:
            clock.now = next_window
            recorder.flush()  # the window's requests into the evidence the tick judges
            decision = await controller.tick()
            summary.windows += decision is not None
            next_window += interval
            if report(clock.now):
                return finish(clock.now)
        clock.now = t
        route = routes.get(route_name) if route_name is not None else default_route
        if route is None:
            raise TraceError(number, f"route {route_name!r} is not in the config's routes")
        if store.current is not state:
            state = store.current
            shadow = state.phase is Phase.SHADOW
            share = mirror_share(shadow_cfg, state) if shadow else 0.0
            weight_bp = state.weight_bp
            if state.rollout_id != rollout:
                rollout = state.rollout_id
                buckets.clear()
        requests += 1
        threshold = route.decision_threshold
        if shadow and share > 0.0 and (share >= 1.0 or rand() < share):
            book.observe_answers(route, _answer(base, threshold), _answer(cand, threshold), None)
        # The sticky choice of dataplane.routing.choose, with the bucket and the cluster memoised.
        if key is None:
            cluster = None
            candidate = weight_bp >= BUCKETS or (weight_bp > 0 and int(rand() * BUCKETS) < weight_bp)
        else:
            cluster = clusters.get(key)
            if cluster is None:
                if len(clusters) >= _MEMO:
                    clusters.clear()
                cluster = clusters[key] = cluster_of(key)
            if weight_bp <= 0:
                candidate = False
            elif weight_bp >= BUCKETS:
                candidate = True
            else:
                b = buckets.get(key)
                if b is None:
                    if len(buckets) >= _MEMO:
                        buckets.clear()
                    b = buckets[key] = bucket(rollout, key)
                candidate = b < weight_bp
        status, latency_ms, score, contract_ok, cost, violations = cand if candidate else base
        failed = status == 0 or status >= 500 or not contract_ok
        observe(
            "candidate" if candidate else "baseline",
            latency_ms / 1000.0,
            failed,
            score if contract_ok else None,
            threshold,
            cost,
            violations,
            cluster,
        )
        if not candidate:
            observed["baseline"] += 1
            continue
        observed["candidate"] += 1
        if paired > 0.0 and (paired >= 1.0 or rand() < paired):
            # The paired canary: the baseline's answer to the same request, off the client's path.
            recorder.observe_pair(_paired_score(cand), _paired_score(base), threshold)
        if failed and fallback:
            status, latency_ms, score, contract_ok, cost, violations = base
            observe(
                "baseline",
                latency_ms / 1000.0,
                status == 0 or status >= 500 or not contract_ok,
                score if contract_ok else None,
                threshold,
                cost,
                violations,
                cluster,
            )
            observed["baseline"] += 1
        if len(tasks):  # the trip-wire fired on this request: its rollback lands before the next one
            recorder.flush()  # the rollback's decision shows the window it ended
            await tasks.drain(within=60.0)
            if report(clock.now):
                return finish(clock.now)
    recorder.flush()
    summary.requests = requests
    summary.observed = observed
    summary.ended_at = last_t
    summary.final_weight = store.current.weight
    return summary


def _finish(summary: BacktestSummary, store: MemoryStateStore, t: float) -> BacktestSummary:
    state = store.current
    summary.outcome = _TERMINAL.get(state.phase, "running")
    summary.ended_at = t
    summary.final_weight = state.weight
    last = store.log[-1] if store.log else {}
    if summary.outcome == "rolled_back":
        summary.rolled_back_by = "tripwire" if last.get("actor") == "tripwire" else "gates"
    gates = last.get("gates", ())
    decisive = [g for g in gates if g.get("verdict") in ("HIGH", "LOW")] or [
        g for g in gates if g.get("verdict") == "INCONCLUSIVE"
    ]
    summary.decisive_gates = [g["gate"] for g in decisive]
    return summary


def _paired_score(outcome: Outcome) -> float | None:
    ok = outcome.failure_kind is None and outcome.contract_ok
    return outcome.score if ok else None
