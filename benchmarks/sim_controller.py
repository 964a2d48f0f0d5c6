"""Simulated rollouts through the canary controller's pure core: judge + decide + Tripwire.

No network, no clock: synthetic traffic per window, seeded per rollout, so every run repeats exactly.
A fixed request rate is split by the step's weight (4000 requests per 60 s window: 200 candidate samples
at 5%), the evidence accumulates since the step began (as the controller keeps it), and every request's
outcome also goes through the trip-wire, which had 20,000 baseline requests to learn from beforehand.

Traffic model. Latency is lognormal with median 30 ms and p95 60 ms (sigma = ln 2 / 1.645); a "tail"
regression sends a share of requests down a slow path instead. Failed requests have no score. Scores are
logistic(N(mu, 1)) with mu set so the positive-decision rate (score >= 0.5) is 23%. Cost per request is
0.0001 + 0.002 x latency_s.

Scenarios:

- aa / aa_noscore: the candidate is the baseline (error 0.1%); from step 1% until PROMOTE, ROLLBACK, or
  WAIT at max_hold. Any rollback is a false rollback (target <= 1%).
- error_5x: baseline 1% errors, candidate 5%, at 5% weight, with ``error_rate: 0.02`` (the default 0.5%
  threshold would flag the 1% baseline itself); p95_x1.5: every latency x1.5 (p95 90 ms, under the 120 ms
  absolute threshold, so only the relative test can catch it); p95_tail: 6% of requests take a 4x slow
  path (p95 +50%, median unchanged); error_2x: 1% -> 2% errors (threshold 0.02); decision_+5pp:
  23% -> 28% positive decisions; all_fail: every candidate request fails (trip-wire). ``/gates`` rows run
  the same regression with the trip-wire off, to show what the windowed gates catch alone.

Rollouts use the default StepPolicy (steps 1-5-25-50-100, one pass per step, three failing windows,
max_hold 30 min = 30 windows, then WAIT) and default gates unless a scenario says otherwise. A regression
rollout starts at the 5% step and runs at most 10 windows. ``<=3 win`` counts rollouts rolled back by the
end of their third window; ``med req`` is candidate requests until rollback.

    python benchmarks/sim_controller.py [--quick] [--out sim_controller.json] [--jobs N] [--only a,b]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from dataclasses import dataclass, replace
from multiprocessing import Pool
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proxy.config.model import CanaryConfig
from proxy.rollout.decide import StepPolicy, StepProgress, decide
from proxy.rollout.evidence import Evidence, VersionWindow
from proxy.rollout.gates import GatePolicy, judge
from proxy.rollout.tripwire import Tripwire, TripwireConfig

SIGMA = math.log(2.0) / 1.6448536269514722  # median 30 ms, p95 60 ms
MU_23 = statistics.NormalDist().inv_cdf(0.23)  # latent mean giving 23% positive decisions
INTERVAL_S = 60.0
WARMUP_BASELINE = 20_000


@dataclass(frozen=True, slots=True)
class Model:
    """One version's synthetic behaviour."""

    error: float = 0.001
    median_s: float = 0.030
    slow_share: float = 0.0  # share of requests on a slow path ...
    slow_factor: float = 1.0  # ... this many times slower
    positive: float | None = 0.23  # positive-decision rate; None: the route has no score
    always_fail: bool = False


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    baseline: Model
    candidate: Model
    start_step: int  # index into the steps
    max_windows: int
    gates: GatePolicy
    note: str
    tripwire: bool = True


def _window(rng: random.Random, m: Model, n: int, w: VersionWindow) -> list[bool]:
    """Add n requests of model m to w; the failure flags in order (for the trip-wire)."""
    mu_lat = math.log(m.median_s)
    mu_score = None if m.positive is None else statistics.NormalDist().inv_cdf(m.positive)
    fails = []
    gauss, rand = rng.gauss, rng.random
    for _ in range(n):
        lat = math.exp(mu_lat + SIGMA * gauss(0.0, 1.0))
        if m.slow_share and rand() < m.slow_share:
            lat *= m.slow_factor
        failed = m.always_fail or rand() < m.error
        score = decision = None
        if mu_score is not None and not failed:
            z = mu_score + gauss(0.0, 1.0)
            score, decision = 1.0 / (1.0 + math.exp(-z)), z >= 0.0
        w.add(latency_s=lat, failed=failed, score=score, decision=decision, cost=0.0001 + 0.002 * lat)
        fails.append(failed)
    return fails


