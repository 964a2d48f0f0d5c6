"""Rollout state and the decision log: transitions, the file store, SIGKILL durability."""

from __future__ import annotations

import asyncio
import dataclasses
import stat
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from proxy.errors import IllegalTransition, RevisionMismatch
from proxy.rollout.state import Phase, RolloutState, initial, rearm, reconcile_candidate, set_weight
from proxy.rollout.store import FileStateStore, MemoryStateStore, open_store
from tests.helpers.config import config_doc, write_config
from tests.helpers.models import Models
from tests.helpers.tokens import OPERATOR_TOKEN

NOW = "2025-01-02T03:04:05.678Z"
LATER = "2025-01-02T03:05:00.000Z"


def state(**changes: Any) -> RolloutState:
    base = RolloutState(
        revision=7, rollout_id="r-abc", phase=Phase.CANARY, weight_bp=500, candidate_version="v2", step=1
    )
    return dataclasses.replace(base, **changes)


def no_default() -> RolloutState:
    raise AssertionError("the store holds a state: the default must not be used")


def weight_to(bp: int) -> Any:
    return lambda s: set_weight(s, bp, LATER, "by test")


def entry(action: str = "set_weight", actor: str = "ops") -> dict[str, Any]:
    return {"ts": LATER, "actor": actor, "action": action, "reason": "test"}


def log_lines(store: FileStateStore) -> list[bytes]:
    return store.log_path.read_bytes().splitlines() if store.log_path.exists() else []


async def loaded_store(tmp_path: Path) -> FileStateStore:
    store = FileStateStore(tmp_path / "state" / "rollguard-state.json")
    await store.load(lambda: initial("v2", 0, NOW))
    return store


# -- pure transitions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("weight_bp", "phase"),
    [(0, Phase.IDLE), (1, Phase.PAUSED), (3750, Phase.PAUSED), (10_000, Phase.PAUSED)],
)
def test_initial_state(weight_bp: int, phase: Phase) -> None:
    s = initial("v2", weight_bp, NOW)
    assert (s.revision, s.phase, s.weight_bp, s.candidate_version, s.updated_at) == (
        1,
        phase,
        weight_bp,
        "v2",
        NOW,
    )
    assert s.rollout_id and s.rollout_id != initial("v2", weight_bp, NOW).rollout_id


@pytest.mark.parametrize(
    ("phase", "bp", "after"),
    [
        (Phase.IDLE, 0, Phase.IDLE),
        (Phase.IDLE, 100, Phase.PAUSED),
        (Phase.SHADOW, 0, Phase.PAUSED),
        (Phase.CANARY, 2500, Phase.PAUSED),
        (Phase.CANARY, 0, Phase.PAUSED),
        (Phase.PAUSED, 10_000, Phase.PAUSED),
    ],
)
def test_set_weight(phase: Phase, bp: int, after: Phase) -> None:
    before = state(phase=phase)
    s = set_weight(before, bp, LATER, "because")
    assert (s.phase, s.weight_bp, s.revision, s.updated_at, s.reason) == (after, bp, 8, LATER, "because")
    assert s.rollout_id == before.rollout_id  # a hand-set weight keeps the same users
    assert before.weight_bp == 500  # immutable: the old state is untouched


def test_rearm_is_idle_at_zero_under_a_new_rollout_id() -> None:
    before = state(phase=Phase.ROLLED_BACK, weight_bp=0, step=2, passes=3, failed_windows=2)
    s = rearm(before, now=LATER)
    assert (s.phase, s.weight_bp, s.step, s.passes, s.failed_windows) == (Phase.IDLE, 0, -1, 0, 0)
    # Whatever happens while idle (a hand-set weight, a preflight rehearsal) is not the rolled-back rollout's.
    assert s.rollout_id != before.rollout_id
    with pytest.raises(IllegalTransition, match="only a rolled-back rollout"):
        rearm(state(phase=Phase.PAUSED), now=LATER)


def test_set_weight_from_rolled_back_is_illegal() -> None:
    with pytest.raises(IllegalTransition, match="re-arm"):
        set_weight(state(phase=Phase.ROLLED_BACK, weight_bp=0), 100, LATER)


@pytest.mark.parametrize("bp", [-1, 10_001])
def test_set_weight_out_of_range(bp: int) -> None:
    with pytest.raises(ValueError):
        set_weight(state(), bp, LATER)


def test_reconcile_same_candidate_is_a_no_op() -> None:
    assert reconcile_candidate(state(), "v2", LATER) is None


