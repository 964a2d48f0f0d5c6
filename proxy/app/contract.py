"""``rollguard contract diff OLD.json NEW.json``: is a new version of a route's schema safe for its readers?

Both files are read and checked as draft 2020-12 JSON Schemas, then compared by
:func:`proxy.content.contract_diff.diff_schemas` for a request schema (clients send, the model reads) or a
response schema (the model sends, consumers read). ``--kind`` says which; without it the new file's name
does when it holds exactly one of the words (``infer_request.json``), and otherwise the command asks.
It prints one line per change, ``BREAKING`` or ``note``, with its JSON pointer, then the verdict; with
``-o json``, one document holding the same.

Exit status: 0 when compatible, 1 when a change breaks (for CI), 2 for a bad argument or a file that cannot
be read, is not JSON, or is not a valid schema (the message names the file and the problem).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import orjson

from proxy.content.contract_diff import (
    KINDS,
    Finding,
    Kind,
    UnusableSchema,
    diff_schemas,
    is_breaking,
    schema_problem,
)
from proxy.content.text import printable

EXIT_COMPATIBLE, EXIT_BREAKING, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A bad argument or an unusable file; the message names it."""


def run_contract_diff(args: argparse.Namespace) -> int:
    """The whole command; see the module docstring for the exit status."""
    try:
        old, new = _load(args.old), _load(args.new)
        kind = args.kind or _kind_from_name(args.new)
        try:
            findings = diff_schemas(old, new, kind)
        except UnusableSchema as exc:
            raise UsageError(f"{args.old if exc.side == 'old' else args.new}: {exc.problem}") from exc
    except UsageError as exc:
        print(f"rollguard: {printable(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    if args.output == "json":
        print(orjson.dumps(_document(args, kind, findings), option=orjson.OPT_INDENT_2).decode())
    else:
        for finding in findings:
            print(finding_line(finding))
        print(verdict_line(kind, findings))
    return EXIT_BREAKING if is_breaking(findings) else EXIT_COMPATIBLE


def finding_line(finding: Finding) -> str:
    """``BREAKING /properties/x: minimum raised 0 -> 1 (a request the old schema accepted is refused)``."""
    label = "BREAKING" if finding.breaking else "note    "
    return printable(f"{label} {finding.pointer or '(root)'}: {finding.message}")


def verdict_line(kind: Kind, findings: list[Finding]) -> str:
    breaking = sum(f.breaking for f in findings)
    notes = len(findings) - breaking
    if not findings:
        return f"verdict: compatible ({kind} schema: no change a validator sees)"
    counts = f"{breaking} breaking, {notes} {'note' if notes == 1 else 'notes'}"
    return f"verdict: {'BREAKING' if breaking else 'compatible'} ({kind} schema: {counts})"


def _document(args: argparse.Namespace, kind: Kind, findings: list[Finding]) -> dict[str, Any]:
    breaking = sum(f.breaking for f in findings)
    return {
        "kind": kind,
        "old": args.old,
        "new": args.new,
        "compatible": breaking == 0,
        "breaking": breaking,
        "notes": len(findings) - breaking,
        "findings": [f.as_dict() for f in findings],
    }


def _load(path: str) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read: {exc}") from exc
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not JSON: {exc}") from exc
    problem = schema_problem(document)
    if problem is not None:
        raise UsageError(f"{path}: {problem}")
    return document


def _kind_from_name(path: str) -> Kind:
    named = [kind for kind in KINDS if kind in Path(path).name.lower()]
    if len(named) != 1:
        raise UsageError(f"{path}: say --kind request or --kind response (the file name does not tell)")
    return named[0]
