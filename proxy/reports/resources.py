"""The proxy process's own resource figures, for ``staging_report.json``: memory, CPU, descriptors, uptime.

Read from ``/proc/self`` where it exists (Linux) and from ``resource``/``os`` otherwise; a figure that
cannot be read is ``None``, never a guess. Called when a report is rendered, never per request.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

_PROC = Path("/proc/self")


def _status(field: str) -> int | None:
    """The number on a line of ``/proc/self/status`` (VmRSS and VmHWM are in kB); None when unavailable."""
    try:
        for line in (_PROC / "status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _status_kib(field: str) -> int | None:
    kib = _status(field)
    return None if kib is None else kib * 1024


def _open_fds() -> int | None:
    for folder in (_PROC / "fd", Path("/dev/fd")):
        try:
            # The listing itself holds one descriptor while it runs: not one of the proxy's.
            return max(0, len(os.listdir(folder)) - 1)
        except OSError:
            continue
    return None


def _peak_rss() -> int | None:
    peak = _status_kib("VmHWM")
    if peak is not None:
        return peak
    try:
        # ru_maxrss is KiB on Linux, bytes on macOS.
        raw = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except (OSError, ValueError):
        return None
    return int(raw if sys.platform == "darwin" else raw * 1024)


def process_figures(started_monotonic: float) -> dict[str, Any]:
    """RSS (now and peak), CPU seconds, open descriptors and their limit, threads and uptime of this process.

    ``started_monotonic`` is the ``time.monotonic()`` of the proxy's start.
    """
    times = os.times()
    try:
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        fd_limit: int | None = None if soft == resource.RLIM_INFINITY else int(soft)
    except (OSError, ValueError):
        fd_limit = None
    return {
        "pid": os.getpid(),
        "uptime_s": round(time.monotonic() - started_monotonic, 3),
        "rss_bytes": _status_kib("VmRSS"),
        "peak_rss_bytes": _peak_rss(),
        "cpu_user_s": round(times.user, 3),
        "cpu_system_s": round(times.system, 3),
        "open_fds": _open_fds(),
        "fd_limit": fd_limit,
        "threads": _status("Threads") or threading.active_count(),
        "python": sys.version.split()[0],
    }


def process_usage(pid: int) -> tuple[float, int | None] | None:
    """CPU seconds used so far (user + system) and the RSS in bytes of process ``pid``, from ``/proc``;
    None when it is gone or ``/proc`` is not there (RSS alone None when unreadable)."""
    proc = Path("/proc") / str(pid)
    try:
        stat = (proc / "stat").read_text()
        # The command name, field 2, is in parentheses and may hold spaces: count fields after its end.
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks = os.sysconf("SC_CLK_TCK")
        cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime: fields 14 and 15 of the line
    except (OSError, ValueError, IndexError):
        return None
    rss: int | None = None
    try:
        for line in (proc / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return cpu, rss
