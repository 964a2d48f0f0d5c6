"""Slow request bodies against a real proxy: does a crowd of drip-fed bodies slow a normal client down?

    .venv/bin/python benchmarks/bench_slow_bodies.py [--quick] [--out FILE] [--rate N] [--sockets N]

The claim measured: with the listener at ``limits.max_concurrency: 100``, 200 slow-body sockets (a
request head, then 1 body byte every 2 s) must not stop a normal client from getting answers, with a p99
under 2x its idle p99. The listener admits a request with a body (takes one of the ``max_concurrency``
slots) only once its body has arrived, so a drip-fed body holds a socket, never a slot.

Starts the sample model (``python -m proxy.demo.sample_model``, baseline and candidate both) and
``python -m proxy serve --config FILE`` in their own processes, for two listener configurations:

- ``default deadlines``: ``max_concurrency: 100``, ``body_timeout`` and ``min_body_rate`` left at their
  defaults (10 s, 1 KiB/s after a 5 s grace). The proxy answers each attack socket 408 and closes it after
  ~5 s; the attacker reconnects at once, so 200 stay open (a persistent attacker, not a one-off wave).
- ``deadlines not reached``: ``max_concurrency: 100``, ``body_timeout: 120s``, ``min_body_rate: 0``. No
  attack socket is refused during the measurement (1,000 bytes at 0.5 B/s take 2,000 s): this row shows
  that slots are not held, on its own, without the deadlines kicking the attackers out.

For each, a normal client sends valid ``POST /v1/infer`` bodies (``features_generator``) at a fixed
arrival rate (``--rate``, 100/s: open loop; a latency counts from the request's scheduled time, so a
stalled listener cannot hide its stall by slowing the client down). The phases:

- ``idle``: nothing else on the listener.
- ``attack cl``: 200 sockets each send a ``POST /v1/infer`` head with ``Content-Length: 1000``, then one
  body byte every 2 s (the first byte staggered over the 2 s by socket), while the same client load runs.
- ``attack chunked``: the same with ``Transfer-Encoding: chunked``: the wire bytes of one 1,000-byte
  chunk, one every 2 s.

They run in rounds (3; ``--quick``: 1), each phase once per round, the order rotated from round to round,
8 s idle and 10.5 s per attack: under the default deadlines an attack phase holds two waves of refusals
(at ~5 s and ~10 s), about what a sustained attack gets. A phase's latencies are pooled over the rounds:
a neighbour's burst on a shared machine then lands in every phase alike, not in whichever ran at the time.
``x idle p99`` is the pooled p99 over the same proxy's pooled ``idle`` p99 (the number to read; the
absolute latencies move with the machine); ``by round`` is the same ratio within each round, which shows
how much the machine moved. ``PASS`` needs ``x idle p99`` under 2 and every answer a 200.

The attackers run in a separate process (this script with ``--attacker``; protocol callbacks on uvloop,
cheap per socket, as they share the machine with the proxy). They record every socket the proxy ended:
when (into the phase, and after its head), with which status, and why (the 408's problem ``detail``:
``body_too_slow`` or ``body_timeout``), and how many were open at least / at most during the phase. The
proxy's own ``rollguard_listener_rejections_total`` (admin ``/metrics``, per phase), its CPU time and its
open descriptors back that up. Under each attack phase with refusals the client's latencies are split:
the requests in flight while an attack socket was refused, or sent up to 100 ms after, and the others:
what a wave of refusals (200 answered and closed at once, then 200 reconnects) costs the client.

``nbr cores`` is the CPU other people's processes used during the phase, in cores: a phase with a lot of
it measured the neighbours too. The exit code is always 0: a benchmark reports what it saw. ``--quick``
(one round of 1.5 s idle and 5.3 s per attack, ~35 s) is a smoke test, not a result.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import os
import random
import re
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

REPO = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

import procs  # benchmarks/procs.py: start, stop and probe the processes a benchmark needs
from proxy_config import proxy_config_doc

HOST = procs.HOST
T = TypeVar("T")
RESULTS_DIR = BENCH / "results"
MAX_CONCURRENCY = 100
TARGET_RATIO = 2.0
BODY_LENGTH = 1000  # the declared body of every attack request
ATTACK_INTERVAL = 2.0  # seconds between two body bytes of one attack socket
CONFIGS: dict[str, dict[str, Any]] = {
    # The defaults are not written out: this row measures what a config without them gets.
    "default deadlines": {"max_concurrency": MAX_CONCURRENCY},
    "deadlines not reached": {"max_concurrency": MAX_CONCURRENCY, "body_timeout": "120s", "min_body_rate": 0},
}
FRAMINGS = ("cl", "chunked")
NEAR_CLOSE_S = 0.1  # a request sent this soon after an attack socket was closed counts as near it
_model_sessions: set[int] = set()  # the model's session: it serves the client, so it is not a neighbour


# --- the attacker (its own process: ``--attacker``) ------------------------------------------------------


def attack_head(port: int, framing: str, slot: int) -> bytes:
    framing_field = f"content-length: {BODY_LENGTH}" if framing == "cl" else "transfer-encoding: chunked"
    return (
        f"POST /v1/infer HTTP/1.1\r\nhost: {HOST}:{port}\r\ncontent-type: application/json\r\n"
        f"x-user-id: slow-{slot}\r\n{framing_field}\r\n\r\n"
    ).encode()


def attack_body(framing: str) -> bytes:
    """The wire bytes dripped after the head: the declared body, or one chunk of it and the last chunk."""
    payload = b"x" * BODY_LENGTH
    return payload if framing == "cl" else b"%x\r\n%s\r\n0\r\n\r\n" % (BODY_LENGTH, payload)


def _reason(detail: str) -> str:
    """The listener's reason (its ``on_reject`` label) from a 408's problem detail."""
    if "min_body_rate" in detail:
        return "body_too_slow"
    if "body did not arrive" in detail:
        return "body_timeout"
    if "head did not arrive" in detail:
        return "head_timeout"
    return detail[:80] or "-"


def parse_answer(raw: bytes) -> tuple[int | None, str]:
    """(status, reason) of what the proxy wrote before closing an attack socket."""
    if not raw:
        return None, "closed without an answer"
    head, _, body = raw.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None, f"unparsed answer {raw[:40]!r}"
    try:
        detail = str(json.loads(body).get("detail", ""))
    except ValueError:
        detail = body[:80].decode(errors="replace")
    return status, _reason(detail)


class _SlowBody(asyncio.Protocol):
    """One attack socket: its head at once, then one body byte every ``interval`` s until the proxy answers
    or closes. Plain protocol callbacks, no streams or tasks: the attacker shares the machine with the
    proxy, so what it costs per socket is kept small."""

    def __init__(self, attack: _Attack, slot: int) -> None:
        self.attack = attack
        self.slot = slot
        self.transport: asyncio.Transport | None = None
        self.head_at = 0.0
        self.answer_at: float | None = None
        self.answer = b""
        self.sent = 0
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        a = self.attack
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass, only alike
        self.head_at = time.monotonic()
        self.transport.write(a.head(self.slot))
        a.opened(self)
        # The first byte spread over the interval by slot, so the drips do not all land at once.
        self.timer = a.loop.call_later(a.interval * self.slot / a.sockets, self._drip)

    def _drip(self) -> None:
        a = self.attack
        if self.transport is None or self.transport.is_closing() or self.answer_at is not None:
            return
        self.transport.write(a.body[self.sent : self.sent + 1])
        self.sent += 1
        if self.sent < len(a.body):
            self.timer = a.loop.call_later(a.interval, self._drip)

    def data_received(self, data: bytes) -> None:
        if self.answer_at is None:
            self.answer_at = time.monotonic()  # the proxy's refusal, as seen from here
        self.answer += data

    def eof_received(self) -> bool:
        return False  # the proxy half-closed after its answer: close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.attack.lost(self, exc)


class _Attack:
    """Holds ``sockets`` slow-body requests open; one the proxy ends is recorded and replaced at once."""

    def __init__(self, port: int, sockets: int, framing: str, interval: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.port = port
        self.sockets = sockets
        self.framing = framing
        self.interval = interval
        self.body = attack_body(framing)
        self.started = time.monotonic()  # every time here: the client's clock too (uvloop's is in ms)
        self.stopping = False
        self.live: set[_SlowBody] = set()
        self.heads_sent = 0
        self.closes: list[dict[str, Any]] = []
        self.connect_errors: dict[str, int] = {}
        self.all_heads = asyncio.Event()
        self.pending: set[asyncio.Task[None]] = set()

    def head(self, slot: int) -> bytes:
        return attack_head(self.port, self.framing, slot)

    def connect(self, slot: int) -> None:
        task = self.loop.create_task(self._connect(slot))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _connect(self, slot: int) -> None:
        while not self.stopping:
            try:
                await self.loop.create_connection(lambda: _SlowBody(self, slot), HOST, self.port)
                return
            except OSError as exc:
                self.connect_errors[type(exc).__name__] = self.connect_errors.get(type(exc).__name__, 0) + 1
                await asyncio.sleep(0.1)

    def opened(self, conn: _SlowBody) -> None:
        self.live.add(conn)
        self.heads_sent += 1
        if self.heads_sent == self.sockets:
            self.all_heads.set()

    def lost(self, conn: _SlowBody, exc: Exception | None) -> None:
        self.live.discard(conn)
        if self.stopping:
            return  # ours: the phase is over
        now = time.monotonic()
        at = conn.answer_at if conn.answer_at is not None else now
        status, reason = parse_answer(conn.answer)
        if status is None and exc is not None:
            reason = f"reset ({type(exc).__name__})"
        self.closes.append(
            {
                "at_s": round(at - self.started, 3),
                "mono": at,
                "after_head_s": round(at - conn.head_at, 3),
                "status": status,
                "reason": reason,
                "body_bytes_sent": conn.sent,
            }
        )
        self.connect(conn.slot)

    def stop(self) -> None:
        self.stopping = True
        for task in self.pending:
            task.cancel()
        for conn in list(self.live):
            if conn.transport is not None:
                conn.transport.abort()


async def attacker(port: int, sockets: int, framing: str, interval: float, max_seconds: float) -> None:
    """Hold ``sockets`` slow-body requests open until SIGTERM (or ``max_seconds``). Prints a ``ready`` line
    once every head is written, and its summary as the last line on stdout."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.call_later(max_seconds, stop.set)  # ends by itself, whatever the parent does
    attack = _Attack(port, sockets, framing, interval)
    for slot in range(sockets):
        attack.connect(slot)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(30):
            await attack.all_heads.wait()
    ready_s = time.monotonic() - attack.started
    print(json.dumps({"ready": attack.all_heads.is_set(), "ready_s": round(ready_s, 3)}), flush=True)
    samples: list[int] = []  # how many were open, from ready until stopped (the phase's window)
    while not stop.is_set():
        samples.append(len(attack.live))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.25):
                await stop.wait()
    stopped_s = time.monotonic() - attack.started
    attack.stop()
    await asyncio.sleep(0.1)  # the aborts' connection_lost callbacks
    print(
        json.dumps(
            {
                "sockets": sockets,
                "framing": framing,
                "ready_s": round(ready_s, 3),
                "stopped_s": round(stopped_s, 3),
                "heads_sent": attack.heads_sent,
                "open_min": min(samples, default=0),
                "open_max": max(samples, default=0),
                "connect_errors": attack.connect_errors,
                "closes": attack.closes,
            }
        ),
        flush=True,
    )


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop when it is installed (the proxy runs on it too): less of the shared CPU
    goes to the client and the attacker."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    result: T = uvloop.run(main)
    return result


