"""The canary's judgement under production's conditions: rollguard (through ``rollguard backtest``) against
a Flagger-style and a Kayenta-style judge, on the same traces.

    .venv/bin/python benchmarks/decision_quality.py --quick --out /tmp/dq.json
    .venv/bin/python benchmarks/decision_quality.py --jobs 2                  # 200 A/A, 100 regression runs
    .venv/bin/python benchmarks/decision_quality.py --only p95_up_20,errors_1_to_2 --runs 50
    .venv/bin/python benchmarks/decision_quality.py --set canary.gates.error_rate=0.05 --anchors-only

For every scenario of ``decision_traces.py`` and every run (seed ``--seed + i``; the same seeds in every
scenario, so scenarios differ only in what they change), the trace is generated twice from its seed: once
streamed through both anchors (``decision_anchors.py``), once into ``python -m proxy backtest --config
CFG - --json --seed S`` on stdin. Each replay stops at its rollout's outcome, so a trace is only generated
as far as the slowest judge needs. The traces carry no sticky keys unless ``--sticky`` (the backtest routes
a keyed request by the live sticky hash, a keyless one by its seeded draw), so routing is random per
request, as in the targets' conditions.

CFG is ``config/rollguard.yaml``'s ``canary:`` and ``shadow:`` sections with ``canary.interval`` set to
the window (60 s), in a minimal valid config (one scored route, upstreams that are never contacted, an
operator token from an environment variable set only for the subprocess); ``--set KEY=VALUE`` changes a
key of it (YAML value). It is checked with ``rollguard check-config`` before the runs.

What is counted:

- A/A (every rollback is a false one): false rollbacks per full rollout, median windows to promotion
  (rollguard's count includes its shadow windows), and stuck = neither promoted nor rolled back by the
  trace's end (rollguard: ``waiting`` at ``max_hold`` or ``running``).
- Regressions, judged at 5% weight: the anchors start at the 5% step; rollguard cannot be started there,
  so it walks from its start (shadow, 1%) and its windows are counted from the moment it reached 5%. A
  rollback before 5% (in shadow, or at 1%: caught with less exposure) counts as detected within any K.
  "<= K" uses each scenario's K from the targets.
- ``all_fail`` (from the first step, for every judge): seconds from the candidate's first user traffic to
  the rollback (rollguard's trip-wire rolls back at the trace time of the request that decides it); a
  rollback in rollguard's shadow phase, before any user traffic, is reported as such.

Exit status 0 always: the numbers are the result, printed and written with the machine they ran on.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing import Pool
from pathlib import Path
from typing import IO, Any

import orjson
import yaml

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))

import decision_anchors as anchors
import decision_traces as traces
import machine  # benchmarks/machine.py: what the numbers were measured on

from proxy.rollout.trace import TracedRequest

TOKEN_ENV = "ROLLGUARD_OPERATOR_TOKEN"
WINDOW_S = 60.0
WINDOWS = 40  # a full rollout with room: shadow + four judged steps, most of a max_hold at one of them
AA_RUNS, REGRESSION_RUNS = 200, 100
QUICK_RUNS, QUICK_WINDOWS = 1, 12  # a smoke test of every scenario and judge, about a minute


@dataclass(frozen=True, slots=True)
class Target:
    """A regression's detection target at 5% weight: ``share`` of rollouts rolled back within ``k``."""

    k: int
    share: float


TARGETS = {
    "errors_1_to_5": Target(3, 0.98),
    "p95_up_50": Target(3, 0.98),
    "p95_up_20": Target(4, 0.95),
    "errors_0_to_1": Target(5, 0.95),
    "errors_1_to_2": Target(10, 0.90),
    "tail_only_p99x2": Target(6, 0.90),
}
AA_FALSE_ROLLBACK = 0.01  # per full rollout, every A/A scenario
AA_MEDIAN_WINDOWS = 8  # at 4,000 requests per window
ALL_FAIL_S = 1.0  # after the consecutive_failures-th failure

JUDGES = ("rollguard", "flagger", "kayenta")
JUDGED_AT = anchors.STEPS[1]  # the weight the regressions are judged at (5%)
# The trip-wire's reason counts the candidate failures that decided it (a run, or the SPRT's events).
TRIP_FAILURES = re.compile(r"(\d+) consecutive candidate failures|(\d+) of the last \d+ failed requests")


def kind(sc: traces.Scenario) -> str:
    return "aa" if sc.aa else "all_fail" if sc.candidate.always_fail else "regression"


# --- the config the backtest replays ------------------------------------------------------------------


