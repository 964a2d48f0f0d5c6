"""Per-module kill rates of the last mutation run (``make mutate``), read from mutmut's ``mutants/*.meta``.

    .venv/bin/python benchmarks/mutation_report.py [--mutants mutants] [--survivors]

One row per module of ``[tool.mutmut] only_mutate``: its mutants, how many the tests killed (a mutant that
made a test hang until the time limit counts as killed: the tests noticed it), survived, had no test that
calls the function, and the kill rate over all of them. ``--survivors`` lists the mutants that lived, to
read with ``.venv/bin/mutmut show NAME``. The equivalent ones, with their reasons, are in
``benchmarks/results/mutation.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# mutmut's exit codes per mutant (mutmut/stats.py): the ones a report tells apart.
KILLED = {1, 3}
TIMEOUT = {36, 24, -24, 152, 255}
SURVIVED = {0}
NO_TESTS = {5, 33}


def modules() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    paths: list[str] = config["tool"]["mutmut"]["only_mutate"]
    return paths


def outcome(code: int | None) -> str:
    if code in KILLED or code in TIMEOUT:
        return "killed"
    if code in SURVIVED:
        return "survived"
    if code in NO_TESTS:
        return "no tests"
    return "not run" if code is None else "other"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", type=Path, default=ROOT / "mutants")
    parser.add_argument("--survivors", action="store_true", help="list the mutants that were not killed")
    args = parser.parse_args(argv)

    rows: list[tuple[str, Counter[str]]] = []
    lived: list[str] = []
    for module in modules():
        meta = args.mutants / f"{module}.meta"
        if not meta.exists():
            continue
        codes: dict[str, int | None] = json.loads(meta.read_text("utf-8"))["exit_code_by_key"]
        counts = Counter(outcome(code) for code in codes.values())
        if counts["not run"] == len(codes):
            continue  # a MODULE=... run of another module: nothing was tried here
        rows.append((module, counts))
        lived += sorted(name for name, code in codes.items() if outcome(code) not in ("killed", "not run"))
    if not rows:
        print(f"no mutation results under {args.mutants}: run `make mutate` first", file=sys.stderr)
        return 1

    header = f"{'module':<34} {'mutants':>7} {'killed':>7} {'survived':>8} {'no tests':>8} {'kill rate':>9}"
    print(header)
    print("-" * len(header))
    for module, c in rows:
        total = sum(c.values()) - c["not run"]
        rate = 100.0 * c["killed"] / total if total else 0.0
        print(f"{module:<34} {total:>7} {c['killed']:>7} {c['survived']:>8} {c['no tests']:>8} {rate:>8.1f}%")
    if args.survivors and lived:
        print()
        print("\n".join(lived))
    return 0


if __name__ == "__main__":
    sys.exit(main())