# --- processes ---------------------------------------------------------------------------------------------


@dataclass
class Proxy:
    server: procs.Server
    data_port: int
    admin_port: int

    @property
    def pid(self) -> int:
        return self.server.popen.pid


def start_model(log_dir: Path) -> tuple[procs.Server, str]:
    """The sample model in its own process, ready to answer."""
    return procs.start_sample_model("model", log_dir, "--version", "v1")


def config_doc(work: Path, name: str, model: str, limits: dict[str, Any]) -> dict[str, Any]:
    """One model process is both baseline and candidate, and the canary weight is 0, so every answer is
    the baseline's; ``limits`` are the listener's under test."""
    return proxy_config_doc(work / ("state-" + _slug(name)), model, model, limits=limits)


def start_proxy(work: Path, name: str, doc: dict[str, Any]) -> Proxy:
    """``python -m proxy serve --config FILE``, ready once it prints its listening line on stderr."""
    import yaml

    slug = _slug(name)
    path = work / f"{slug}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    cmd = [sys.executable, "-m", "proxy", "serve", "--config", str(path)]
    started = procs.start_rollguard(f"proxy-{slug}", cmd, work)
    return Proxy(started.server, started.data_port, started.admin_port)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name)


@contextlib.contextmanager
def running(server: procs.Server) -> Iterator[procs.Server]:
    try:
        yield server
    finally:
        procs.stop(server)


