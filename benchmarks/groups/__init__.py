"""The row groups, one module each: its rows, its thresholds, and how its results are summed up, judged
and shown. run.py lists the groups in the order their rows run and their tables print.

Each module ends with its `GROUP`, which run.py hands to the report; what a group leaves out it does not
have (the core group has rows only: its numbers are the common table's).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness import Row
from report import Ratios, Results


def _no_ratios(rows: Results, ratios: Ratios) -> None:
    return None


def _no_results(rows: Results, ratios: Ratios) -> dict[str, Any]:
    return {}


def _no_table(rows: Results, ratios: Ratios, entries: dict[str, Any]) -> list[str]:
    return []


def _no_progress(row: dict[str, Any]) -> list[str]:
    return []


def _no_parameters(connections: int) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Group:
    name: str
    rows: tuple[Row, ...]  # the rows listed under it, in the order they run
    # Adds its ratios (against its own base row) to the run's, in place, after the common anchors' and
    # the earlier groups': a group may extend a ratio an earlier group started.
    add_ratios: Callable[[Results, Ratios], None] = _no_ratios
    # Its entries of the result file's top level: summaries and judged targets.
    results: Callable[[Results, Ratios], dict[str, Any]] = _no_results
    # Its table under the common one, given its own `results` entries; no lines when none of its rows ran.
    table: Callable[[Results, Ratios, dict[str, Any]], list[str]] = _no_table
    # Lines printed under a row's progress line as the row finishes.
    progress: Callable[[dict[str, Any]], list[str]] = _no_progress
    # Its entries of the result file's `parameters`, given the run's --connections.
    parameters: Callable[[int], dict[str, Any]] = _no_parameters
