"""``rollguard staging-report``: fold an external load run (k6, Locust) into ``staging_report.json``.

The files are read and judged by the same SLOs as ``rollguard loadtest`` (``--slo`` over the config's
``canary.gates``), one PASS/FAIL line per SLO and source, then the report is written with a section per
source (``load_k6``, ``load_locust``); with ``--admin`` the rest of the document is the proxy's own
staging report, fetched exactly as ``loadtest`` fetches it.

Exit status: 0 when every SLO passes on every source, 1 when one fails, 2 for bad arguments or a file
that cannot be read or is not what its flag says (the message names the file and the problem).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

from proxy.app.loadtest import (
    EXIT_FAIL,
    EXIT_PASS,
    EXIT_USAGE,
    UsageError,
    slos_from_args,
    staging_document,
    write_report,
)
from proxy.reports.external_load import (
    SECTION,
    ExternalLoadError,
    ExternalRun,
    parse_k6_summary,
    parse_locust_stats,
)


def run_staging_report(args: argparse.Namespace) -> int:
    """The whole command; see the module docstring for the exit status."""
    try:
        runs = _read(args)
        slos, slo_source = slos_from_args(args)
    except UsageError as exc:
        print(f"rollguard: {exc}", file=sys.stderr)
        return EXIT_USAGE
    sections = {}
    passed = True
    for path, run in runs:
        verdicts = run.judge(slos)
        for line in [v.line() for v in verdicts] + run.notes(slos) + [t.line() for t in run.thresholds]:
            print(line)
        passed = passed and all(v.passed for v in verdicts)
        sections[SECTION[run.source]] = run.section(file=str(path), slo_source=slo_source, verdicts=verdicts)
    print(f"verdict: {'PASS' if passed else 'FAIL'}")
    # The external tools do not say when their run began; the proxy's report (with --admin) does.
    document = asyncio.run(staging_document(args.admin, sections, None))
    try:
        target = write_report(Path(args.out), document)
    except OSError as exc:
        print(f"rollguard: --out {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {target}")
    return EXIT_PASS if passed else EXIT_FAIL


def _read(args: argparse.Namespace) -> list[tuple[Path, ExternalRun]]:
    if not args.k6 and not args.locust:
        raise UsageError("staging-report needs --k6 FILE, --locust FILE, or both")
    out = []
    if args.k6:
        out.append(_parse("--k6", Path(args.k6), parse_k6_summary, binary=True))
    if args.locust:
        out.append(_parse("--locust", Path(args.locust), parse_locust_stats, binary=False))
    return out


def _parse(
    flag: str, path: Path, parse: Callable[..., ExternalRun], *, binary: bool
) -> tuple[Path, ExternalRun]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot read it: {exc.strerror or exc}") from exc
    try:
        data = raw if binary else raw.decode("utf-8-sig")
        return path, parse(data)
    except UnicodeDecodeError as exc:
        raise UsageError(f"{flag} {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except ExternalLoadError as exc:
        raise UsageError(f"{flag} {path}: {exc}") from exc
