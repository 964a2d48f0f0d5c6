"""JSON access log: one orjson line per request, to stdout, a file, or nowhere.

Lines are buffered and written by a flusher every ``flush_interval`` (and at close), so the data path
never waits on a write syscall. Paths are logged without their query string, and no header or body
text is logged at all, so nothing personal reaches this log.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any, BinaryIO

import orjson

from ._tasks import TaskSet


class AccessLog:
    """``record(entry)`` on the hot path; ``start``/``close`` in the lifespan."""

    def __init__(self, target: str, *, flush_interval: float = 0.2, max_buffer: int = 256 * 1024) -> None:
        self.target = target
        self.enabled = target != "off"
        self.flush_interval = flush_interval
        self.max_buffer = max_buffer
        self._buf = bytearray()
        self._fh: BinaryIO | None = None
        self._wake = asyncio.Event()
        self._closing = False

    def __repr__(self) -> str:
        return f"<AccessLog {self.target} buffered={len(self._buf)}>"

    def start(self, tasks: TaskSet) -> None:
        if not self.enabled:
            return
        if self.target == "stdout":
            self._fh = sys.stdout.buffer
        else:
            os.makedirs(os.path.dirname(self.target) or ".", exist_ok=True)
            self._fh = open(self.target, "ab")  # noqa: SIM115 - held for the process lifetime
        tasks.spawn(self._flusher(), name="access-log-flusher")

    def record(self, entry: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._buf += orjson.dumps(entry)
        self._buf += b"\n"
        if len(self._buf) >= self.max_buffer:
            self._wake.set()

    def _take(self) -> bytes:
        data, self._buf = bytes(self._buf), bytearray()
        return data

    def _write(self, data: bytes) -> None:
        if self._fh is not None and data:
            self._fh.write(data)
            self._fh.flush()

    async def _flusher(self) -> None:
        while not self._closing:
            try:
                await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            except TimeoutError:
                pass
            self._wake.clear()
            if self._buf:
                # In a thread: a slow reader of stdout (a log shipper's pipe) must not stall traffic.
                await asyncio.to_thread(self._write, self._take())

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        self._write(self._take())
        if self._fh is not None and self._fh is not sys.stdout.buffer:
            self._fh.close()
        self._fh = None
