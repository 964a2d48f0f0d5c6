"""``rollguard backtest`` replay speed: trace requests replayed per second, on one core.

    .venv/bin/python benchmarks/bench_backtest.py [--quick] [--runs 3] [--out FILE]
    taskset -c 1 .venv/bin/python benchmarks/bench_backtest.py      # pinned, as the README's figure

Traces come from ``decision_traces.py`` (the decision benchmark's generator), ``--windows`` minutes of
its Poisson traffic at 4,000 requests a minute (32 minutes: ~128,000 requests; ``--quick``: 4 minutes),
written to a temporary JSONL file. Each row replays one trace with one config the way the command does
(``backtest`` over the open file, the decisions handed to a callback) and reports the best of ``--runs``
as requests/s: lines replayed over the wall time of the replay (start-up excluded; the last row, the
command itself in a subprocess, includes it). Configs: the shipped ``config/rollguard.yaml`` (a shadow
phase mirroring 10% of requests, 60 s windows, which on an A/A trace stays in shadow), and the same with
``shadow_samples: 0``, ``interval: 20s`` and ``paired_sample: 0.5``: the canary phase, where each window
judges two full reservoirs and half the candidate's requests are paired. The secrets the shipped config
names are set to placeholders when unset (a replay uses none of them).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

import decision_traces  # noqa: E402 - benchmarks/decision_traces.py, beside this script
import machine  # noqa: E402 - benchmarks/machine.py: what the numbers were measured on

from proxy.app.backtest import backtest  # noqa: E402
from proxy.config.load import load_config  # noqa: E402

PLACEHOLDERS = {
    "ROLLGUARD_OPERATOR_TOKEN": "bench-operator",
    "ROLLGUARD_VIEWER_TOKEN": "bench-viewer",
    "ROLLGUARD_PII_KEY": "bench-pii-key-0123456789",
}
CANARY_PHASE = {"shadow_samples": 0, "interval": "20s", "paired_sample": 0.5}
# (row, scenario, users: 0 = keyless routing by the seeded draw, config)
ROWS = (
    ("A/A sticky, shipped config", "aa_independent", decision_traces.USERS, "shipped"),
    ("A/A keyless, shipped config", "aa_independent", 0, "shipped"),
    ("brownout, shipped config", "aa_drift_brownout", decision_traces.USERS, "shipped"),
    ("A/A sticky, canary phase", "aa_independent", decision_traces.USERS, "canary"),
    ("A/A keyless, canary phase", "aa_independent", 0, "canary"),
)


def write_configs(folder: Path) -> dict[str, Path]:
    shipped = REPO / "config" / "rollguard.yaml"
    doc = yaml.safe_load(shipped.read_text(encoding="utf-8"))
    doc["canary"].update(CANARY_PHASE)
    # Relative paths in a config are relative to its folder: the shipped schemas are linked beside it.
    (folder / "config").mkdir()
    (folder / "config" / "schemas").symlink_to(REPO / "config" / "schemas")
    canary = folder / "config" / "canary.yaml"
    canary.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return {"shipped": shipped, "canary": canary}


def write_trace(folder: Path, scenario: str, users: int, windows: int) -> tuple[Path, int]:
    path = folder / f"{scenario}-{users}.jsonl"
    trace = decision_traces.requests(
        decision_traces.SCENARIOS[scenario], windows=windows, seed=11, users=users
    )
    with path.open("wb") as f:
        n = decision_traces.write(f, trace)
    return path, n


def replay_seconds(config_path: Path, trace: Path) -> tuple[float, dict[str, Any]]:
    config = load_config(config_path)
    decisions: list[dict[str, Any]] = []
    started = time.perf_counter()
    with trace.open("rb") as lines:
        summary = asyncio.run(backtest(config, lines, seed=0, on_decision=decisions.append))
    return time.perf_counter() - started, summary.to_json()


def command_seconds(config_path: Path, trace: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "proxy", "backtest", "--config", str(config_path), str(trace), "--json"],
        check=True,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="4-minute traces, one run: a smoke test")
    parser.add_argument("--windows", type=int, help="trace minutes (default 32; --quick 4)")
    parser.add_argument("--runs", type=int, help="runs per row, the best counts (default 3; --quick 1)")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    windows = args.windows or (4 if args.quick else 32)
    runs = args.runs or (1 if args.quick else 3)
    for name, value in PLACEHOLDERS.items():
        os.environ.setdefault(name, value)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        configs = write_configs(folder)
        traces: dict[tuple[str, int], tuple[Path, int]] = {}
        print(f"{'row':<30} {'lines':>8} {'requests':>9} {'outcome':>12} {'best s':>8} {'req/s':>9}")
        print("-" * 81)
        for row, scenario, users, config in ROWS:
            if (scenario, users) not in traces:
                traces[scenario, users] = write_trace(folder, scenario, users, windows)
            trace, lines = traces[scenario, users]
            timings = [replay_seconds(configs[config], trace) for _ in range(runs)]
            best, summary = min(timings, key=lambda t: t[0])
            rate = summary["requests"] / best
            results.append(
                {
                    "row": row,
                    "scenario": scenario,
                    "users": users,
                    "config": config,
                    "lines": lines,
                    "requests": summary["requests"],
                    "outcome": summary["outcome"],
                    "best_s": round(best, 4),
                    "requests_per_s": round(rate),
                }
            )
            print(
                f"{row:<30} {lines:>8} {summary['requests']:>9} {summary['outcome']:>12} "
                f"{best:>8.3f} {rate:>9,.0f}"
            )
        trace, lines = traces["aa_independent", decision_traces.USERS]
        best = min(command_seconds(configs["shipped"], trace) for _ in range(runs))
        _, summary = replay_seconds(configs["shipped"], trace)
        rate = summary["requests"] / best
        results.append(
            {
                "row": "the command, start-up included",
                "config": "shipped",
                "lines": lines,
                "requests": summary["requests"],
                "best_s": round(best, 4),
                "requests_per_s": round(rate),
            }
        )
        print(
            f"{'the command, start-up included':<30} {lines:>8} {summary['requests']:>9} {'':>12} "
            f"{best:>8.3f} {rate:>9,.0f}"
        )
    print(f"\nbest of {runs}; Python {platform.python_version()} on {platform.machine()}")
    if args.out is not None:
        machine.write_result(args.out, REPO, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