def run_rollout(sc: Scenario, seed: int, rate: int, steps: StepPolicy) -> dict[str, Any]:
    """One rollout to its end (or ``max_windows``); what happened, when and why."""
    rng = random.Random(seed)
    tw = Tripwire(TripwireConfig())
    for _ in range(WARMUP_BASELINE):
        tw.observe_baseline(rng.random() < sc.baseline.error)
    progress = StepProgress(step=sc.start_step, step_started_at=0.0, now=0.0)
    tw.reset(steps.steps[progress.step] / 100.0)  # the step begins, as the recorder re-arms it
    ev = Evidence(VersionWindow(seed=seed), VersionWindow(seed=seed + 7))
    now, cand_total = 0.0, 0
    for window in range(1, sc.max_windows + 1):
        weight = steps.steps[progress.step]
        n_c = round(rate * weight / 100.0)
        n_b = rate - n_c
        bf = _window(rng, sc.baseline, n_b, ev.baseline)
        cf = _window(rng, sc.candidate, n_c, ev.candidate)
        j = 0
        for i, failed in enumerate(cf):  # interleave as traffic would arrive
            while j < (i + 1) * n_b // max(n_c, 1):
                tw.observe_baseline(bf[j])
                j += 1
            reason = tw.observe_candidate(failed) if sc.tripwire else None
            if reason is not None:
                return _outcome("ROLLBACK", "tripwire", window, cand_total + i + 1, progress.step, reason)
        for f in bf[j:]:
            tw.observe_baseline(f)
        cand_total += n_c
        now += INTERVAL_S
        d = decide(replace(progress, now=now), judge(ev, sc.gates), steps)
        if d.action in ("ROLLBACK", "PROMOTE", "WAIT"):
            by = "max_hold" if "max_hold" in d.reason else ("gates" if d.action == "ROLLBACK" else "")
            return _outcome(d.action, by, window, cand_total, progress.step, d.reason)
        if d.action == "PROCEED":
            ev = Evidence(VersionWindow(seed=seed + window), VersionWindow(seed=seed + window + 7))
            tw.reset(steps.steps[progress.step + 1] / 100.0)
        progress = d.progress
    return _outcome("NONE", "", sc.max_windows, cand_total, progress.step, "still running")


def _outcome(action: str, by: str, windows: int, requests: int, step: int, reason: str) -> dict[str, Any]:
    return {
        "action": action,
        "by": by,
        "windows": windows,
        "requests": requests,
        "step": step,
        "reason": reason,
    }


def scenarios(quick: bool) -> list[tuple[Scenario, int]]:
    """(scenario, rollouts) in report order."""
    base, noscore, one_pct = Model(), Model(positive=None), Model(error=0.01)
    default, relaxed = (
        GatePolicy.from_config(CanaryConfig()),
        GatePolicy.from_config(CanaryConfig(), error_rate=0.02),
    )
    aa_n, reg_n = (16, 16) if quick else (500, 200)

    def regression(name: str, baseline: Model, cand: Model, gates: GatePolicy, note: str) -> Scenario:
        return Scenario(name, baseline, cand, 1, 10, gates, note)

    tail = Model(slow_share=0.06, slow_factor=4.05)
    plan = [
        (Scenario("aa", base, base, 0, 200, default, "A/A, default gates"), aa_n),
        (Scenario("aa_noscore", noscore, noscore, 0, 200, default, "A/A, route without a score"), aa_n),
        (
            regression("error_5x", one_pct, Model(error=0.05), relaxed, "error 1% -> 5%, error_rate 0.02"),
            reg_n,
        ),
        (regression("p95_x1.5", base, Model(median_s=0.045), default, "every latency x1.5"), reg_n),
        (regression("p95_tail", base, tail, default, "6% of requests 4x slower: p95 +50%"), reg_n),
        (
            regression("error_2x", one_pct, Model(error=0.02), relaxed, "error 1% -> 2%, error_rate 0.02"),
            reg_n,
        ),
        (regression("decision_+5pp", base, Model(positive=0.28), default, "23% -> 28% positive"), reg_n),
        (regression("all_fail", base, Model(always_fail=True), default, "every request fails"), reg_n),
        (
            regression("all_fail_b1%", one_pct, Model(always_fail=True), relaxed, "same, baseline at 1%"),
            reg_n,
        ),
    ]
    # The windowed gates alone, for the regressions the trip-wire would otherwise catch first.
    gates_only = [
        (replace(sc, name=f"{sc.name}/gates", tripwire=False, note=f"{sc.note}, trip-wire off"), n)
        for sc, n in plan
        if sc.name in ("error_5x", "error_2x")
    ]
    return plan[:3] + gates_only[:1] + plan[3:6] + gates_only[1:] + plan[6:]


