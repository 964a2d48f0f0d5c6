"""The backtest's reference replay: one request at a time through the recorder's live ``observe``, the
full ``parse_line``, ``choose`` and a controller that judges a copy of the evidence in a worker thread,
as the proxy does. ``proxy.app.backtest`` reads, routes and records faster; its decisions and summary
must be these, byte for byte."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry

from proxy._tasks import TaskSet
from proxy.app.backtest import BacktestSummary
from proxy.clock import iso_at
from proxy.config.model import Config, RouteConfig
from proxy.dataplane.routing import choose
from proxy.errors import TraceError
from proxy.observe.metrics import ProxyMetrics
from proxy.rollout.controller import Controller
from proxy.rollout.state import Phase, initial, start
from proxy.rollout.store import MemoryStateStore
from proxy.rollout.trace import Outcome, parse_line
from proxy.shadow.book import ShadowBook
from proxy.shadow.compare import Answer
from proxy.shadow.mirror import mirror_share

TERMINAL = {Phase.PROMOTED: "promoted", Phase.ROLLED_BACK: "rolled_back", Phase.PAUSED: "waiting"}


def answer(outcome: Outcome, threshold: float) -> Answer:
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


def decision_record(entry: dict[str, Any], t: float) -> dict[str, Any]:
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


def paired_score(outcome: Outcome) -> float | None:
    ok = outcome.failure_kind is None and outcome.contract_ok
    return outcome.score if ok else None


def finish(summary: BacktestSummary, store: MemoryStateStore, t: float) -> BacktestSummary:
    state = store.current
    summary.outcome = TERMINAL.get(state.phase, "running")  # type: ignore[assignment]
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


async def reference_backtest(
    config: Config,
    lines: Iterable[bytes],
    *,
    seed: int = 0,
    on_decision: Callable[[dict[str, Any]], None] | None = None,
) -> BacktestSummary:
    """``backtest``'s contract, one request at a time through the live code paths."""
    now_s = [0.0]

    def clock() -> float:
        return now_s[0]

    canary = config.canary
    store = MemoryStateStore(initial(config.candidate.version, 0, iso_at(0.0)))
    metrics = ProxyMetrics(CollectorRegistry())
    tasks = TaskSet("backtest")
    book = ShadowBook(config, metrics)
    controller = Controller(
        config,
        store=store,
        metrics=metrics,
        tasks=tasks,
        shadow_report=lambda: book.report(iso_at(clock())),
        clock=clock,
    )
    rollout_id = f"backtest-{seed}"
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
    seen = 0
    routes: dict[str, RouteConfig] = {r.name: r for r in config.routes}
    default_route = config.routes[0]
    rand = random.Random(seed).random
    paired = canary.paired_sample
    summary = BacktestSummary()
    interval = canary.interval
    next_window = interval
    last_t = 0.0

    def report(t: float) -> bool:
        nonlocal seen
        for entry in store.log[seen:]:
            if on_decision is not None:
                on_decision(decision_record(entry, t))
        seen = len(store.log)
        return store.current.phase in TERMINAL

    report(0.0)
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        req = parse_line(raw, number)
        if req.t < last_t:
            raise TraceError(number, f"t {req.t:g} is before the previous line's {last_t:g}")
        last_t = req.t
        while req.t >= next_window:
            now_s[0] = next_window
            decision = await controller.tick()
            summary.windows += decision is not None
            next_window += interval
            if report(now_s[0]):
                return finish(summary, store, now_s[0])
        now_s[0] = req.t
        route = routes.get(req.route) if req.route is not None else default_route
        if route is None:
            raise TraceError(number, f"route {req.route!r} is not in the config's routes")
        state = store.current
        summary.requests += 1
        threshold = route.decision_threshold
        if state.phase is Phase.SHADOW:
            share = mirror_share(config.shadow, state)
            if share > 0.0 and (share >= 1.0 or rand() < share):
                book.observe_answers(
                    route, answer(req.baseline, threshold), answer(req.candidate, threshold), None
                )
        role = choose(state.weight_bp, state.rollout_id, req.key, rand)
        observed = req.candidate if role == "candidate" else req.baseline
        recorder = controller.recorder
        kind = observed.failure_kind
        recorder.observe(
            role,
            observed.latency_ms / 1000.0,
            kind,
            observed.score if observed.contract_ok else None,
            threshold,
            cost=observed.cost,
            violations=observed.violations,
            key=req.key,
        )
        summary.observed[role] += 1
        if role == "candidate" and paired > 0.0 and (paired >= 1.0 or rand() < paired):
            recorder.observe_pair(paired_score(req.candidate), paired_score(req.baseline), threshold)
        if role == "candidate" and kind is not None and canary.fallback_to_baseline:
            b = req.baseline
            recorder.observe(
                "baseline",
                b.latency_ms / 1000.0,
                b.failure_kind,
                b.score if b.contract_ok else None,
                threshold,
                cost=b.cost,
                violations=b.violations,
                key=req.key,
            )
            summary.observed["baseline"] += 1
        if len(tasks):
            await tasks.drain(within=60.0)
            if report(now_s[0]):
                return finish(summary, store, now_s[0])
    summary.ended_at = last_t
    summary.final_weight = store.current.weight
    return summary
