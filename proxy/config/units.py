"""Durations, byte sizes and rates as written in config files: ``250ms``, ``2s``, ``1m``; ``64KiB``,
``10MiB``; ``1KiB/s``."""

from __future__ import annotations

import math
import re

_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_SIZE = re.compile(r"^([0-9]+)(B|KB|KiB|MB|MiB|GB|GiB)?$")
_SIZE_UNITS = {None: 1, "B": 1, "KB": 1000, "KiB": 1024, "MB": 10**6, "MiB": 2**20, "GB": 10**9, "GiB": 2**30}


def parse_duration(value: str | float | int) -> float:
    """Seconds from ``250ms``/``2s``/``1m``/``1h`` or a bare number of seconds; finite and above zero
    (the schema checks the written form first, so a file never reaches the ValueError)."""
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        m = _DURATION.match(value)
        if m is None:
            raise ValueError(f"{value!r} is not a duration (250ms, 2s, 1m, 1h)")
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"{value!r} is not a duration above zero")
    return seconds


def parse_size(value: str | int) -> int:
    """Bytes from ``512``/``64KiB``/``10MiB``/``1MB``."""
    if isinstance(value, int):
        return value
    m = _SIZE.match(value)
    if m is None:
        raise ValueError(f"{value!r} is not a size (512, 64KiB, 10MiB)")
    return int(m.group(1)) * _SIZE_UNITS[m.group(2)]


def parse_rate(value: str | int) -> int:
    """Bytes per second from ``1KiB/s`` (a size per second) or a bare number of bytes per second."""
    if isinstance(value, int):
        return value
    if not value.endswith("/s"):
        raise ValueError(f"{value!r} is not a rate (1KiB/s, 512/s)")
    return parse_size(value[:-2])
