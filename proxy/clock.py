"""Wall-clock timestamps as they appear in state, decisions and logs: UTC, RFC 3339, milliseconds."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
