"""The four rollout artifacts written to disk when a rollout ends (promoted or rolled back).

:class:`ArtifactWriter` watches the state store. When the phase becomes ``promoted`` or ``rolled_back``
it renders every artifact (the same renderers ``GET /reports/<name>`` serves) and writes them as one
folder, ``<reports.dir>/<UTC time>-<rollout id>-<phase>/``, atomically: the files are written and fsynced
in a hidden temporary folder, which is then renamed into place and the parent fsynced, so a reader (or a
crash) sees all four files or none. Only the newest ``reports.keep`` rollout folders are kept.

An artifact that fails to render is left out and the failure logged; a write that fails is logged. Neither
touches traffic or the rollout: the decision has already been made durable by the state store.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import re
import shutil
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from proxy._tasks import TaskSet
from proxy.rollout.state import Phase, RolloutState

log = logging.getLogger("rollguard.artifacts")

Renderer = Callable[[], Any | Awaitable[Any]]  # a dict (JSON) or str (text), or an awaitable of one
ENDED: tuple[Phase, ...] = (Phase.PROMOTED, Phase.ROLLED_BACK)
_FOLDER = re.compile(r"^\d{8}T\d{6}Z-[0-9A-Za-z]+-(promoted|rolled_back)$")


class ArtifactWriter:
    """Writes every artifact into ``root`` when a rollout ends; ``keep`` folders at most."""

    def __init__(self, root: Path, renderers: Mapping[str, Renderer], *, keep: int, tasks: TaskSet) -> None:
        self.root = root
        self.renderers = dict(renderers)
        self.keep = keep
        self.tasks = tasks
        self.last: Path | None = None  # the newest folder written
        self._seen: tuple[str, Phase] | None = None
        self._lock = asyncio.Lock()

    def watch(self, current: RolloutState) -> Callable[[RolloutState], None]:
        """The store listener; a state that is already ended at start-up is not written again."""
        self._seen = (current.rollout_id, current.phase)

        def on_state(state: RolloutState) -> None:
            key = (state.rollout_id, state.phase)
            if key == self._seen:
                return
            self._seen = key
            if state.phase in ENDED:
                self.tasks.spawn(self.write(state), name="artifacts")

        return on_state

    async def write(self, state: RolloutState) -> Path | None:
        """Render and write all artifacts for ``state``; returns the folder (None if nothing was written)."""
        async with self._lock:  # two endings in quick succession must not interleave their pruning
            files: dict[str, bytes] = {}
            for name, render in self.renderers.items():
                try:
                    files[name] = _encode(await _call(render))
                except Exception:
                    log.exception("artifact %s could not be rendered; the others are written", name)
            if not files:
                return None
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            folder = self.root / f"{stamp}-{state.rollout_id}-{state.phase.value}"
            try:
                await asyncio.to_thread(_write_folder, folder, files, self.keep)
            except OSError as exc:
                log.error("artifacts for rollout %s not written to %s: %s", state.rollout_id, folder, exc)
                return None
            self.last = folder
            log.info("rollout %s %s: artifacts written to %s", state.rollout_id, state.phase.value, folder)
            return folder


async def _call(render: Renderer) -> Any:
    value = render()
    if inspect.isawaitable(value):
        value = await value
    return value


def _encode(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    return orjson.dumps(value, option=orjson.OPT_INDENT_2) + b"\n"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_folder(folder: Path, files: Mapping[str, bytes], keep: int) -> None:
    """All ``files`` appear in ``folder`` at once (temp folder, fsync, rename, fsync of the parent)."""
    root = folder.parent
    root.mkdir(parents=True, exist_ok=True)
    final = folder
    n = 1
    while final.exists():  # two endings within one second of each other keep both folders
        n += 1
        final = folder.with_name(f"{folder.name}.{n}")
    tmp = root / f".{final.name}.{os.getpid()}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(mode=0o750)
    try:
        for name, data in files.items():
            with open(os.open(tmp / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640), "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        _fsync_dir(tmp)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(root)
    _prune(root, keep)


def _prune(root: Path, keep: int) -> None:
    """Remove the oldest rollout folders beyond ``keep`` (names sort by time); nothing else is touched."""
    folders = sorted(
        (p for p in root.iterdir() if p.is_dir() and _FOLDER.match(p.name.split(".")[0])),
        key=lambda p: p.name,
    )
    for old in folders[: max(0, len(folders) - keep)]:
        shutil.rmtree(old, ignore_errors=True)


# The artifacts, by the names they have everywhere: files in a report folder, GET
# /reports/<name> on the admin API, `rollguard report`. This is the one place those names are written.
SHADOW_EVAL = "shadow_eval.json"
STAGING_REPORT = "staging_report.json"
CANARY_PLAN = "canary_plan.md"
ROLLOUT_DECISION = "rollout_decision.txt"
ARTIFACTS = (SHADOW_EVAL, STAGING_REPORT, CANARY_PLAN, ROLLOUT_DECISION)
# The media type each is served with: the same bytes as the file, so JSON is JSON and text is UTF-8.
ARTIFACT_MEDIA_TYPES = {
    SHADOW_EVAL: "application/json",
    STAGING_REPORT: "application/json",
    CANARY_PLAN: "text/markdown; charset=utf-8",
    ROLLOUT_DECISION: "text/plain; charset=utf-8",
}
