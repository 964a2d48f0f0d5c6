"""Wall-clock timestamps as they appear in state, decisions and logs: UTC, RFC 3339, milliseconds."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def iso_at(ts: float) -> str:
    """``ts`` (seconds since the epoch) as it appears in state and decisions."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc_now() -> str:
    return iso_at(time.time())