def backtest_config(folder: Path, interval_s: float, sets: list[str]) -> Path:
    """A minimal valid config around the project's canary and shadow settings."""
    shipped = yaml.safe_load((REPO / "config" / "rollguard.yaml").read_text())
    doc: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "admin": {
            "listen": "127.0.0.1:0",
            "tokens": [{"name": "ops", "role": "operator", "token": f"env:{TOKEN_ENV}"}],
        },
        "state": {"url": f"file:{folder / 'state.json'}"},
        "upstreams": {  # never contacted: the backtest replays answers
            "baseline": {"url": "http://127.0.0.1:9", "version": "v1", "timeout": "2s"},
            "candidate": {"url": "http://127.0.0.1:10", "version": "v2", "timeout": "2s"},
        },
        "routes": [{"name": "infer", "path": "/v1/infer", "methods": ["POST"], "score": "/score"}],
        "canary": {**shipped["canary"], "interval": f"{interval_s:g}s"},
        "shadow": shipped["shadow"],
        "logging": {"access_log": "off"},
    }
    for item in sets:
        path, _, value = item.partition("=")
        *parents, leaf = path.split(".")
        node = doc
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = yaml.safe_load(value)
    out = folder / "backtest.yaml"
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def _env() -> dict[str, str]:
    return {**os.environ, TOKEN_ENV: os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(24)}


def backtest_unavailable(config: Path) -> str | None:
    """Why the rollguard column cannot be measured, or None when ``backtest`` exists and takes the config."""
    cmd = [sys.executable, "-m", "proxy", "backtest", "--help"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0 or "--json" not in proc.stdout:
        return "backtest not available"
    rollguard = Path(sys.executable).with_name("rollguard")
    check = [str(rollguard)] if rollguard.exists() else [sys.executable, "-m", "proxy"]
    proc = subprocess.run(
        [*check, "check-config", str(config)],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        return f"config refused: {(proc.stderr or proc.stdout).strip()}"
    return None


# --- one run: a trace through the three judges -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Job:
    scenario: str
    run: int
    seed: int
    windows: int
    window_s: float
    users: int
    config: str | None  # None: the rollguard column is not measured
    kayenta: tuple[float, float]  # conf_level, fraction


def _trace(job: Job) -> Iterator[TracedRequest]:
    sc = traces.SCENARIOS[job.scenario]
    return traces.requests(sc, windows=job.windows, seed=job.seed, window_s=job.window_s, users=job.users)


def run_anchors(job: Job) -> dict[str, dict[str, Any]]:
    sc = traces.SCENARIOS[job.scenario]
    start = 1 if kind(sc) == "regression" else 0  # regressions are judged at 5%
    conf, fraction = job.kayenta
    walks = [anchors.FlaggerStyle(start), anchors.KayentaStyle(start, conf_level=conf, fraction=fraction)]
    anchors.run(_trace(job), walks, seed=job.seed, window_s=job.window_s)
    out = {}
    for w in walks:
        r = w.final().to_json()
        rolled = r["outcome"] == "rolled_back"
        r["windows_at_5"] = r["windows"] if rolled and start == 1 else None
        r["exposed_s"] = r["rollback_t"] if rolled else None  # the canary starts at t = 0
        out[w.name] = r
    return out


def _feed(stdin: IO[bytes], trace: Iterator[TracedRequest]) -> None:
    """Stream the trace into the backtest until it ends or stops reading (its rollout ended)."""
    with contextlib.suppress(BrokenPipeError, OSError, ValueError):
        for req in trace:
            stdin.write(req.to_line())
        stdin.close()


def run_rollguard(job: Job) -> dict[str, Any]:
    assert job.config is not None
    cmd = [sys.executable, "-m", "proxy", "backtest", "--config", job.config, "-", "--json"]
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [*cmd, "--seed", str(job.seed)],
            cwd=REPO,
            env=_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
        )
        assert proc.stdin is not None and proc.stdout is not None
        feeder = threading.Thread(target=_feed, args=(proc.stdin, _trace(job)), daemon=True)
        feeder.start()
        out = proc.stdout.read()
        proc.wait()
        feeder.join()
        err.seek(0)
        stderr = err.read().decode(errors="replace").strip()
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}: {stderr[-500:]}"}
    docs = [orjson.loads(line) for line in out.splitlines() if line.strip()]
    if not docs or docs[-1].get("summary") is not True:
        return {"error": f"no summary in the output: {stderr[-500:]}"}
    return read_timeline(docs[:-1], docs[-1], job.window_s)


