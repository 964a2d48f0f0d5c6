"""``shadow.capture``: every compared mirror pair appended to a backtest trace.

The shadow phase sees what both versions answer to the same request at the same moment, which is
exactly what ``rollguard backtest`` replays. Each pair becomes one trace line: seconds since the capture
began, the route, each version's status, latency, score and contract verdict. Never a body, a header or
a key in the clear: the sticky key is written as its HMAC pseudonym (``logging.pii.key``), so the same
user keeps the same pseudonym, and replayed traffic clusters as live traffic did.

Lines go to the file through a buffer, flushed once a second and at close, so a pair costs a memory copy
on the event loop, not a write; a pair the file cannot take (a full disk) is counted and dropped, never
raised into the mirror.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import IO

from proxy.content.pii import Masker
from proxy.rollout.trace import Outcome, TracedRequest
from proxy.shadow.mirror import ShadowPair
from proxy.upstream.attempt import Attempt

log = logging.getLogger("rollguard.shadow")

_FLUSH_EVERY = 1.0  # seconds


def outcome_of(att: Attempt) -> Outcome:
    """An attempt as a trace records it: status 0 when no answer came (connect, timeout, reset)."""
    status = att.status or att.upstream_status
    if att.error is not None and att.resp is None:
        status = 0
    return Outcome(
        status=status,
        latency_ms=round(att.elapsed * 1000.0, 3),
        score=att.score if att.violation is None else None,
        contract_ok=att.violation is None,
    )


class TraceCapture:
    """Appends mirror pairs to ``path`` as trace lines; ``observe`` is a pair observer."""

    def __init__(self, path: Path, masker: Masker) -> None:
        self.path = path
        self.masker = masker
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[bytes] = open(path, "ab", buffering=256 * 1024)  # noqa: SIM115 - kept open
        self._started = time.monotonic()
        self._flushed = self._started
        self.written = 0
        self.dropped = 0

    def observe(self, pair: ShadowPair) -> None:
        if pair.baseline is None or self._file.closed:
            return  # the client left before its answer: there is no baseline outcome to record
        now = time.monotonic()
        sticky = pair.request.sticky
        line = TracedRequest(
            t=round(now - self._started, 4),
            key=None if sticky is None else self.masker.pseudonym("key", sticky),
            route=pair.request.route.route.name,
            baseline=outcome_of(pair.baseline),
            candidate=outcome_of(pair.candidate),
        ).to_line()
        try:
            self._file.write(line)
            if now - self._flushed >= _FLUSH_EVERY:
                self._flushed = now
                self._file.flush()
        except OSError as exc:
            self.dropped += 1
            if self.dropped == 1:
                log.warning("shadow.capture: cannot write %s (%s); pairs are dropped", self.path, exc)
            return
        self.written += 1

    def close(self) -> None:
        if self._file.closed:
            return
        try:
            self._file.close()
        except OSError as exc:
            log.warning("shadow.capture: closing %s failed (%s)", self.path, exc)