def start_attacker(work: Path, port: int, framing: str, sockets: int, max_seconds: float) -> procs.Server:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--attacker",
        "--port",
        str(port),
        "--framing",
        framing,
        "--sockets",
        str(sockets),
        "--max-seconds",
        f"{max_seconds:.0f}",
    ]
    server = procs.start(f"attacker-{port}-{framing}", cmd, work, cwd=REPO)

    def first_line() -> str:
        lines = server.stdout_path.read_text(errors="replace").splitlines()
        return lines[0] if lines else ""

    try:
        procs.wait_until(
            lambda: '"ready"' in first_line(), [server], 40, f"{sockets} attack sockets are open"
        )
        if not json.loads(first_line())["ready"]:
            raise procs.NotReady(f"the attacker could not open {sockets} sockets")
    except procs.NotReady as exc:
        procs.stop(server)
        raise RuntimeError(f"{exc}\n{server.stderr_tail()}") from exc
    return server


def attacker_summary(server: procs.Server) -> dict[str, Any]:
    """The attacker's last stdout line, once it has stopped: what the proxy did to its sockets."""
    lines = server.stdout_path.read_text(errors="replace").strip().splitlines()
    try:
        summary: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, ValueError):
        return {"error": f"no summary from the attacker\n{server.stderr_tail()}"}
    closes = summary.pop("closes")
    by_status: dict[str, int] = {}
    for c in closes:
        key = f"{c['status']} {c['reason']}" if c["status"] is not None else c["reason"]
        by_status[key] = by_status.get(key, 0) + 1
    after_head = sorted(c["after_head_s"] for c in closes)
    at = sorted(c["at_s"] for c in closes)
    summary["closed"] = len(closes)
    summary["closed_by"] = by_status
    if after_head:
        summary["closed_after_head_s"] = {
            "min": after_head[0],
            "median": round(statistics.median(after_head), 3),
            "max": after_head[-1],
        }
    if at:  # into the phase's window (the load starts at ready_s)
        summary["first_close_into_phase_s"] = round(at[0] - summary["ready_s"], 3)
    summary["_after_head_s"] = after_head  # pooled over the rounds, then dropped
    summary["_close_mono"] = sorted(c.pop("mono") for c in closes)  # likewise
    summary["closes"] = closes[:10]  # a sample; the counts above cover them all
    return summary


