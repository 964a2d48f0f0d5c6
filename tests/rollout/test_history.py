"""The ring of judged windows: bounded, oldest first, each record in the shape /history serves."""

from __future__ import annotations

import pytest

from proxy.rollout.figures import VersionFigures
from proxy.rollout.history import HISTORY_WINDOWS, WindowHistory, WindowRecord


def _record(i: int, *, action: str = "HOLD") -> WindowRecord:
    live = VersionFigures(requests=100 + i, failures=i, latency_ms={"p50": 1.0, "p95": 2.0, "p99": 3.0})
    mirror = VersionFigures(
        requests=10, failures=0, latency_ms={"p50": None, "p95": None, "p99": None}, source="mirror"
    )
    return WindowRecord(
        ts=f"2025-01-01T00:00:{i:02d}.000Z",
        rollout_id="r1",
        phase="shadow" if i == 0 else "canary",
        step=-1 if i == 0 else 0,
        weight=0.0 if i == 0 else 5.0,
        action=action,
        baseline=live,
        candidate=mirror if i == 0 else live,
    )


def test_the_ring_keeps_the_newest_records_oldest_first() -> None:
    ring = WindowHistory(capacity=3)
    for i in range(5):
        ring.add(_record(i))
    assert len(ring) == 3 and ring.capacity == 3
    assert [r.ts[17:19] for r in ring.records()] == ["02", "03", "04"]
    assert [d["baseline"]["requests"] for d in ring.to_json()] == [102, 103, 104]
    assert repr(ring) == "WindowHistory(3/3)"


def test_below_capacity_nothing_is_dropped() -> None:
    ring = WindowHistory(capacity=4)
    for i in range(2):
        ring.add(_record(i))
    assert [r.ts for r in ring.records()] == [_record(0).ts, _record(1).ts]


def test_the_default_capacity_is_the_named_constant() -> None:
    ring = WindowHistory()
    for i in range(HISTORY_WINDOWS + 7):
        ring.add(_record(i % 60))
    assert ring.capacity == HISTORY_WINDOWS == len(ring)


@pytest.mark.parametrize("capacity", [0, -1])
def test_a_ring_holds_at_least_one_record(capacity: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        WindowHistory(capacity=capacity)


def test_a_record_serialises_with_both_versions_and_their_source() -> None:
    shadow, canary = _record(0, action="PROCEED").to_json(), _record(3).to_json()
    assert set(shadow) == {"ts", "rollout_id", "phase", "step", "weight", "action", "baseline", "candidate"}
    assert (shadow["phase"], shadow["step"], shadow["weight"], shadow["action"]) == (
        "shadow",
        -1,
        0.0,
        "PROCEED",
    )
    assert shadow["candidate"] == {
        "requests": 10,
        "failures": 0,
        "error_rate": 0.0,
        "latency_ms": {"p50": None, "p95": None, "p99": None},
        "decision_rate": None,
        "source": "mirror",
    }
    assert canary["candidate"]["source"] == canary["baseline"]["source"] == "live"
    assert canary["baseline"]["error_rate"] == 3 / 103
    assert canary["baseline"]["latency_ms"] == {"p50": 1.0, "p95": 2.0, "p99": 3.0}