def read_timeline(
    decisions: list[dict[str, Any]], summary: dict[str, Any], interval_s: float
) -> dict[str, Any]:
    """The figures of one backtest: its outcome, and when the candidate reached traffic, 5%, rollback."""
    canary_t = next((d["t"] for d in decisions if d.get("phase") == "canary"), None)
    at_5 = next(
        (d["t"] for d in decisions if d.get("phase") == "canary" and d.get("weight") == JUDGED_AT), None
    )
    rollback = next((i for i, d in enumerate(decisions) if d.get("action") == "ROLLBACK"), None)
    r: dict[str, Any] = {
        "outcome": summary["outcome"],
        "windows": summary["windows"],
        "rolled_back_by": summary.get("rolled_back_by"),
        "decisive_gates": summary.get("decisive_gates", []),
        "rollback_t": None,
        "rolled_back_at": None,  # "shadow" or the weight it was rolled back from
        "windows_at_5": None,
        "exposed_s": None,
        "tripped_at_failure": None,
        "reason": decisions[-1].get("reason") if decisions else None,
    }
    if rollback is not None:
        d, before = decisions[rollback], decisions[rollback - 1] if rollback else {}
        r["rollback_t"] = d["t"]
        r["rolled_back_at"] = "shadow" if before.get("phase") == "shadow" else before.get("weight")
        if at_5 is not None:
            r["windows_at_5"] = max(1, math.ceil((d["t"] - at_5) / interval_s - 1e-9))
        else:
            r["windows_at_5"] = 0  # caught before 5%
        if canary_t is not None:
            r["exposed_s"] = round(d["t"] - canary_t, 3)
        if d.get("actor") == "tripwire" and (m := TRIP_FAILURES.search(str(d.get("reason")))):
            r["tripped_at_failure"] = int(m.group(1) or m.group(2))
    return r


def run_job(job: Job) -> dict[str, Any]:
    started = time.perf_counter()
    result: dict[str, Any] = {"scenario": job.scenario, "run": job.run, "seed": job.seed}
    result |= run_anchors(job)
    anchors_s = time.perf_counter() - started
    if job.config is not None:
        result["rollguard"] = run_rollguard(job)
    result["seconds"] = {
        "anchors": round(anchors_s, 2),
        "rollguard": round(time.perf_counter() - started - anchors_s, 2),
    }
    return result


# --- summaries and the table -----------------------------------------------------------------------------


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def summarize(sc: traces.Scenario, runs: list[dict[str, Any]], consecutive_failures: int) -> dict[str, Any]:
    """Per judge, the figures the scenario's kind is read by."""
    out: dict[str, Any] = {}
    target = TARGETS.get(sc.name)
    for judge in JUDGES:
        rs = [r[judge] for r in runs if judge in r and "error" not in r[judge]]
        errors = [r[judge]["error"] for r in runs if judge in r and "error" in r[judge]]
        if not rs:
            out[judge] = {"runs": 0, "errors": errors[:3]} if errors else None
            continue
        n = len(rs)
        rolled = [r for r in rs if r["outcome"] == "rolled_back"]
        promoted = [r for r in rs if r["outcome"] == "promoted"]
        s: dict[str, Any] = {
            "runs": n,
            "rolled_back": len(rolled) / n,
            "promoted": len(promoted) / n,
            "stuck": (n - len(rolled) - len(promoted)) / n,
            "median_windows_to_promote": _median([r["windows"] for r in promoted]),
            "median_windows_to_rollback": _median([r["windows"] for r in rolled]),
            "errors": errors[:3],
        }
        if target is not None:
            caught = [r for r in rolled if r["windows_at_5"] is not None and r["windows_at_5"] <= target.k]
            s["within_k"] = len(caught) / n
            s["median_windows_at_5"] = _median(
                [r["windows_at_5"] for r in rolled if r["windows_at_5"] is not None]
            )
        if kind(sc) == "all_fail":
            exposed = [r["exposed_s"] for r in rolled if r["exposed_s"] is not None]
            s["median_s_to_rollback"] = _median(exposed)
            s["max_s_to_rollback"] = max(exposed, default=None)
            s["in_shadow"] = sum(r.get("rolled_back_at") == "shadow" for r in rolled) / n
            if judge == "rollguard":
                tripped = [r["tripped_at_failure"] for r in rolled if r["tripped_at_failure"] is not None]
                s["max_tripped_at_failure"] = max(tripped, default=None)
                # A trip-wire rollback lands at the trace time of the failure that decides it, before the
                # next request is routed: within 1 s of the consecutive_failures-th failure when decided by
                # it at the latest. A rollback in shadow, before any user traffic, is in time too.
                s["in_time"] = (
                    sum(
                        r["rolled_back_at"] == "shadow"
                        or (r["tripped_at_failure"] or consecutive_failures + 1) <= consecutive_failures
                        for r in rolled
                    )
                    / n
                )
        if judge == "rollguard":
            s["by"] = {b: sum(r["rolled_back_by"] == b for r in rolled) for b in ("gates", "tripwire")}
            gates: dict[str, int] = {}
            for r in rolled:
                for g in r["decisive_gates"]:
                    gates[g] = gates.get(g, 0) + 1
            s["decisive_gates"] = gates
            s["outcomes"] = {o: sum(r["outcome"] == o for r in rs) for o in ("waiting", "running")}
        out[judge] = s
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:g}"