@pytest.mark.parametrize("phase", list(Phase))
def test_reconcile_another_candidate_resets_to_idle(phase: Phase) -> None:
    before = state(phase=phase, weight_bp=3750)
    after = reconcile_candidate(before, "v3", LATER)
    assert after is not None
    assert (after.phase, after.weight_bp, after.step, after.candidate_version) == (Phase.IDLE, 0, -1, "v3")
    assert after.revision == before.revision + 1
    assert after.rollout_id != before.rollout_id  # a new candidate draws a new set of users
    assert "v2" in after.reason and "v3" in after.reason and "idle" in after.reason
    assert after.updated_at == LATER


def test_state_json_round_trip() -> None:
    s = state(weight_bp=3750, reason="x", updated_at=NOW)
    doc = orjson.loads(orjson.dumps(s.to_json()))
    assert doc["weight"] == 37.5 and doc["phase"] == "canary"
    assert RolloutState.from_json(doc) == s


# -- the file store --------------------------------------------------------------------------------


async def test_current_before_load_raises(tmp_path: Path) -> None:
    store = FileStateStore(tmp_path / "s.json")
    assert not store.loaded
    with pytest.raises(RuntimeError):
        _ = store.current


async def test_round_trip(tmp_path: Path) -> None:
    store = await loaded_store(tmp_path)
    first = store.current
    assert store.path.exists()
    after = await store.update(weight_to(3750), entry())
    assert after.revision == first.revision + 1 and after.weight == 37.5
    assert store.current == after

    again = FileStateStore(store.path)
    assert await again.load(no_default) == after
    assert again.current.rollout_id == first.rollout_id
    assert RolloutState.from_json(orjson.loads(store.path.read_bytes())) == after


async def test_load_persists_the_default_once(tmp_path: Path) -> None:
    store = await loaded_store(tmp_path)
    assert store.current.revision == 1 and store.current.phase is Phase.IDLE
    assert RolloutState.from_json(orjson.loads(store.path.read_bytes())) == store.current
    assert await FileStateStore(store.path).load(no_default) == store.current


async def test_stale_revision_raises_and_writes_nothing(tmp_path: Path) -> None:
    store = await loaded_store(tmp_path)
    await store.update(weight_to(100), entry())
    state_bytes, log_bytes, current = store.path.read_bytes(), store.log_path.read_bytes(), store.current

    with pytest.raises(RevisionMismatch) as info:
        await store.update(weight_to(500), entry(), expected_revision=1)
    assert (info.value.expected, info.value.current) == (1, 2)
    assert store.path.read_bytes() == state_bytes
    assert store.log_path.read_bytes() == log_bytes
    assert store.current == current

    ok = await store.update(weight_to(500), entry(), expected_revision=2)
    assert ok.revision == 3


async def test_illegal_change_writes_nothing(tmp_path: Path) -> None:
    store = await loaded_store(tmp_path)
    await store.update(
        lambda s: dataclasses.replace(s, revision=s.revision + 1, phase=Phase.ROLLED_BACK), entry()
    )
    state_bytes, log_bytes = store.path.read_bytes(), store.log_path.read_bytes()
    with pytest.raises(IllegalTransition):
        await store.update(weight_to(500), entry())
    assert (store.path.read_bytes(), store.log_path.read_bytes()) == (state_bytes, log_bytes)


async def test_concurrent_compare_and_set_admits_one_writer(tmp_path: Path) -> None:
    store = await loaded_store(tmp_path)
    results = await asyncio.gather(
        *(store.update(weight_to(100 * (i + 1)), entry(), expected_revision=1) for i in range(5)),
        return_exceptions=True,
    )
    assert sum(isinstance(r, RolloutState) for r in results) == 1
    assert sum(isinstance(r, RevisionMismatch) for r in results) == 4
    assert store.current.revision == 2 and len(log_lines(store)) == 1


async def test_one_decision_line_per_update(tmp_path: Path) -> None:
    store = await loaded_store(tmp_path)
    assert log_lines(store) == []
    for i, bp in enumerate([100, 500, 2500]):
        await store.update(weight_to(bp), entry(actor=f"op{i}"))
        # On disk (a fresh reader sees it) by the time update() returns.
        assert len(log_lines(store)) == i + 1

    records = [orjson.loads(line) for line in log_lines(store)]
    assert [r["actor"] for r in records] == ["op0", "op1", "op2"]
    assert [r["weight"] for r in records] == [1.0, 5.0, 25.0]
    assert [r["before"]["weight"] for r in records] == [0.0, 1.0, 5.0]
    assert [r["before"]["revision"] for r in records] == [1, 2, 3]
    assert [r["revision"] for r in records] == [2, 3, 4]
    last = records[-1]
    assert (last["ts"], last["action"], last["reason"], last["phase"]) == (
        LATER,
        "set_weight",
        "test",
        "paused",
    )
    assert last["before"]["phase"] == "paused" and records[0]["before"]["phase"] == "idle"
    assert RolloutState.from_json(last["state"]) == store.current
    assert await store.decisions() == records
    assert await store.decisions(limit=2) == records[-2:]


