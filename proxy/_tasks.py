"""Background tasks that are referenced until done and drained at shutdown.

``asyncio.create_task`` keeps only a weak reference: a task nobody holds can be garbage-collected
mid-flight, and an exception in it is reported only at collection time. Every background task in
rollguard goes through :class:`TaskSet` (ruff bans the raw call elsewhere, TID251).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger("rollguard.tasks")


class TaskSet:
    """A set of live tasks; failures are logged, never lost; ``drain`` waits then cancels."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def __repr__(self) -> str:
        return f"<TaskSet {self.name} live={len(self._tasks)}>"

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("task %s failed", task.get_name(), exc_info=exc)

    async def drain(self, within: float) -> int:
        """Wait up to ``within`` seconds for live tasks, cancel the rest; returns how many were cancelled."""
        if not self._tasks:
            return 0
        _, pending = await asyncio.wait(set(self._tasks), timeout=within)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        return len(pending)
