"""Structured logs: one orjson line per request (access) and per admin action (audit).

Every free-text field that can carry personal data — path, query string, user agent, error details,
operator reasons — passes through the PII masker before it is buffered, and the masker fails closed
(a value it cannot mask is dropped, never written raw). Successful requests may be sampled
(``logging.sample_success``); errors and audit lines never are. Lines are buffered and written by a
flusher every ``flush_interval`` in a worker thread, so a slow reader of stdout never stalls traffic;
audit lines wake the flusher at once.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import sys
from collections.abc import Callable
from typing import Any, BinaryIO

import orjson

from proxy._tasks import TaskSet
from proxy.content.pii import Masker
from proxy.observe.exchange import Exchange

# client_name: a JWT's sub claim may be an email address; configured names pass through unchanged.
_MASKED_ACCESS_FIELDS = ("path", "query", "error", "client", "client_name", "request_id")
_MASK_CACHE_SIZE = 4096
_OWN_REQUEST_ID = re.compile(r"[0-9a-f]{32}")


class AccessLog:
    """``on_exchange`` (an exchange observer) and ``audit(entry)`` on the hot path; ``start``/``close`` in
    the lifespan."""

    def __init__(
        self,
        target: str,
        *,
        masker: Masker,
        sample_success: float = 1.0,
        flush_interval: float = 0.2,
        max_buffer: int = 256 * 1024,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.target = target
        self.enabled = target != "off"
        self.masker = masker
        self.sample_success = sample_success
        self.flush_interval = flush_interval
        self.max_buffer = max_buffer
        self.rand = rand
        self.dropped_by_sampling = 0
        self._buf = bytearray()
        self._fh: BinaryIO | None = None
        self._wake = asyncio.Event()
        self._closing = False
        self._flushing: asyncio.Task[None] | None = None  # the flusher, awaited by close()
        # Paths, client addresses and queries repeat: masking each distinct value once saves most of
        # the masker's cost on the hot path. Keys hold raw values in memory only, never in a log.
        self._masked: dict[tuple[str, str], str] = {}

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
        self._flushing = tasks.spawn(self._flusher(), name="access-log-flusher")

    def on_exchange(self, ex: Exchange) -> None:
        """The access line of one finished client request; a success (status below 400) may be sampled
        away. What the request carried is masked before it is buffered; ids rollguard minted are not."""
        if not self.enabled or self._sampled_away(ex.status):
            return
        entry: dict[str, Any] = {
            "log": "access",
            "ts": ex.ts,
            "request_id": ex.request_id,
            "method": ex.method,
            "path": ex.path,
            "route": ex.route_name,
        }
        query = ex.query
        if query is not None:
            entry["query"] = query
        peer = ex.peer
        if peer:
            entry["client"] = peer
        if ex.trace_id is not None:
            entry["trace_id"] = ex.trace_id
        if ex.client_name is not None:
            entry["client_name"] = ex.client_name
        if ex.shadow is not None:
            entry["shadow"] = ex.shadow
        if ex.fallback is not None:
            entry["fallback"] = ex.fallback
        if ex.error is not None:
            entry["error"] = ex.error
        if ex.attempts:
            entry["upstream_ms"] = round(ex.attempts[-1].elapsed * 1000, 3)
        answered = ex.answered
        if answered is not None:
            entry["role"] = answered.role
            entry["version"] = answered.pool.version
        entry["status"] = ex.status
        entry["latency_ms"] = round(ex.elapsed * 1000, 3)
        self._append(entry)

    def _sampled_away(self, status: int) -> bool:
        if self.sample_success < 1.0 and status < 400 and self.rand() >= self.sample_success:
            self.dropped_by_sampling += 1
            return True
        return False

    def _append(self, entry: dict[str, Any]) -> None:
        cache = self._masked
        for name in _MASKED_ACCESS_FIELDS:
            value = entry.get(name)
            if not value or (name == "request_id" and _OWN_REQUEST_ID.fullmatch(value)):
                continue  # an id rollguard minted (or any bare hex id) holds nothing personal
            masked = cache.get((name, value))
            if masked is None:
                masked = self.masker.mask_query(value) if name == "query" else self.masker.mask_text(value)
                if len(cache) >= _MASK_CACHE_SIZE:
                    cache.clear()  # bounded: unique values (queries, ids) cannot grow it
                cache[(name, value)] = masked
            entry[name] = masked
        self._buf += orjson.dumps(entry)
        self._buf += b"\n"
        if len(self._buf) >= self.max_buffer:
            self._wake.set()

    def audit(self, entry: dict[str, Any]) -> None:
        """One audit line for an admin action; its free text is masked, and it is written promptly."""
        if not self.enabled:
            return
        line = {"log": "audit", **entry}
        for name in ("reason", "error"):
            if isinstance(line.get(name), str):
                line[name] = self.masker.mask_text(line[name])
        self._buf += orjson.dumps(line, option=orjson.OPT_NON_STR_KEYS)
        self._buf += b"\n"
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
        if self._flushing is not None:
            # A batch the flusher took may still be on its way to the file in a thread: closing the file
            # under it would drop those lines, the last requests before a shutdown.
            await asyncio.gather(self._flushing, return_exceptions=True)
            self._flushing = None
        self._write(self._take())
        if self._fh is not None and self._fh is not sys.stdout.buffer:
            self._fh.close()
        self._fh = None