async def test_append_logs_without_changing_state(tmp_path: Path) -> None:
    store = await loaded_store(tmp_path)
    before = store.path.read_bytes()
    await store.append({"ts": LATER, "actor": "ops", "action": "note", "reason": "looked fine"})
    assert store.path.read_bytes() == before
    assert [d["action"] for d in await store.decisions()] == ["note"]
    assert await FileStateStore(store.path).load(no_default) == store.current


async def test_torn_last_line_is_ignored_on_read(tmp_path: Path) -> None:
    store = await loaded_store(tmp_path)
    await store.update(weight_to(100), entry())
    await store.update(weight_to(500), entry())
    good = await store.decisions()
    with store.log_path.open("ab") as fh:  # a kill in the middle of an append
        fh.write(orjson.dumps({**entry(), "state": {**store.current.to_json(), "revision": 99}})[:40])

    assert await store.decisions() == good
    again = FileStateStore(store.path)
    assert (await again.load(no_default)).revision == 3


async def test_entries_after_a_torn_line_are_kept(tmp_path: Path) -> None:
    # The torn fragment has no newline: the next append must not be glued to it and lost.
    store = await loaded_store(tmp_path)
    await store.update(weight_to(100), entry())
    with store.log_path.open("ab") as fh:
        fh.write(b'{"ts": "2025-01-02T03:04:05Z", "act')
    store = FileStateStore(store.path)
    await store.load(no_default)

    after = await store.update(weight_to(500), entry(actor="after-crash"))

    assert [d.get("actor") for d in await store.decisions()] == ["ops", "after-crash"]
    # And the log stays the truth for recovery: a state file one revision behind is caught up from it.
    store.path.write_bytes(orjson.dumps(dataclasses.replace(after, revision=2, weight_bp=100).to_json()))
    assert (await FileStateStore(store.path).load(no_default)).revision == after.revision


async def test_recovers_a_logged_state_newer_than_the_state_file(tmp_path: Path) -> None:
    store = await loaded_store(tmp_path)
    await store.update(weight_to(100), entry())
    older = store.path.read_bytes()
    newest = await store.update(weight_to(3750), entry())
    store.path.write_bytes(older)  # killed between the log append and the state file's rename

    again = FileStateStore(store.path)
    assert await again.load(no_default) == newest
    assert RolloutState.from_json(orjson.loads(store.path.read_bytes())) == newest  # written back


async def test_recovers_from_the_log_when_the_state_file_is_gone(tmp_path: Path) -> None:
    store = await loaded_store(tmp_path)
    newest = await store.update(weight_to(3750), entry())
    store.path.unlink()
    assert await FileStateStore(store.path).load(no_default) == newest


async def test_an_older_log_entry_does_not_override_the_state_file(tmp_path: Path) -> None:
    store = await loaded_store(tmp_path)
    await store.update(weight_to(100), entry())
    await store.update(weight_to(500), entry())
    newer = dataclasses.replace(store.current, revision=10, weight_bp=700)
    store.path.write_bytes(orjson.dumps(newer.to_json()))
    assert await FileStateStore(store.path).load(no_default) == newer


async def test_subscribers_see_every_state(tmp_path: Path) -> None:
    store = FileStateStore(tmp_path / "s.json")
    seen: list[int] = []
    store.subscribe(lambda s: seen.append(s.weight_bp))
    await store.load(lambda: initial("v2", 0, NOW))
    await store.update(weight_to(100), entry())
    await store.update(weight_to(500), entry())
    assert seen == [0, 100, 500]


async def test_the_decision_log_sits_beside_the_state_file(tmp_path: Path) -> None:
    # Operators and backups find the log by this name: <state stem>.decisions.jsonl, same folder.
    store = FileStateStore(tmp_path / "state" / "rollguard-state.json")
    assert store.log_path == tmp_path / "state" / "rollguard-state.decisions.jsonl"
    assert open_store(store.path).path == store.path
    assert open_store(store.path).log_path == store.log_path