# --- what the proxy says and uses ---------------------------------------------------------------------------


def rejections(admin_port: int) -> dict[str, float]:
    """The data listener's ``rollguard_listener_rejections_total`` by ``code reason``."""
    status, body = procs.http_call(admin_port, "GET", "/metrics")
    out: dict[str, float] = {}
    if status != 200:
        return out
    for line in body.decode(errors="replace").splitlines():
        if line.startswith("rollguard_listener_rejections_total{") and 'listener="data"' in line:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line[: line.rindex("}")]))
            key = f"{labels.get('code')} {labels.get('reason')}"
            out[key] = out.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def cpu_s(pid: int) -> float:
    """utime + stime of one process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


# --- the normal client ------------------------------------------------------------------------------------


def bodies(n: int, seed: int) -> list[bytes]:
    from proxy.demo.sample_model import features_generator

    rng = random.Random(seed)
    return [json.dumps(features_generator(rng)).encode() for _ in range(n)]


async def client_load(
    port: int, payloads: list[bytes], rate: float, pid: int
) -> tuple[dict[str, Any], list[tuple[float, float]]]:
    """POST each payload to /v1/infer, one every 1/rate s whatever the answers do (open loop); the latency
    of a request is from its scheduled time to its whole answer. Samples the proxy's open descriptors.
    Returns the summary and (scheduled time, latency) of every request, in s."""
    import aiohttp

    loop = asyncio.get_running_loop()
    latencies: list[tuple[float, float]] = []
    statuses: dict[str, int] = {}
    fds: list[int] = []
    lag: list[float] = []
    connector = aiohttp.TCPConnector(limit=64)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(f"http://{HOST}:{port}", connector=connector, timeout=timeout) as s:

        async def one(i: int, payload: bytes, at: float) -> None:
            headers = {"content-type": "application/json", "x-user-id": f"u-{i % 1000}"}
            try:
                async with s.post("/v1/infer", data=payload, headers=headers) as r:
                    await r.read()
                    key = str(r.status)
            except (TimeoutError, aiohttp.ClientError) as exc:
                key = type(exc).__name__
            latencies.append((at, time.monotonic() - at))
            statuses[key] = statuses.get(key, 0) + 1

        tasks = []
        start = time.monotonic() + 0.05  # not loop.time(): uvloop's counts whole ms
        next_fd_sample = start
        for i, payload in enumerate(payloads):
            at = start + i / rate
            if (delay := at - time.monotonic()) > 0:
                await asyncio.sleep(delay)
            lag.append(time.monotonic() - at)
            if at >= next_fd_sample:
                with contextlib.suppress(OSError):
                    fds.append(open_fds(pid))
                next_fd_sample += 1.0
            tasks.append(loop.create_task(one(i, payload, at)))
        await asyncio.gather(*tasks)
        seconds = time.monotonic() - start
    summary = {
        "requests": len(payloads),
        "seconds": round(seconds, 2),
        "statuses": statuses,
        **quantiles([t for _, t in latencies]),
        "send_lag_max_ms": round(max(lag) * 1000, 2),  # the client's own loop, late to send
        "proxy_fds": {"min": min(fds, default=0), "max": max(fds, default=0)},
    }
    return summary, latencies


def quantiles(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    out = {f"p{round(q * 100)}_ms": round(_quantile(ordered, q) * 1000, 2) for q in (0.5, 0.9, 0.99)}
    return out | {"max_ms": round(ordered[-1] * 1000, 2)}


def _quantile(ordered: list[float], q: float) -> float:
    """Nearest rank: the smallest sample with at least ``q`` of them at or below it."""
    rank = max(1, -(-len(ordered) * q // 1))
    return ordered[int(rank) - 1]


# --- the run ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    rate: float
    sockets: int
    rounds: int
    warm: int
    idle: int
    attack: int


PHASES = ("idle", *(f"attack {f}" for f in FRAMINGS))


Measured = tuple[dict[str, Any], list[tuple[float, float]]]  # a phase's summary, and its requests' times


def phase(
    proxy: Proxy, name: str, payloads: list[bytes], plan: Plan, attack: procs.Server | None
) -> Measured:
    """One measured window of the client load, with the proxy's CPU, rejections and the neighbours' CPU."""
    import machine  # benchmarks/machine.py: the machine, and the other processes using it

    own = {os.getsid(0), proxy.pid, *_model_sessions} | ({attack.popen.pid} if attack is not None else set())
    before_rej, before_cpu, before_all = rejections(proxy.admin_port), cpu_s(proxy.pid), machine.process_cpu()
    result, latencies = run_loop(client_load(proxy.data_port, payloads, plan.rate, proxy.pid))
    after_all, after_cpu, after_rej = machine.process_cpu(), cpu_s(proxy.pid), rejections(proxy.admin_port)
    result = {"phase": name, **result}
    result["proxy_cpu_s"] = round(after_cpu - before_cpu, 3)
    result["rejections"] = {
        k: int(v - before_rej.get(k, 0.0)) for k, v in after_rej.items() if v - before_rej.get(k, 0.0)
    }
    result["neighbours"] = machine.neighbours(before_all, after_all, own)
    return result, latencies


def one_round(work: Path, proxy: Proxy, plan: Plan, index: int) -> dict[str, Measured]:
    """Every phase once, in an order rotated by round, so that no phase always runs first or last."""
    order = PHASES[index % len(PHASES) :] + PHASES[: index % len(PHASES)]
    out: dict[str, Measured] = {}
    for name in order:
        seed = 100 * index + PHASES.index(name)
        if name == "idle":
            out[name] = phase(proxy, name, bodies(plan.idle, seed), plan, None)
            continue
        framing = name.split()[1]
        # Capped well under the 120 s body_timeout of the second config: no attacker outlives its phase.
        attack = start_attacker(work, proxy.data_port, framing, plan.sockets, plan.attack / plan.rate + 30)
        try:
            result, latencies = phase(proxy, name, bodies(plan.attack, seed), plan, attack)
        finally:
            procs.stop(attack)
        result["attack"] = attacker_summary(attack)
        result["_near_close"] = near_close(latencies, result["attack"].get("_close_mono", []))
        out[name] = result, latencies
        time.sleep(0.3)  # let the proxy see the attack sockets go
    return out


def near_close(requests: list[tuple[float, float]], closes: list[float]) -> list[bool]:
    """Per request: was an attack socket closed while it was in flight, or up to 100 ms before it was sent?
    Those carry whatever a wave of refusals (answer, close, the attacker's reconnects) cost the loop."""
    out = []
    for at, latency in requests:
        i = bisect.bisect_left(closes, at - NEAR_CLOSE_S)
        out.append(i < len(closes) and closes[i] <= at + latency)
    return out


def pooled(name: str, rounds: list[dict[str, Any]], latencies: list[float]) -> dict[str, Any]:
    """One phase over every round: the latencies pooled, the counts summed."""
    statuses: dict[str, int] = {}
    rejected: dict[str, int] = {}
    for r in rounds:
        for key, n in r["statuses"].items():
            statuses[key] = statuses.get(key, 0) + n
        for key, n in r["rejections"].items():
            rejected[key] = rejected.get(key, 0) + n
    seconds = sum(r["seconds"] for r in rounds)
    out: dict[str, Any] = {
        "phase": name,
        "requests": sum(r["requests"] for r in rounds),
        "seconds": round(seconds, 2),
        "statuses": statuses,
        **quantiles(latencies),
        "proxy_cpu_pct": round(100 * sum(r["proxy_cpu_s"] for r in rounds) / seconds, 1),
        "neighbour_cores": round(sum(r["neighbours"]["cpu_s"] for r in rounds) / seconds, 2),
        "rejections": rejected,
        "proxy_fds": {
            "min": min(r["proxy_fds"]["min"] for r in rounds),
            "max": max(r["proxy_fds"]["max"] for r in rounds),
        },
    }
    attacks = [r["attack"] for r in rounds if "attack" in r]
    if attacks:
        if any("error" in a for a in attacks):
            out["attack"] = {"error": "; ".join(a["error"] for a in attacks if "error" in a)}
            return out
        closed_by: dict[str, int] = {}
        for a in attacks:
            for key, n in a["closed_by"].items():
                closed_by[key] = closed_by.get(key, 0) + n
        after_head = sorted(t for a in attacks for t in a["_after_head_s"])
        out["attack"] = {
            "sockets": attacks[0]["sockets"],
            "open_min": min(a["open_min"] for a in attacks),
            "open_max": max(a["open_max"] for a in attacks),
            "closed": sum(a["closed"] for a in attacks),
            "closed_by": closed_by,
            "first_close_into_phase_s": [a.get("first_close_into_phase_s") for a in attacks],
        }
        if after_head:
            out["attack"]["closed_after_head_s"] = {
                "min": after_head[0],
                "median": round(statistics.median(after_head), 3),
                "max": after_head[-1],
            }
    return out


def split_near_close(rounds: list[Measured]) -> dict[str, Any]:
    """An attack phase's latencies, split: the requests near a close (``near_close``) and the rest."""
    near: list[float] = []
    far: list[float] = []
    for result, requests in rounds:
        for (_, latency), flag in zip(requests, result.get("_near_close", []), strict=True):
            (near if flag else far).append(latency)
    out: dict[str, Any] = {}
    for key, values in (("near", near), ("others", far)):
        out[key] = {"requests": len(values), **(quantiles(values) if values else {})}
    return out


def run_config(work: Path, name: str, model: str, plan: Plan) -> dict[str, Any]:
    from proxy.config.load import build_config
    from proxy.edge.listener import BODY_GRACE

    doc = config_doc(work, name, model, CONFIGS[name])
    limits = build_config(doc, work).limits  # what the proxy will read, checked before it starts
    out: dict[str, Any] = {
        "config": name,
        "limits": CONFIGS[name],
        # What the listener enforced, the defaults included.
        "listener_limits": {
            "max_concurrency": limits.max_concurrency,
            "head_timeout_s": limits.head_timeout,
            "body_timeout_s": limits.body_timeout,
            "min_body_rate_bytes_per_s": limits.min_body_rate,
            "min_body_rate_grace_s": BODY_GRACE,
        },
    }
    rounds: list[dict[str, Measured]] = []
    proxy = start_proxy(work, name, doc)
    with running(proxy.server):
        run_loop(client_load(proxy.data_port, bodies(plan.warm, seed=1), plan.rate, proxy.pid))
        for index in range(plan.rounds):
            rounds.append(one_round(work, proxy, plan, index))
    phases = []
    for kind in PHASES:
        latencies = [t for r in rounds for _, t in r[kind][1]]
        phases.append(pooled(kind, [r[kind][0] for r in rounds], latencies))
        if kind != "idle" and any(r[kind][0]["attack"].get("closed") for r in rounds):
            phases[-1]["near_close"] = split_near_close([r[kind] for r in rounds])
    idle = phases[0]
    for p in phases:
        p["x_idle_p50"] = round(p["p50_ms"] / idle["p50_ms"], 2)
        p["x_idle_p99"] = round(p["p99_ms"] / idle["p99_ms"], 2)
        # The same ratio within each round: how much of the pooled one is the machine moving.
        p["x_idle_p99_by_round"] = [
            round(r[p["phase"]][0]["p99_ms"] / r["idle"][0]["p99_ms"], 2) for r in rounds
        ]
        if p["phase"] != "idle":
            p["pass"] = p["x_idle_p99"] < TARGET_RATIO and p["statuses"] == {"200": p["requests"]}
    out["phases"] = phases
    out["rounds"] = [[r[kind][0] for kind in PHASES] for r in rounds]
    for r in out["rounds"]:
        for p in r:
            p.pop("_near_close", None)
            p.get("attack", {}).pop("_after_head_s", None)
            p.get("attack", {}).pop("_close_mono", None)
    print(f"  done: {name}", file=sys.stderr, flush=True)
    return out


def run(work: Path, plan: Plan) -> list[dict[str, Any]]:
    model_server, model = start_model(work)
    _model_sessions.add(model_server.popen.pid)
    results: list[dict[str, Any]] = []
    with running(model_server):
        for name in CONFIGS:
            try:
                results.append(run_config(work, name, model, plan))
            except Exception as exc:  # reported, not raised: a benchmark reports what it saw
                results.append({"config": name, "error": f"{type(exc).__name__}: {exc}"})
    return results


def _closed(p: dict[str, Any]) -> str:
    attack = p.get("attack")
    if not attack:
        return "-"
    if "error" in attack:
        return "attacker failed"
    return ", ".join(f"{n}x {k}" for k, n in sorted(attack["closed_by"].items())) or "none"


def print_table(results: list[dict[str, Any]], plan: Plan) -> None:
    header = (
        "config",
        "phase",
        "req",
        "non-200",
        "p50 ms",
        "p99 ms",
        "max ms",
        "x idle p99",
        "by round",
        "verdict",
        "atk open",
        "proxy cpu%",
        "nbr cores",
        "attack sockets closed by the proxy",
    )
    rows: list[tuple[str, ...]] = []
    for r in results:
        if "error" in r:
            rows.append((r["config"], "ERROR", *["-"] * (len(header) - 3), r["error"].splitlines()[0][:80]))
            continue
        for p in r["phases"]:
            attack = p.get("attack") or {}
            rows.append(
                (
                    r["config"],
                    p["phase"],
                    str(p["requests"]),
                    str(p["requests"] - p["statuses"].get("200", 0)),
                    f"{p['p50_ms']:.2f}",
                    f"{p['p99_ms']:.2f}",
                    f"{p['max_ms']:.1f}",
                    f"{p['x_idle_p99']:.2f}",
                    " ".join(f"{x:.2f}" for x in p["x_idle_p99_by_round"]) if p["phase"] != "idle" else "-",
                    "-" if "pass" not in p else ("PASS" if p["pass"] else "FAIL"),
                    f"{attack['open_min']}-{attack['open_max']}" if "open_min" in attack else "-",
                    f"{p['proxy_cpu_pct']:.0f}",
                    f"{p['neighbour_cores']:.2f}",
                    _closed(p),
                )
            )
    widths = [max(len(x[i]) for x in [header, *rows]) for i in range(len(header))]
    for line in [header, *rows]:
        print(
            "  ".join(
                c.ljust(w) if i in (0, 1, len(header) - 1) else c.rjust(w)
                for i, (c, w) in enumerate(zip(line, widths, strict=True))
            ).rstrip()
        )
    print(
        f"\nclient: {plan.rate:g} req/s open loop; {plan.rounds} round(s) of idle "
        f"{plan.idle / plan.rate:g} s, each attack {plan.attack / plan.rate:g} s; attack: {plan.sockets} "
        f"sockets, 1 body byte / {ATTACK_INTERVAL:g} s, {BODY_LENGTH} bytes declared; "
        f"max_concurrency {MAX_CONCURRENCY}\n"
        f"target: attack p99 (pooled over the rounds) < {TARGET_RATIO:g} x idle p99, and every answer 200"
    )
    for r in results:
        for p in r.get("phases", []):
            attack = p.get("attack") or {}
            said = f"proxy counted {p['rejections'] or 'no rejection'}"
            fds = f"proxy fds {p['proxy_fds']['min']}-{p['proxy_fds']['max']}"
            where = f"  {r['config']} / {p['phase']}:"
            if "closed_after_head_s" in attack:
                t = attack["closed_after_head_s"]
                first = ", ".join(f"{x:.2f}" for x in attack["first_close_into_phase_s"] if x is not None)
                print(
                    f"{where} {attack['closed']} closed, {t['min']:.2f} / {t['median']:.2f} / "
                    f"{t['max']:.2f} s after their head (min / median / max), the first {first} s into "
                    f"each round's phase; {said}; {fds}"
                )
                near = p.get("near_close")
                if near and near["near"]["requests"]:
                    n, o = near["near"], near["others"]
                    print(
                        f"{' ' * len(where)} {n['requests']} requests in flight at a close or sent <= "
                        f"{NEAR_CLOSE_S * 1000:.0f} ms after one: p50 {n['p50_ms']:.2f} p99 "
                        f"{n['p99_ms']:.2f} max {n['max_ms']:.1f} ms; the other {o['requests']}: p99 "
                        f"{o['p99_ms']:.2f} max {o['max_ms']:.1f} ms"
                    )
            elif "closed" in attack:
                print(f"{where} no attack socket closed; {said}; {fds}")
            if p["requests"] != p["statuses"].get("200", 0):
                print(f"{where} client answers {p['statuses']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--out", type=Path, help="result file (default results/bench-slow-bodies-<UTC>.json)")
    parser.add_argument("--quick", action="store_true", help="one short round: a smoke test")
    parser.add_argument("--rate", type=float, default=100.0, help="the normal client's requests per second")
    parser.add_argument("--sockets", type=int, default=200, help="slow-body sockets held open")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the configs and process logs")
    # The attacker's own process (started by this script).
    parser.add_argument("--attacker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--framing", choices=FRAMINGS, help=argparse.SUPPRESS)
    parser.add_argument("--max-seconds", type=float, default=60.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.attacker:
        run_loop(attacker(args.port, args.sockets, args.framing, ATTACK_INTERVAL, args.max_seconds))
        return 0
    # Rounds, and seconds of load: warm-up, idle, each attack. Every attack outlasts the 5 s grace after
    # which the default min_body_rate refuses the attack sockets.
    rounds, seconds = (1, (0.5, 1.5, 5.3)) if args.quick else (3, (1.0, 8.0, 10.5))
    plan = Plan(
        rate=args.rate,
        sockets=args.sockets,
        rounds=rounds,
        warm=int(seconds[0] * args.rate),
        idle=int(seconds[1] * args.rate),
        attack=int(seconds[2] * args.rate),
    )
    work = Path(tempfile.mkdtemp(prefix="rollguard-bench-slow-bodies-"))
    started = time.monotonic()
    results = run(work, plan)
    print()
    print_table(results, plan)
    print(f"\n{time.monotonic() - started:.0f} s")
    if args.keep_tmp:
        print(f"configs and logs in {work}")
    else:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    import machine  # benchmarks/machine.py: what the numbers were measured on

    out = args.out or RESULTS_DIR / f"bench-slow-bodies-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    parameters = {
        "quick": args.quick,
        "rate_per_s": plan.rate,
        "rounds": plan.rounds,
        "requests_per_round": {"idle": plan.idle, "attack": plan.attack},
        "warm_requests": plan.warm,
        "sockets": plan.sockets,
        "attack_interval_s": ATTACK_INTERVAL,
        "attack_body_bytes": BODY_LENGTH,
        "max_concurrency": MAX_CONCURRENCY,
        "target_ratio": TARGET_RATIO,
    }
    machine.write_result(out, REPO, [{"parameters": parameters}, *results])
    return 0


if __name__ == "__main__":
    sys.exit(main())
