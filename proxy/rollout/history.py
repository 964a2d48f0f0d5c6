"""The windows the controller judged recently, newest last, kept in memory for the status page's charts.

One record per closed window: when it closed, where the rollout was (phase, step, candidate weight), both
versions' figures as the gates saw them (every sample since the step began) and the decision
taken on them. During the shadow phase the candidate's figures are its mirrored pairs. The ring is
bounded and lives in the process: it is a picture of the last hours, not a record; the decision log is
the record, and survives restarts. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Final

from proxy.rollout.figures import VersionFigures

HISTORY_WINDOWS: Final = 240
"""Records kept. 240 windows are four hours at the default 60 s interval, the length of a careful
rollout through five steps; a chart of more points than a card is wide in pixels shows nothing more.
Each record is a few hundred bytes, so the ring stays well under a megabyte whatever the traffic."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowRecord:
    """One judged window."""

    ts: str  # when the window closed, as the decision log writes times (UTC, RFC 3339)
    rollout_id: str
    phase: str  # the phase judged: shadow or canary
    step: int  # index into canary.steps; -1 in the shadow phase
    weight: float  # candidate percent while the evidence was gathered
    action: str  # the controller's decision on it: PROCEED, HOLD, PROMOTE, ROLLBACK or WAIT
    baseline: VersionFigures
    candidate: VersionFigures  # source "mirror" in the shadow phase

    def to_json(self) -> dict[str, Any]:
        return {
            "ts": self.ts,
            "rollout_id": self.rollout_id,
            "phase": self.phase,
            "step": self.step,
            "weight": self.weight,
            "action": self.action,
            "baseline": self.baseline.to_json(),
            "candidate": self.candidate.to_json(),
        }


class WindowHistory:
    """A ring of the last ``capacity`` records: adding one past it drops the oldest."""

    def __init__(self, capacity: int = HISTORY_WINDOWS) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self._records: deque[WindowRecord] = deque(maxlen=capacity)

    @property
    def capacity(self) -> int:
        return self._records.maxlen or 0

    def __len__(self) -> int:
        return len(self._records)

    def __repr__(self) -> str:
        return f"WindowHistory({len(self)}/{self.capacity})"

    def add(self, record: WindowRecord) -> None:
        self._records.append(record)

    def records(self) -> list[WindowRecord]:
        """Oldest first."""
        return list(self._records)

    def to_json(self) -> list[dict[str, Any]]:
        return [r.to_json() for r in self._records]