async def test_repr_shows_the_revision_once_loaded(tmp_path: Path) -> None:
    store = FileStateStore(tmp_path / "s.json")
    assert repr(store) == f"<FileStateStore {store.path} revision=None>"
    await store.load(lambda: initial("v2", 0, NOW))
    await store.update(weight_to(100), entry())
    assert repr(store) == f"<FileStateStore {store.path} revision=2>"


async def test_decision_records_carry_the_step_before_and_after(tmp_path: Path) -> None:
    store = await loaded_store(tmp_path)
    await store.update(lambda s: dataclasses.replace(s, revision=s.revision + 1, step=2), entry())
    (record,) = await store.decisions()
    assert (record["before"]["step"], record["step"]) == (-1, 2)
    assert set(record["before"]) == {"revision", "phase", "step", "weight"}


async def test_decisions_default_to_the_last_thousand(tmp_path: Path) -> None:
    store = await loaded_store(tmp_path)
    # Written as the log's own lines (one JSON object each), not through 1,001 fsynced appends.
    store.log_path.write_bytes(b"".join(orjson.dumps({"n": i}) + b"\n" for i in range(1001)))
    recent = await store.decisions()
    assert len(recent) == 1000 and (recent[0]["n"], recent[-1]["n"]) == (1, 1000)


async def test_a_state_file_at_the_logs_revision_is_read_as_it_is(tmp_path: Path) -> None:
    # The log replaces the state file only when it is newer; at the same revision the file stands.
    store = await loaded_store(tmp_path)
    logged = await store.update(weight_to(100), entry())
    on_disk = dataclasses.replace(logged, reason="edited in place")
    store.path.write_bytes(orjson.dumps(on_disk.to_json()))
    assert await FileStateStore(store.path).load(no_default) == on_disk


async def test_folders_are_created_however_deep_whichever_write_comes_first(tmp_path: Path) -> None:
    store = FileStateStore(tmp_path / "a" / "b" / "state.json")
    await store.load(lambda: initial("v2", 0, NOW))
    assert store.path.exists()
    noted = FileStateStore(tmp_path / "c" / "d" / "state.json")
    await noted.append({"ts": LATER, "action": "note"})  # a note before any state is written
    assert [d["action"] for d in await noted.decisions()] == ["note"]


async def test_state_and_log_are_not_readable_by_others(tmp_path: Path) -> None:
    # The log names operators and their reasons: owner read-write, group read, others nothing.
    store = await loaded_store(tmp_path)
    await store.update(weight_to(100), entry())
    for path in (store.path, store.log_path):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o007 == 0 and mode & 0o600 == 0o600 and mode & 0o111 == 0, (path, oct(mode))


async def test_the_state_file_is_indented_json_for_people(tmp_path: Path) -> None:
    store = await loaded_store(tmp_path)
    text = store.path.read_text()
    assert text.startswith('{\n  "revision": 1,') and text.endswith("}\n")


# -- the memory store (backtests) ------------------------------------------------------------------


async def test_memory_store_updates_with_compare_and_set_and_logs_like_the_file_store(
    tmp_path: Path,
) -> None:
    start = initial("v2", 0, NOW)
    memory, file = MemoryStateStore(start), FileStateStore(tmp_path / "s.json")
    await file.load(lambda: start)
    seen: list[int] = []
    memory.subscribe(lambda s: seen.append(s.weight_bp))
    assert await memory.load(no_default) == start and memory.current == start

    for store in (memory, file):
        await store.update(weight_to(100), entry(), expected_revision=1)
        with pytest.raises(RevisionMismatch) as info:
            await store.update(weight_to(500), entry(), expected_revision=1)
        assert (info.value.expected, info.value.current) == (1, 2)
        await store.update(weight_to(500), entry(actor="second"))
        await store.append({"ts": LATER, "action": "note"})

    assert memory.current == file.current and memory.current.weight_bp == 500
    assert seen == [100, 500]  # a refused update tells no one
    assert memory.log == await memory.decisions() == await file.decisions()
    assert [d.get("actor") for d in memory.log] == ["ops", "second", None]


async def test_memory_store_refused_change_logs_nothing() -> None:
    store = MemoryStateStore(state(phase=Phase.ROLLED_BACK, weight_bp=0))
    with pytest.raises(IllegalTransition):
        await store.update(weight_to(500), entry())
    assert store.log == [] and store.current.phase is Phase.ROLLED_BACK


