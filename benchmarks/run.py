"""rollguard benchmark harness: the proxy against its anchors, in one run, pinned the same way on every row.

    .venv/bin/python benchmarks/run.py [--duration 10] [--connections 50] [--quick] [--only a,b] [--out F]

Each row starts a static nginx "model server" pair (baseline v1, candidate v2), the proxy under test, waits
until they answer, warms up, runs wrk with a small JSON POST, and stops everything again. Shadow rows also
mirror to the candidate (or to a hung server) and watch the proxy's resident memory; overload rows run 3x
the connections and read the admitted requests' latency from rollguard's own histogram. See README.md.

This file lists the row groups and runs them: the rows, their thresholds and tables are in groups/*.py,
running a row in harness.py, the common table and the result file in report.py.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import harness
import machine
import report
from groups import contracts, core, fallback, overload, shadow, tracing

# In the order their rows run and their tables print.
ROW_GROUPS = (core.GROUP, shadow.GROUP, contracts.GROUP, fallback.GROUP, overload.GROUP, tracing.GROUP)
ROWS = tuple(row for group in ROW_GROUPS for row in group.rows)
ROW_NAMES = tuple(row.name for row in ROWS)
GROUPS = {group.name: tuple(r.name for r in ROWS if group.name in r.groups) for group in ROW_GROUPS}
UNANCHORED = tuple(row.name for row in ROWS if row.load_factor != 1)  # no ratio to the anchors' load


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="rollguard proxy benchmark against its anchors")
    parser.add_argument("--duration", type=float, default=None, help="seconds per row (default 10)")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections (default 50)")
    parser.add_argument("--quick", action="store_true", help="3-second smoke run per row")
    parser.add_argument(
        "--only",
        default="",
        help=f"comma-separated rows or groups ({', '.join(GROUPS)}); rows: {','.join(ROW_NAMES)}",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="result file (default results/bench-<UTC>.json)"
    )
    parser.add_argument("--keep-tmp", action="store_true", help="keep configs and server logs for debugging")
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 3.0 if args.quick else 10.0
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(only) - set(ROW_NAMES) - set(GROUPS))
    if unknown:
        parser.error(
            f"unknown rows {unknown}; choose groups {','.join(GROUPS)} or rows {','.join(ROW_NAMES)}"
        )
    chosen = {name for item in only for name in GROUPS.get(item, (item,))}
    args.rows = [row for row in ROWS if not only or row.name in chosen]
    return args


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    # The first signal unwinds the run (every ExitStack stops its servers); further ones are ignored so a
    # second Ctrl-C cannot cut that teardown short and leave servers behind.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            print(f"error: {tool} not found (apt-get install {tool})", file=sys.stderr)
            return 2
    problems = harness.check_fixtures()
    for problem in problems:
        print(problem, file=sys.stderr)
    if any(p.startswith("error:") for p in problems):
        return 2
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    started = datetime.now(UTC)
    pinning = harness.choose_pinning()
    info = machine.info(harness.REPO)
    heavy = [r.name for r in args.rows if r.load_factor != 1]
    print(
        f"{len(args.rows)} rows x {args.duration:g} s, {args.connections} connections"
        + (f" ({overload.OVERLOAD_FACTOR * args.connections} in {', '.join(heavy)})" if heavy else "")
        + f"; {pinning.note}"
    )
    rows: list[dict[str, Any]] = []
    try:
        with harness.run_dir(args.keep_tmp) as tmp:
            for index, row in enumerate(args.rows, 1):
                row_dir = tmp / row.name
                row_dir.mkdir(mode=0o711)
                ctx = harness.RunContext(row_dir, pinning, args.connections)
                rows.append(harness.run_row(row, ctx, args.connections, args.duration))
                report.print_row(index, len(args.rows), rows[-1], ROW_GROUPS)
                # Loopback sockets from the last row linger in TIME_WAIT; a short pause keeps rows apart.
                time.sleep(0.5)
    except KeyboardInterrupt:
        print("\ninterrupted: servers stopped, no result written", file=sys.stderr)
        return 130
    info["loadavg_at_end"] = os.getloadavg()  # a busy neighbour during the run shows up here
    ratios = report.anchor_ratios(rows, UNANCHORED)
    for group in ROW_GROUPS:  # in order: a group may extend a ratio an earlier group started
        group.add_ratios(rows, ratios)
    results = {group.name: group.results(rows, ratios) for group in ROW_GROUPS}
    print()
    print(report.render_table(rows, ratios, ROW_GROUPS, results))
    out = args.out or report.RESULTS_DIR / f"bench-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    doc = report.result_doc(args, started, info, pinning, ROW_GROUPS, GROUPS, rows, ratios, results)
    latest = report.write_results(doc, out)
    print(f"\nwrote {out}" + (f" and {latest}" if latest and latest != out else ""))
    return 1 if any(r["status"] == "failed" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
