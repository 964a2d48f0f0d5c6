"""What the numbers were measured on (enough to tell two result files apart), and what the machine and
the servers under test did meanwhile: CPU use, other people's processes, resident memory."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PACKAGES = ("aiohttp", "uvicorn", "uvloop", "httptools", "orjson", "starlette", "httpx", "rollguard")


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _first_line(cmd: list[str]) -> str:
    """A tool's version banner; nginx prints it on stderr, wrk -v exits 1 after printing it."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    text = (proc.stdout + proc.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def _package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _governor() -> str | None:
    with contextlib.suppress(OSError):
        return Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").read_text().strip()
    return None


def _git(repo: Path) -> dict[str, Any]:
    """Read-only: which tree was measured, and whether it had local changes."""

    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(
                ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10, check=False
            )
        except OSError:
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    # Which tracked files differed from the commit: on a shared checkout, someone's work in progress.
    changed = None if status is None else [line.split(maxsplit=1)[-1] for line in status.splitlines()]
    return {"commit": commit, "dirty": None if status is None else bool(status), "changed": changed}


def info(repo: Path) -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": sorted(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": _package_versions(),
        "nginx": _first_line(["nginx", "-v"]),
        "wrk": _first_line(["wrk", "-v"]),
        "cpu_governor": _governor(),
        "loadavg_at_start": os.getloadavg(),
        "git": _git(repo),
    }


# /proc/stat cpuN columns: user nice system idle iowait irq softirq steal (guest time is inside user).
_IDLE, _IOWAIT, _STEAL = 3, 4, 7


def cpu_times() -> dict[int, list[int]]:
    """Per-CPU jiffies from /proc/stat; empty where there is no /proc."""
    times: dict[int, list[int]] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/stat").read_text().splitlines():
            name, *fields = line.split()
            if name.startswith("cpu") and name != "cpu":
                times[int(name[3:])] = [int(f) for f in fields[:8]]
    return times


def cpu_usage(before: dict[int, list[int]], after: dict[int, list[int]]) -> dict[str, dict[str, float]]:
    """Busy and stolen share of each CPU over a window: a row whose proxy CPU was not near 100 % busy,
    or whose steal is high, was limited by something other than the proxy."""
    usage: dict[str, dict[str, float]] = {}
    for cpu, end in after.items():
        delta = [e - b for e, b in zip(end, before.get(cpu, end), strict=True)]
        total = sum(delta) or 1
        idle = delta[_IDLE] + delta[_IOWAIT]
        usage[f"cpu{cpu}"] = {
            "busy_pct": round(100 * (total - idle - delta[_STEAL]) / total, 1),
            "steal_pct": round(100 * delta[_STEAL] / total, 1),
        }
    return usage


@dataclass(frozen=True)
class ProcCpu:
    comm: str
    session: int
    kernel_thread: bool
    cpu_s: float


def process_cpu() -> dict[int, ProcCpu]:
    """CPU seconds used so far by every process, from /proc/<pid>/stat."""
    ticks = os.sysconf("SC_CLK_TCK")
    procs: dict[int, ProcCpu] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited while we looked
            continue
        # comm may contain spaces and parentheses: it ends at the last ')'.
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        ppid, session = int(fields[1]), int(fields[3])
        # utime, stime, and cutime, cstime: children that lived and were reaped inside the window (a test
        # suite's short-lived servers) are invisible themselves but land in their parent's counters.
        cpu_ticks = sum(int(f) for f in fields[11:15])
        kernel_thread = ppid == 2 or int(entry.name) == 2
        procs[int(entry.name)] = ProcCpu(comm, session, kernel_thread, cpu_ticks / ticks)
    return procs


def neighbours(
    before: dict[int, ProcCpu], after: dict[int, ProcCpu], own_sessions: set[int], top: int = 3
) -> dict[str, Any]:
    """CPU that user-space processes outside this run used during a window: other people's tests or
    builds on a shared machine. Kernel threads are left out (loopback softirq work is caused by the run)."""
    used: list[tuple[float, int, str]] = []
    for pid, proc in after.items():
        if proc.kernel_thread or proc.session in own_sessions or pid == os.getpid():
            continue
        start = before[pid].cpu_s if pid in before and before[pid].comm == proc.comm else 0.0
        if proc.cpu_s - start > 0:
            used.append((proc.cpu_s - start, pid, proc.comm))
    used.sort(reverse=True)
    return {
        "cpu_s": round(sum(cpu for cpu, _, _ in used), 2),
        "top": [{"pid": pid, "comm": comm, "cpu_s": round(cpu, 2)} for cpu, pid, comm in used[:top]],
    }