@pytest.mark.parametrize("kind", ["memory", "file"])
@pytest.mark.parametrize(("limit", "expected"), [(1, [2]), (2, [1, 2]), (1000, [0, 1, 2]), (0, [])])
async def test_both_stores_give_the_newest_decisions_up_to_limit(
    tmp_path: Path, kind: str, limit: int, expected: list[int]
) -> None:
    store: MemoryStateStore | FileStateStore = (
        MemoryStateStore(state()) if kind == "memory" else FileStateStore(tmp_path / "s.json")
    )
    for i in range(3):
        await store.append({"n": i})
    assert [d["n"] for d in await store.decisions(limit)] == expected
    assert len(await store.decisions()) == 3


async def test_memory_store_default_limit_is_a_thousand() -> None:
    store = MemoryStateStore(state())
    for i in range(1001):
        await store.append({"n": i})
    recent = await store.decisions()
    assert len(recent) == 1000 and recent[0]["n"] == 1


# -- through a real process: SIGKILL and restart -----------------------------------------------------


async def _status(admin_url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=admin_url, timeout=10) as c:
        r = await c.get("/status", headers={"authorization": f"Bearer {OPERATOR_TOKEN}"})
        r.raise_for_status()
        rollout: dict[str, Any] = r.json()["rollout"]
        return rollout


async def _decisions(admin_url: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=admin_url, timeout=10) as c:
        r = await c.get("/decisions", headers={"authorization": f"Bearer {OPERATOR_TOKEN}"})
        r.raise_for_status()
        decisions: list[dict[str, Any]] = r.json()["decisions"]
        return decisions


async def _killed_after_setting_37_5(tmp_path: Path, models: Models, proxy_process: Any) -> dict[str, Any]:
    cfg = write_config(tmp_path, config_doc(tmp_path, models.baseline.url, models.candidate.url))
    # start() blocks on the child's stderr: run it off the loop, which also serves the models.
    p = await asyncio.to_thread(proxy_process, cfg)
    async with httpx.AsyncClient(base_url=p.admin_url, timeout=10) as c:
        r = await c.put(
            "/weights",
            json={"canary": 37.5, "reason": "durability test"},
            headers={"authorization": f"Bearer {OPERATOR_TOKEN}"},
        )
    assert r.status_code == 200, r.text
    acknowledged: dict[str, Any] = r.json()
    assert acknowledged["weight"] == 37.5
    await asyncio.to_thread(p.kill)
    assert p.proc.returncode == -9
    return acknowledged


async def test_sigkill_and_restart_resume_the_same_state(
    tmp_path: Path, models: Models, proxy_process: Any
) -> None:
    acknowledged = await _killed_after_setting_37_5(tmp_path, models, proxy_process)

    second = await asyncio.to_thread(proxy_process, tmp_path / "rollguard.yaml")
    rollout = await _status(second.admin_url)
    assert rollout["weight"] == 37.5
    assert rollout["phase"] == acknowledged["phase"] == "paused"
    assert rollout["rollout_id"] == acknowledged["rollout_id"]
    assert rollout["revision"] == acknowledged["revision"]

    decisions = await _decisions(second.admin_url)
    (set_by_hand,) = [d for d in decisions if d.get("action") == "set_weight"]
    assert (set_by_hand["actor"], set_by_hand["weight"], set_by_hand["reason"]) == (
        "ops",
        37.5,
        "durability test",
    )
    assert set_by_hand["revision"] == acknowledged["revision"]
    assert (
        OPERATOR_TOKEN.encode() not in (tmp_path / "state" / "rollguard-state.decisions.jsonl").read_bytes()
    )


async def test_restart_with_another_candidate_resets_to_idle(
    tmp_path: Path, models: Models, proxy_process: Any
) -> None:
    acknowledged = await _killed_after_setting_37_5(tmp_path, models, proxy_process)
    doc = config_doc(tmp_path, models.baseline.url, models.candidate.url)
    doc["upstreams"]["candidate"]["version"] = "v3"
    cfg = write_config(tmp_path, doc, name="rollguard-v3.yaml")

    second = await asyncio.to_thread(proxy_process, cfg)
    rollout = await _status(second.admin_url)
    assert (rollout["weight"], rollout["phase"], rollout["candidate_version"]) == (0, "idle", "v3")
    assert rollout["rollout_id"] != acknowledged["rollout_id"]
    assert rollout["revision"] == acknowledged["revision"] + 1

    reset = (await _decisions(second.admin_url))[-1]
    assert reset["action"] == "reset"
    assert reset["before"]["weight"] == 37.5 and reset["weight"] == 0
    assert "v2" in reset["reason"] and "v3" in reset["reason"]
    assert reset["ts"].endswith("Z")
