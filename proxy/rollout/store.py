"""Where rollout state and the decision log live. The file backend is the embedded default.

:class:`StateStore` is the interface a shared backend (Redis, for replicas) fills later: the data plane
only reads ``current`` (no I/O per request); writers go through ``update``, a compare-and-set on the
revision that also appends the decision-log entry describing the change.

File backend durability: the decision entry (which carries the whole new state) is appended to
``<state>.decisions.jsonl`` and fsynced first; then the state file is replaced atomically (temp file,
fsync, rename, fsync of the folder). A SIGKILL between the two leaves a log entry newer than the state
file; ``load`` notices and recovers the state from it, so no acknowledged change is ever lost.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import orjson

from proxy.errors import RevisionMismatch
from proxy.rollout.state import RolloutState

StateListener = Callable[[RolloutState], None]


def logged_change(entry: dict[str, Any], before: RolloutState, after: RolloutState) -> dict[str, Any]:
    """The decision-log record of a state change: the caller's entry, where the rollout was and is, and
    the whole new state (so the log alone can restore it)."""
    return {
        **entry,
        "before": {
            "revision": before.revision,
            "phase": before.phase.value,
            "step": before.step,
            "weight": before.weight,
        },
        "phase": after.phase.value,
        "step": after.step,
        "weight": after.weight,
        "revision": after.revision,
        "state": after.to_json(),
    }


class StateStore(Protocol):
    """Rollout state with compare-and-set updates and a durable decision log."""

    @property
    def current(self) -> RolloutState: ...

    async def load(self, default: Callable[[], RolloutState]) -> RolloutState: ...

    async def update(
        self,
        change: Callable[[RolloutState], RolloutState],
        entry: dict[str, Any],
        *,
        expected_revision: int | None = None,
    ) -> RolloutState: ...

    async def append(self, entry: dict[str, Any]) -> None: ...

    async def decisions(self, limit: int = 1000) -> list[dict[str, Any]]: ...

    def subscribe(self, listener: StateListener) -> None: ...


class FileStateStore:
    """State in one JSON file, decisions in a JSONL file beside it; both fsynced before acknowledging."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.log_path = path.with_name(path.stem + ".decisions.jsonl")
        self._state: RolloutState | None = None
        self._lock = asyncio.Lock()
        self._listeners: list[StateListener] = []

    def __repr__(self) -> str:
        rev = self._state.revision if self._state else None
        return f"<FileStateStore {self.path} revision={rev}>"

    @property
    def current(self) -> RolloutState:
        if self._state is None:
            raise RuntimeError("state store not loaded")
        return self._state

    @property
    def loaded(self) -> bool:
        return self._state is not None

    def subscribe(self, listener: StateListener) -> None:
        self._listeners.append(listener)

    async def load(self, default: Callable[[], RolloutState]) -> RolloutState:
        """Read the state (recovering from a newer log entry), or persist ``default()`` if there is none."""
        async with self._lock:
            state = await asyncio.to_thread(self._read)
            if state is None:
                state = default()
                await asyncio.to_thread(self._write_state, state)
            self._set(state)
            return state

    async def update(
        self,
        change: Callable[[RolloutState], RolloutState],
        entry: dict[str, Any],
        *,
        expected_revision: int | None = None,
    ) -> RolloutState:
        """Apply ``change`` to the current state under the lock, log ``entry`` with it, persist.

        Raises :class:`RevisionMismatch` when ``expected_revision`` is given and is not current, and
        whatever ``change`` raises (IllegalTransition) without writing anything.
        """
        async with self._lock:
            before = self.current
            if expected_revision is not None and expected_revision != before.revision:
                raise RevisionMismatch(expected_revision, before.revision)
            after = change(before)
            record = logged_change(entry, before, after)
            await asyncio.to_thread(self._append, record)
            await asyncio.to_thread(self._write_state, after)
            self._set(after)
            return after

    async def append(self, entry: dict[str, Any]) -> None:
        """Append a decision-log entry that changes no state (an operator's note, a refused action)."""
        async with self._lock:
            await asyncio.to_thread(self._append, entry)

    async def decisions(self, limit: int = 1000) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self._read_log, limit)

    def _set(self, state: RolloutState) -> None:
        self._state = state
        for listener in self._listeners:
            listener(state)

    # -- blocking file work, run in a thread -------------------------------------------------------

    def _read(self) -> RolloutState | None:
        state = None
        if self.path.exists():
            state = RolloutState.from_json(orjson.loads(self.path.read_bytes()))
        newest = self._newest_logged_state()
        if newest is not None and (state is None or newest.revision > state.revision):
            # Killed between the log append and the state rename: the log entry is the truth.
            self._write_state(newest)
            state = newest
        return state

    def _newest_logged_state(self) -> RolloutState | None:
        for entry in reversed(self._read_log(50)):
            if "state" in entry:
                return RolloutState.from_json(entry["state"])
        return None

    def _read_log(self, limit: int) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        entries: list[dict[str, Any]] = []
        with self.log_path.open("rb") as fh:
            for line in fh:
                try:
                    entries.append(orjson.loads(line))
                except orjson.JSONDecodeError:
                    # Only the last line can be torn (a kill mid-append); its state was never acknowledged.
                    continue
        return entries[-limit:] if limit > 0 else []

    def _append(self, entry: dict[str, Any]) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.log_path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            line = orjson.dumps(entry) + b"\n"
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # a kill tore the last line: never glue a new entry onto it
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _write_state(self, state: RolloutState) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            os.write(fd, orjson.dumps(state.to_json(), option=orjson.OPT_INDENT_2) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class MemoryStateStore:
    """State and decisions in memory, for what replays a rollout and keeps nothing: ``rollguard backtest``.
    The same compare-and-set and log records as the file store, without its durability."""

    def __init__(self, state: RolloutState) -> None:
        self._state = state
        self._log: list[dict[str, Any]] = []
        self._listeners: list[StateListener] = []

    @property
    def current(self) -> RolloutState:
        return self._state

    def subscribe(self, listener: StateListener) -> None:
        self._listeners.append(listener)

    async def load(self, default: Callable[[], RolloutState]) -> RolloutState:
        return self._state

    async def update(
        self,
        change: Callable[[RolloutState], RolloutState],
        entry: dict[str, Any],
        *,
        expected_revision: int | None = None,
    ) -> RolloutState:
        before = self._state
        if expected_revision is not None and expected_revision != before.revision:
            raise RevisionMismatch(expected_revision, before.revision)
        after = change(before)
        self._log.append(logged_change(entry, before, after))
        self._state = after
        for listener in self._listeners:
            listener(after)
        return after

    async def append(self, entry: dict[str, Any]) -> None:
        self._log.append(entry)

    async def decisions(self, limit: int = 1000) -> list[dict[str, Any]]:
        return self._log[-limit:] if limit > 0 else []

    @property
    def log(self) -> list[dict[str, Any]]:
        """Every record so far, oldest first (the live list: read, do not change)."""
        return self._log


def open_store(url_path: Path) -> FileStateStore:
    """The store for ``state.url``; only ``file:`` exists until the shared backends arrive."""
    return FileStateStore(url_path)
