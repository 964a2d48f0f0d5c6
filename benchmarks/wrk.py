"""Running wrk and reading its text report."""

from __future__ import annotations

import re
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from procs import pin

POST_LUA = Path(__file__).resolve().parent / "wrk" / "post.lua"

# wrk prints times with the largest unit that keeps the number >= 1 (format_time_us in wrk's units.c).
_TIME_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_TOTAL = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h),", re.M)
_PERCENTILE = re.compile(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.M)
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


@dataclass
class WrkErrors:
    connect: int = 0
    read: int = 0
    write: int = 0
    timeout: int = 0
    # wrk counts statuses >= 400 here despite the wording.
    non_2xx_3xx: int = 0

    @property
    def total(self) -> int:
        return self.connect + self.read + self.write + self.timeout + self.non_2xx_3xx


@dataclass
class WrkResult:
    requests_per_s: float
    requests: int
    duration_s: float
    latency_ms: dict[str, float] = field(default_factory=dict)  # "p50", "p75", "p90", "p99"
    errors: WrkErrors = field(default_factory=WrkErrors)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["errors"]["total"] = self.errors.total
        return out


class WrkFailed(Exception):
    pass


def request_body() -> bytes:
    """The body post.lua sends, so probes and schema checks use the very same bytes."""
    match = re.search(r"^wrk\.body = '(.*)'$", POST_LUA.read_text(), re.M)
    if match is None:
        raise WrkFailed(f"{POST_LUA}: no single-line wrk.body = '...'")
    return match.group(1).encode()


def _to_ms(value: str, unit: str) -> float:
    return float(value) * _TIME_UNITS_MS[unit]


def parse(text: str) -> WrkResult:
    """Parse `wrk --latency` output; raises WrkFailed when it has no throughput line."""
    rps = _RPS.search(text)
    if rps is None:
        raise WrkFailed(f"no 'Requests/sec' in wrk output:\n{text}")
    total = _TOTAL.search(text)
    requests, duration_s = (
        (0, 0.0) if total is None else (int(total.group(1)), _to_ms(total.group(2), total.group(3)) / 1000.0)
    )
    latency = {f"p{pct}": round(_to_ms(val, unit), 4) for pct, val, unit in _PERCENTILE.findall(text)}
    errors = WrkErrors()
    if (sock := _SOCKET.search(text)) is not None:
        errors.connect, errors.read, errors.write, errors.timeout = (int(g) for g in sock.groups())
    if (non2xx := _NON_2XX.search(text)) is not None:
        errors.non_2xx_3xx = int(non2xx.group(1))
    return WrkResult(float(rps.group(1)), requests, duration_s, latency, errors)


def command(url: str, connections: int, duration_s: float, cpu: int | None) -> list[str]:
    # One thread: the load generator shares its core with the upstream and must not crowd it out.
    return pin(cpu) + [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration_s:g}s",
        "--latency",
        "-s",
        str(POST_LUA),
        url,
    ]


def run(url: str, connections: int, duration_s: float, cpu: int | None) -> tuple[WrkResult, str]:
    """Run wrk to completion; returns the parsed result and the raw report (kept in the JSON)."""
    # A fresh session keeps the terminal's Ctrl-C away from wrk; subprocess.run kills it if we unwind.
    try:
        proc = subprocess.run(
            command(url, connections, duration_s, cpu),
            capture_output=True,
            text=True,
            timeout=duration_s + 60,
            start_new_session=True,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise WrkFailed(f"wrk did not finish within {exc.timeout:g} s") from exc
    if proc.returncode != 0:
        raise WrkFailed(f"wrk exited with {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    return parse(proc.stdout), proc.stdout