def _job(args: tuple[Scenario, int, int]) -> tuple[str, int, dict[str, Any]]:
    sc, seed, rate = args
    return sc.name, seed, run_rollout(sc, seed, rate, StepPolicy.from_config(CanaryConfig()))


def _median(xs: list[int]) -> float | None:
    return statistics.median(xs) if xs else None


def summarize(sc: Scenario, runs: list[dict[str, Any]]) -> dict[str, Any]:
    rolled = [r for r in runs if r["action"] == "ROLLBACK"]
    caught3 = [r for r in rolled if r["windows"] <= 3]
    out: dict[str, Any] = {
        "note": sc.note,
        "rollouts": len(runs),
        "rollbacks": len(rolled),
        "rollback_rate": len(rolled) / len(runs),
        "by_tripwire": sum(r["by"] == "tripwire" for r in rolled),
        "by_gates": sum(r["by"] == "gates" for r in rolled),
        "by_max_hold": sum(r["by"] == "max_hold" for r in rolled),
        "within_3_windows": len(caught3) / len(runs),
        "median_windows": _median([r["windows"] for r in rolled]),
        "median_requests": _median([r["requests"] for r in rolled]),
        "max_requests": max((r["requests"] for r in rolled), default=None),
        "promoted": sum(r["action"] == "PROMOTE" for r in runs),
        "waited": sum(r["action"] == "WAIT" for r in runs),
        "median_windows_to_promote": _median([r["windows"] for r in runs if r["action"] == "PROMOTE"]),
        "wait_steps": sorted({r["step"] for r in runs if r["action"] == "WAIT"}),
        "example_reason": (rolled or runs)[0]["reason"],
    }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer rollouts (well under 20 s on 2 cores)")
    ap.add_argument("--out", type=Path, help="write the JSON result here")
    ap.add_argument("--rate", type=int, default=4000, help="requests per 60 s window (default 4000)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--only", help="comma-separated scenario names")
    args = ap.parse_args(argv)
    plan = scenarios(args.quick)
    if args.only:
        keep = set(args.only.split(","))
        plan = [(sc, n) for sc, n in plan if sc.name in keep]
    jobs = [(sc, 1_000_003 * k + i, args.rate) for k, (sc, n) in enumerate(plan) for i in range(n)]
    started = time.perf_counter()
    done: list[tuple[str, int, dict[str, Any]]]
    if args.jobs > 1:
        with Pool(args.jobs) as pool:  # one rollout per task: rollouts differ in length by 100x
            done = list(pool.imap_unordered(_job, jobs, chunksize=1))
    else:
        done = [_job(j) for j in jobs]
    results: dict[str, list[dict[str, Any]]] = {sc.name: [] for sc, _ in plan}
    for name, _, r in sorted(done, key=lambda t: t[1]):  # seed order: the report repeats exactly
        results[name].append(r)
    elapsed = time.perf_counter() - started
    summary = {sc.name: summarize(sc, results[sc.name]) for sc, _ in plan}
    print(
        f"{'scenario':<15} {'runs':>5} {'rollback':>9} {'<=3 win':>8} {'med win':>8} {'med req':>8} "
        f"{'max req':>8} {'trip':>5} {'gates':>6} {'hold':>5} {'promote':>8} {'wait':>5}"
    )
    for name, s in summary.items():

        def f(x: Any) -> str:
            return "-" if x is None else f"{x:g}"

        print(
            f"{name:<15} {s['rollouts']:>5} {100 * s['rollback_rate']:>8.1f}% "
            f"{100 * s['within_3_windows']:>7.1f}% {f(s['median_windows']):>8} {f(s['median_requests']):>8} "
            f"{f(s['max_requests']):>8} {s['by_tripwire']:>5} {s['by_gates']:>6} {s['by_max_hold']:>5} "
            f"{s['promoted']:>8} {s['waited']:>5}"
        )
    print(f"\n{len(jobs)} rollouts in {elapsed:.1f} s ({args.jobs} processes, {args.rate} requests/window)")
    if args.out:
        doc = {
            "benchmark": "sim_controller",
            "quick": args.quick,
            "rate_per_window": args.rate,
            "interval_s": INTERVAL_S,
            "elapsed_s": round(elapsed, 2),
            "machine": {
                "python": platform.python_version(),
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
            },
            "policies": {
                "steps": StepPolicy.from_config(CanaryConfig()).steps,
                "gates_default": GatePolicy.from_config(CanaryConfig()).__repr__(),
            },
            "scenarios": summary,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