def target_text(sc: traces.Scenario) -> str:
    k = kind(sc)
    if k == "aa":
        median = f", median <= {AA_MEDIAN_WINDOWS} w" if sc.per_minute == traces.PER_MINUTE else ""
        return f"false rb <= {_pct(AA_FALSE_ROLLBACK)}{median}"
    if k == "all_fail":
        return f"rb <= {ALL_FAIL_S:g} s after 5th failure"
    t = TARGETS[sc.name]
    return f">= {100 * t.share:.0f}% within {t.k} w"


def met(sc: traces.Scenario, s: dict[str, Any]) -> bool:
    """Whether rollguard's figures meet the scenario's target."""
    k = kind(sc)
    if k == "aa":
        ok = s["rolled_back"] <= AA_FALSE_ROLLBACK
        if sc.per_minute == traces.PER_MINUTE:
            median = s["median_windows_to_promote"]
            ok = ok and median is not None and median <= AA_MEDIAN_WINDOWS
        return bool(ok)
    if k == "regression":
        return bool(s["within_k"] >= TARGETS[sc.name].share)
    return bool(s["in_time"] == 1.0)


def cell(sc: traces.Scenario, s: dict[str, Any] | None, reason: str | None) -> str:
    if s is None:
        return f"n/a: {reason}" if reason else "n/a"
    if not s["runs"]:
        return "error: " + "; ".join(s["errors"])[:120]
    k = kind(sc)
    if k == "aa":
        text = (
            f"false rb {_pct(s['rolled_back'])} · {_num(s['median_windows_to_promote'])} w to promote · "
            f"stuck {_pct(s['stuck'])}"
        )
    elif k == "regression":
        t = TARGETS[sc.name]
        text = (
            f"detected {_pct(s['rolled_back'])} · <= {t.k} w {_pct(s['within_k'])} "
            f"(median {_num(s['median_windows_at_5'])} w) · promoted {_pct(s['promoted'])}"
        )
    else:
        text = f"rb {_pct(s['rolled_back'])} · median {_num(s['median_s_to_rollback'])} s"
        if s["in_shadow"]:
            text += f" · in shadow {_pct(s['in_shadow'])}"
    if "by" in s and s["by"]["tripwire"]:
        text += f" · trip-wire {s['by']['tripwire']}"
        if s.get("max_tripped_at_failure") is not None:
            text += f" (by failure #{s['max_tripped_at_failure']} at the latest)"
    return text


