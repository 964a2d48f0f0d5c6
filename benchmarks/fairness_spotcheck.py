"""How often the fairness spot-check in ``shadow_eval.json`` flags a segment, with and without a group moved.

    .venv/bin/python benchmarks/fairness_spotcheck.py [--runs 300] [--seed 1000]

Runs :class:`proxy.shadow.evaluation.ShadowEvaluation` (the aggregate the proxy keeps) over simulated
mirrored pairs from the generator the tests use (``tests/shadow/test_evaluation.py``'s
``decisions_by_segment``): 8 segments with baseline decision rates 10 % to 45 %, pairs in random order, and
10 % of decisions changing both ways without moving any rate (a retrained model's churn). Two questions:

- *false flags*: every group moves alike (0, or +5 points): the share of runs that flag any group;
- *power*: one group moved by -10 or -5 points while the others move +2: the share of runs that flag it,
  and the share that flag another group alongside.

Prints one line per scenario; the README's figures come from a run of this script.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.shadow.test_evaluation import NOW, decisions_by_segment

RATES = {f"region-{i}": 0.1 + 0.05 * i for i in range(8)}
CHURN = 0.1


def flagged(shifts: dict[str, float], per_segment: int, seed: int) -> list[str]:
    ev = decisions_by_segment(RATES, shifts, per_segment=per_segment, seed=seed, churn=CHURN)
    return [f["segment"] for f in ev.report(NOW)["fairness"]["flagged"]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=300, help="seeded runs per scenario")
    parser.add_argument("--seed", type=int, default=1000, help="the first run's seed")
    args = parser.parse_args(argv)
    seeds = range(args.seed, args.seed + args.runs)
    for shift in (0.0, 0.05):
        any_flag = sum(bool(flagged(dict.fromkeys(RATES, shift), 150, s)) for s in seeds)
        print(
            f"every group {shift:+.2f}, 150 pairs per group: a group flagged in {any_flag}/{args.runs} runs"
        )
    moved = "region-4"  # base rate 30%
    for per_segment, move in ((150, -0.10), (300, -0.05), (300, -0.10), (600, -0.05)):
        hit = other = 0
        for s in seeds:
            flags = flagged(dict.fromkeys(RATES, 0.02) | {moved: move}, per_segment, s)
            hit += moved in flags
            other += any(name != moved for name in flags)
        print(
            f"{moved} {move:+.2f} (others +0.02), {per_segment} pairs per group: flagged in "
            f"{hit / args.runs:.0%} of runs, another group flagged alongside in {other / args.runs:.1%}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
