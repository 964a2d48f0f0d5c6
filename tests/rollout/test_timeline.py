"""The decision log as a timeline: which runs of HOLDs fold, what a folded row keeps, the latest rollout."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.rollout.timeline import fold, latest_rollout, since_start, timeline


def _e(second: int, action: str, reason: str = "", actor: str = "controller", **extra: Any) -> dict[str, Any]:
    return {
        "ts": f"2025-01-01T00:00:{second:02d}.000Z",
        "action": action,
        "actor": actor,
        "reason": reason,
        **extra,
    }


INCONCLUSIVE = "inconclusive at 5%: latency_p95: 40 of 200 samples"
FAILING = "failing window 1/3: error_rate: 2.1% > 0.5%"

# (entries, the folded rows as (action, count))
CASES = [
    pytest.param(
        [_e(1, "HOLD", INCONCLUSIVE), _e(2, "HOLD", INCONCLUSIVE + " (41)")], [("HOLD", 2)], id="same kind"
    ),
    pytest.param(
        [_e(1, "HOLD", INCONCLUSIVE), _e(2, "HOLD", FAILING)], [("HOLD", 1), ("HOLD", 1)], id="kinds differ"
    ),
    pytest.param(
        [_e(1, "HOLD", INCONCLUSIVE), _e(2, "HOLD", INCONCLUSIVE, actor="ops")],
        [("HOLD", 1), ("HOLD", 1)],
        id="actors differ",
    ),
    pytest.param(
        [_e(1, "HOLD", INCONCLUSIVE), _e(2, "PROCEED", "passed"), _e(3, "HOLD", INCONCLUSIVE)],
        [("HOLD", 1), ("PROCEED", 1), ("HOLD", 1)],
        id="a decision between ends the run",
    ),
    pytest.param([_e(1, "pause"), _e(2, "pause")], [("pause", 1), ("pause", 1)], id="only HOLDs fold"),
    pytest.param(
        [
            _e(1, "start", actor="ops"),
            *(_e(2 + i, "HOLD", INCONCLUSIVE) for i in range(14)),
            _e(20, "PROMOTE"),
        ],
        [("start", 1), ("HOLD", 14), ("PROMOTE", 1)],
        id="fourteen windows",
    ),
]


@pytest.mark.parametrize(("entries", "rows"), CASES)
def test_consecutive_holds_of_one_kind_fold(
    entries: list[dict[str, Any]], rows: list[tuple[str, int]]
) -> None:
    assert [(r.action, r.count) for r in fold(entries)] == rows


def test_a_folded_row_keeps_the_run_span_and_the_latest_figures() -> None:
    entries = [
        _e(1, "HOLD", INCONCLUSIVE + " first", phase="canary", step=0, weight=5, revision=7),
        _e(2, "HOLD", INCONCLUSIVE + " second", phase="canary", step=0, weight=5, revision=8),
        _e(3, "HOLD", INCONCLUSIVE + " third", phase="canary", step=0, weight=5, revision=9),
    ]
    (row,) = fold(entries)
    assert row.to_json() == {
        "ts": "2025-01-01T00:00:03.000Z",
        "first_ts": "2025-01-01T00:00:01.000Z",
        "action": "HOLD",
        "actor": "controller",
        "count": 3,
        "phase": "canary",
        "step": 0,
        "weight": 5.0,
        "revision": 9,
        "reason": INCONCLUSIVE + " third",
    }
    assert row.clock == "00:00:03.000" and row.offset is None


def test_the_timeline_is_the_latest_rollout_with_offsets_from_its_start() -> None:
    entries = [
        _e(1, "start", actor="ops"),
        _e(2, "ROLLBACK"),
        _e(3, "rearm", actor="ops"),
        _e(10, "start", actor="ops"),
    ]
    entries += [_e(12, "HOLD", INCONCLUSIVE), _e(15, "HOLD", INCONCLUSIVE)]
    rows = timeline(entries)
    assert [(r.action, r.count, r.offset) for r in rows] == [("start", 1, 0.0), ("HOLD", 2, 5.0)]
    assert since_start(entries) == entries[3:]
    assert since_start(entries[1:3]) == entries[1:3]  # no start: everything


def test_the_latest_rollout_counts_its_windows_and_says_how_it_ended() -> None:
    entries = [_e(1, "start", actor="ops"), _e(2, "ROLLBACK", actor="tripwire"), _e(3, "rearm", actor="ops")]
    entries += [_e(10, "start", actor="ops"), _e(11, "HOLD", INCONCLUSIVE), _e(12, "PROCEED", "passed")]
    entries += [_e(13, "pause", actor="ops"), _e(14, "resume", actor="ops"), _e(15, "PROMOTE", "passed")]
    span = latest_rollout(entries)
    assert span.to_json() == {
        "started_at": "2025-01-01T00:00:10.000Z",
        "windows": 3,  # HOLD, PROCEED, PROMOTE: the operator's moves and the earlier rollout do not count
        "ended_at": "2025-01-01T00:00:15.000Z",
        "ended_by": "PROMOTE",
        "actor": "controller",
    }
    running = latest_rollout(entries[:6])
    assert (running.windows, running.ended_by, running.ended_at) == (2, None, None)
    by_hand = latest_rollout([*entries[:5], _e(20, "ROLLBACK", actor="ops")])
    assert (by_hand.windows, by_hand.ended_by, by_hand.actor) == (1, "ROLLBACK", "ops")
    assert latest_rollout([]).to_json()["started_at"] is None