def table(summary: dict[str, dict[str, Any]], rollguard_na: str | None) -> str:
    lines = [
        "| scenario | runs | target | rollguard | Flagger-style | Kayenta-style |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in summary.items():
        sc = traces.SCENARIOS[name]
        rg = row["judges"]["rollguard"]
        mark = ""
        if rg is not None and rg["runs"]:
            mark = " ✅" if met(sc, rg) else " ❌"
        cells = [
            cell(sc, rg, rollguard_na) + mark,
            cell(sc, row["judges"]["flagger"], None),
            cell(sc, row["judges"]["kayenta"], None),
        ]
        lines.append(f"| {name} | {row['runs']} | {target_text(sc)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--runs", type=int, help=f"runs per scenario (default {AA_RUNS} A/A, {REGRESSION_RUNS} others)"
    )
    ap.add_argument(
        "--quick", action="store_true", help=f"{QUICK_RUNS} runs of {QUICK_WINDOWS} windows per scenario"
    )
    ap.add_argument("--only", help="comma-separated scenario names")
    ap.add_argument("--windows", type=int, help=f"trace length in windows (default {WINDOWS})")
    ap.add_argument("--seed", type=int, default=1, help="run i uses seed SEED + i (default 1)")
    ap.add_argument(
        "--jobs", type=int, default=1, help="parallel processes (default 1: the machine is shared)"
    )
    ap.add_argument("--sticky", action="store_true", help="give the traces sticky keys (20,000 Zipf users)")
    ap.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="change the replayed config"
    )
    ap.add_argument("--anchors-only", action="store_true", help="skip the rollguard column")
    ap.add_argument("--kayenta-conf", type=float, default=0.98, help="Kayenta's confidence level (0.98)")
    ap.add_argument("--kayenta-fraction", type=float, default=0.25, help="Kayenta's effect fraction (0.25)")
    ap.add_argument(
        "--out", type=Path, help="result file (default results/bench-decision-quality-<UTC>.json)"
    )
    args = ap.parse_args(argv)
    windows = args.windows or (QUICK_WINDOWS if args.quick else WINDOWS)

    names = list(traces.SCENARIOS)
    if args.only:
        unknown = set(args.only.split(",")) - set(names)
        if unknown:
            ap.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
        names = [n for n in names if n in args.only.split(",")]

    def runs_of(name: str) -> int:
        if args.runs:
            return int(args.runs)
        if args.quick:
            return QUICK_RUNS
        return AA_RUNS if traces.SCENARIOS[name].aa else REGRESSION_RUNS

    work = Path(tempfile.mkdtemp(prefix="rollguard-decision-quality-"))
    config = backtest_config(work, WINDOW_S, args.set)
    rollguard_na = "skipped (--anchors-only)" if args.anchors_only else backtest_unavailable(config)
    print(f"rollguard: {rollguard_na or 'backtest of ' + str(config)}", flush=True)
    jobs = [
        Job(
            name,
            i,
            args.seed + i,
            windows,
            WINDOW_S,
            traces.USERS if args.sticky else 0,
            None if rollguard_na else str(config),
            (args.kayenta_conf, args.kayenta_fraction),
        )
        for name in names
        for i in range(runs_of(name))
    ]
    started = time.perf_counter()
    done: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    with contextlib.ExitStack() as stack:
        if args.jobs > 1:
            pool = stack.enter_context(Pool(args.jobs))
            results: Iterator[dict[str, Any]] = pool.imap_unordered(run_job, jobs, chunksize=1)
        else:
            results = map(run_job, jobs)
        for count, r in enumerate(results, 1):
            done[r["scenario"]].append(r)
            if count % 10 == 0 or count == len(jobs):
                print(f"  {count}/{len(jobs)} runs, {time.perf_counter() - started:.0f} s", flush=True)
    elapsed = time.perf_counter() - started

    replayed = yaml.safe_load(config.read_text())
    consecutive_failures = int(replayed["canary"]["tripwire"]["consecutive_failures"])
    summary: dict[str, dict[str, Any]] = {}
    for name in names:
        runs = sorted(done[name], key=lambda r: r["run"])
        sc = traces.SCENARIOS[name]
        per_run = {
            part: sum(r["seconds"][part] for r in runs) / len(runs) for part in ("anchors", "rollguard")
        }
        summary[name] = {
            "note": sc.note,
            "kind": kind(sc),
            "runs": len(runs),
            "target": target_text(sc),
            "seconds_per_run": {k: round(v, 2) for k, v in per_run.items()},
            "judges": summarize(sc, runs, consecutive_failures),
            "runs_detail": [{k: v for k, v in r.items() if k != "scenario"} for r in runs],
        }
    print()
    print(table(summary, rollguard_na))
    print()
    print(
        f"seconds per run of {windows} windows (anchors + rollguard), and the default run counts at --jobs 1:"
    )
    full = 0.0
    for name, row in summary.items():
        per = row["seconds_per_run"]
        n_full = AA_RUNS if row["kind"] == "aa" else REGRESSION_RUNS
        full += n_full * (per["anchors"] + per["rollguard"])
        print(
            f"  {name:<18} {per['anchors']:6.2f} + {per['rollguard']:6.2f} s   x{n_full} = "
            f"{n_full * (per['anchors'] + per['rollguard']) / 60:5.1f} min"
        )
    print(
        f"{len(jobs)} runs in {elapsed:.0f} s ({args.jobs} processes); "
        f"the default run counts of these scenarios would take ~{full / 60:.0f} min of one process "
        f"({windows} windows; rollouts that hold to max_hold cost the most)"
    )

    out = args.out or BENCH / "results" / f"bench-decision-quality-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    doc = {
        "benchmark": "decision_quality",
        "machine": machine.info(REPO),
        "settings": {
            "quick": args.quick,
            "windows": windows,
            "window_s": WINDOW_S,
            "seed": args.seed,
            "sticky": args.sticky,
            "set": args.set,
            "kayenta": {"conf_level": args.kayenta_conf, "fraction": args.kayenta_fraction},
            "rollguard": rollguard_na or "backtest",
            "config": replayed,
        },
        "elapsed_s": round(elapsed, 1),
        "scenarios": summary,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    print(f"wrote {out}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