def session_cpu_s(before: dict[int, ProcCpu], after: dict[int, ProcCpu], session: int) -> float:
    """CPU seconds one session's processes (a server under test) used between two `process_cpu` reads."""
    used = 0.0
    for pid, proc in after.items():
        if proc.session == session:
            start = before[pid].cpu_s if pid in before and before[pid].comm == proc.comm else 0.0
            used += proc.cpu_s - start
    return round(used, 3)


# --- resident memory -----------------------------------------------------------------------------------


def session_pids(session: int) -> dict[int, str]:
    """The live processes of one session (a server and its children, e.g. nginx master and worker)."""
    pids: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[3]) == session:
            pids[int(entry.name)] = stat[stat.index("(") + 1 : stat.rindex(")")]
    return pids


def rss_kib(pid: int) -> int | None:
    """VmRSS of one process in KiB (None once it has exited; 0 for a zombie, which has no VmRSS line)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@dataclass
class RssWatch:
    """Resident memory of a process tree over a measured window: at its start, at its end, and sampled
    in between, so a steady climb (a leak, an unbounded backlog) can be told from a one-off step."""

    pids: dict[int, str]
    start_kib: dict[int, int]
    end_kib: dict[int, int] | None = None
    samples: list[tuple[float, int]] = field(default_factory=list)  # (seconds in, KiB over all pids)

    def to_json(self) -> dict[str, Any]:
        start = sum(self.start_kib.values())
        end = None if self.end_kib is None else sum(self.end_kib.values())
        kib_to_mib = 1 / 1024
        return {
            "processes": {
                str(pid): {
                    "comm": comm,
                    "rss_start_mib": round(self.start_kib.get(pid, 0) * kib_to_mib, 2),
                    "rss_end_mib": None
                    if self.end_kib is None
                    else round(self.end_kib.get(pid, 0) * kib_to_mib, 2),
                }
                for pid, comm in self.pids.items()
            },
            "rss_start_mib": round(start * kib_to_mib, 2),
            "rss_end_mib": None if end is None else round(end * kib_to_mib, 2),
            "rss_growth_mib": None if end is None else round((end - start) * kib_to_mib, 2),
            # Over the second half only: a backlog that filled up once shows 0 here, a leak does not.
            "rss_late_growth_mib": round(self._late_growth_kib() * kib_to_mib, 2) if self.samples else None,
            "rss_peak_mib": round(max([start] + [kib for _, kib in self.samples]) * kib_to_mib, 2),
            "samples_mib": [[round(t, 2), round(kib * kib_to_mib, 2)] for t, kib in self.samples],
        }

    def _late_growth_kib(self) -> int:
        middle = self.samples[-1][0] / 2
        at_middle = min(self.samples, key=lambda sample: abs(sample[0] - middle))
        return self.samples[-1][1] - at_middle[1]


@contextlib.contextmanager
def watch_rss(session: int, interval_s: float = 1.0) -> Iterator[RssWatch]:
    """Sum VmRSS over the session's processes when entered, every `interval_s` while inside, and on exit.

    The set of processes is fixed on entry: reading a few status files per sample keeps the watcher's
    own CPU use (on whichever core the harness runs) far below anything the row could notice."""
    pids = session_pids(session)

    def read() -> dict[int, int]:
        return {pid: kib for pid in pids if (kib := rss_kib(pid)) is not None}

    watch = RssWatch(pids, read())
    started = time.monotonic()
    watch.samples.append((0.0, sum(watch.start_kib.values())))
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(interval_s):
            watch.samples.append((time.monotonic() - started, sum(read().values())))

    thread = threading.Thread(target=sample, name="rss-watch", daemon=True)
    thread.start()
    try:
        yield watch
    finally:
        stop.set()
        thread.join()
        watch.end_kib = read()
        watch.samples.append((time.monotonic() - started, sum(watch.end_kib.values())))


def write_result(out: Path, repo: Path, results: list[dict[str, Any]]) -> None:
    """A micro-benchmark's result file: the machine it ran on and its rows."""
    import json

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": info(repo), "results": results}, indent=2) + "\n")
    print(f"wrote {out}")
