"""The decision log read as a timeline: one row per decision, a run of like HOLDs folded into one row.

A step that stays inconclusive logs a HOLD every window; fourteen identical lines hide the one decision
that mattered, so consecutive HOLDs by the same actor and of the same kind (``inconclusive at 10%``,
``failing window 1/3``) become one row with their count and the latest entry's figures. Everything else
(PROCEED, PROMOTE, ROLLBACK, WAIT, each operator action) keeps its own row. The demo's terminal view, the
status page and the summary all read the log through here, so they fold it alike. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

CONTROLLER_ACTIONS: Final = frozenset({"PROCEED", "HOLD", "PROMOTE", "ROLLBACK", "WAIT"})
"""What the controller logs once per judged window (a trip-wire's ROLLBACK is not a window)."""


def since_start(entries: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The entries of the latest rollout: from its ``start`` on (all of them if none started)."""
    starts = [i for i, e in enumerate(entries) if e.get("action") == "start"]
    return list(entries[starts[-1] :] if starts else entries)


def seconds_between(a: str, b: str) -> float | None:
    """Seconds from one decision-log timestamp to another; None when either does not parse."""
    try:
        return (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class TimelineRow:
    """One row of the timeline; for a folded run of HOLDs, the latest entry's figures and the count."""

    ts: str  # the row's latest entry, as logged (UTC, RFC 3339)
    first_ts: str  # the run's first entry (``ts`` for a single entry)
    offset: float | None  # seconds from the rollout's start to ``ts``; None without a start to count from
    action: str
    actor: str
    phase: str | None  # where the entry left the rollout
    step: int | None
    weight: float | None  # the candidate weight after the entry
    revision: int | None
    reason: str
    count: int = 1

    @property
    def clock(self) -> str:
        """``HH:MM:SS.mmm`` of ``ts``, for lines that have no room for the date."""
        return self.ts[11:23] if len(self.ts) >= 23 else self.ts

    def to_json(self) -> dict[str, Any]:
        return {
            "ts": self.ts,
            "first_ts": self.first_ts,
            "action": self.action,
            "actor": self.actor,
            "count": self.count,
            "phase": self.phase,
            "step": self.step,
            "weight": self.weight,
            "revision": self.revision,
            "reason": self.reason,
        }


def hold_kind(reason: str) -> str:
    """``inconclusive at 10%`` of ``inconclusive at 10%: latency_p95: ...``: what a HOLD says, less its
    figures."""
    return reason.split(":", 1)[0]


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def fold(entries: Iterable[Mapping[str, Any]], *, start_ts: str = "") -> list[TimelineRow]:
    """``entries`` (oldest first) as rows, oldest first; offsets count from ``start_ts`` when given."""
    rows: list[TimelineRow] = []
    for e in entries:
        ts, action, actor = str(e.get("ts", "")), str(e.get("action", "?")), str(e.get("actor", "?"))
        reason = str(e.get("reason", ""))
        step, revision = _number(e.get("step")), _number(e.get("revision"))
        first_ts, count = ts, 1
        if rows and action == "HOLD":
            last = rows[-1]
            if (last.action, last.actor) == ("HOLD", actor) and hold_kind(last.reason) == hold_kind(reason):
                first_ts, count = last.first_ts, last.count + 1
                rows.pop()
        rows.append(
            TimelineRow(
                ts=ts,
                first_ts=first_ts,
                offset=seconds_between(start_ts, ts) if start_ts else None,
                action=action,
                actor=actor,
                phase=None if e.get("phase") is None else str(e.get("phase")),
                step=None if step is None else int(step),
                weight=_number(e.get("weight")),
                revision=None if revision is None else int(revision),
                reason=reason,
                count=count,
            )
        )
    return rows


def timeline(entries: Iterable[Mapping[str, Any]]) -> list[TimelineRow]:
    """The latest rollout's decisions, oldest first, folded; offsets count from its ``start``."""
    run = since_start(list(entries))
    return fold(run, start_ts=str(run[0].get("ts", "")) if run else "")


@dataclass(frozen=True, slots=True, kw_only=True)
class RolloutSpan:
    """The latest rollout as its log tells it: when it started, how many windows were judged, how it
    ended. ``windows`` counts the controller's decisions since the start (each closes one window)."""

    started_at: str | None
    windows: int
    ended_at: str | None = None  # the PROMOTE or ROLLBACK that ended it, if one did
    ended_by: str | None = None  # its action
    actor: str | None = None  # its actor: controller, tripwire or an operator's token name

    def to_json(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at,
            "windows": self.windows,
            "ended_at": self.ended_at,
            "ended_by": self.ended_by,
            "actor": self.actor,
        }


def latest_rollout(entries: Sequence[Mapping[str, Any]]) -> RolloutSpan:
    """The span of the latest rollout in ``entries`` (oldest first)."""
    run = since_start(entries)
    started = run[0] if run and run[0].get("action") == "start" else None
    windows = sum(1 for e in run if e.get("actor") == "controller" and e.get("action") in CONTROLLER_ACTIONS)
    ending = next((e for e in reversed(run) if e.get("action") in ("PROMOTE", "ROLLBACK")), None)
    return RolloutSpan(
        started_at=None if started is None else str(started.get("ts", "")),
        windows=windows,
        ended_at=None if ending is None else str(ending.get("ts", "")),
        ended_by=None if ending is None else str(ending.get("action")),
        actor=None if ending is None else str(ending.get("actor", "?")),
    )
