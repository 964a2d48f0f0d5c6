"""The trip-wire's reaction time in a real proxy: how soon a candidate failing every request is rolled back.

    .venv/bin/python benchmarks/bench_tripwire.py [--quick] [--runs N] [--rates 50,300,1000] [--out FILE]

README claims that a candidate failing every request is rolled back within 1 s of its 5th failure. A
test once asserted it as a wall-clock limit (start to rollback < 1 s at 300 requests/s), which on a busy
2-core machine fails for reasons that are not bugs; the suite now checks counts, and this measures the time.

Each run starts its own ``rollguard serve --config FILE`` (loopback, free ports, a fresh state file and
access log) in front of the sample model as the baseline and a candidate that fails every request, in
one of two ways:

- ``refused``: the candidate's URL is a loopback port that refuses every connection (a socket bound and
  held for the whole benchmark, never listening, so nothing else can take the port);
- ``http_500``: the sample model with ``--error-rate 1``, answering 500 JSON to every valid request.

The config is the sample route (``proxy_config.py``) with ``canary.shadow_samples: 0``, so ``POST
/rollout/start`` puts the first step's weight on the candidate at once; ``interval: 30s``, so no window
closes during a run and only the trip-wire can roll back; ``tripwire.consecutive_failures: 5`` (the
default) and every other trip-wire, breaker, retry and fallback setting as shipped. Open-loop traffic of
valid bodies with sticky user ids runs at a fixed rate for 1 s with the rollout idle, then the operator
token starts the rollout, and the run ends 0.3 s after ``/status`` shows ``rolled_back`` (or 10 s
without it). From rollguard's own records:

- ``start->trip``: the ``start`` decision's ``ts`` to the trip-wire's ``ROLLBACK`` (``GET /decisions``).
  It includes the wait for the failures themselves, ~N / (rate x weight), so it grows at low rates;
- ``1st fail->trip``: the end of the first request whose candidate attempt failed (an access-log line
  with ``fallback``; its ``ts`` plus its latency) to the trip. The 5th failure comes after the 1st, so
  this bounds "within 1 s of the 5th failure" from above; that bound is what the target is checked on;
- ``decide->trip``: the end of the last failed request before the trip (the one that decided it) to the
  trip's ``ts``: rollguard's own latency. Both decisions' ``ts`` are read before their state writes, so
  ``start->trip`` includes the start's write (and the wait for it) and ``decide->trip`` the rollback's not;
- ``fails``: the trip-wire's run of consecutive failures when it tripped (the decision's ``tripwire``);
  ``cand req``: requests answered by the fallback before the trip (access log), and ``cand att``: failed
  candidate attempts over the whole run (``rollguard_upstream_errors_total{role="candidate"}``: retries
  and the requests still in flight at the trip included).

Decision timestamps are truncated to the millisecond; the two failure-based figures take the trip at the
latest moment its ``ts`` allows, so they are upper bounds, up to 1 ms high. Every run also records the
client's latency (``client p50``, from each request's scheduled time), the proxy process's CPU and how
many cores other processes kept busy meanwhile (``other cores``): when the machine cannot keep up with a
rate, requests queue, and every figure of that run includes the queueing. The result (``--out``, default
``results/tripwire.json``) has the machine, the settings, the table and every run. The exit code is 0
whatever the figures, 1 when a run could not be made. ``--quick`` is one run at 300 requests/s per
variant: a smoke test (~10 s), not a result, written to ``results/tripwire-quick.json`` by default.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import yaml

REPO = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

import machine  # benchmarks/machine.py: what the numbers were measured on, and who else used the CPU
import probes  # benchmarks/probes.py: rollguard's /metrics as samples
import procs  # benchmarks/procs.py: start, stop and probe the processes a benchmark needs
from proxy_config import proxy_config_doc

from proxy.demo.sample_model import features_generator

HOST = procs.HOST
TOKEN_ENV = "ROLLGUARD_OPERATOR_TOKEN"
TARGET_S = 1.0  # README: rolled back within 1 s of the 5th failure
VARIANTS = ("refused", "http_500")
RATES = (50, 300, 1000)
QUICK_RATE = 300  # the rate the old test drove
WARMUP_S = 1.0  # idle traffic first: pools warm, and the trip-wire has a baseline to compare against
TRIP_TIMEOUT_S = 10.0  # a run without a trip by then is reported as such
TAIL_S = 0.3  # traffic after the trip: the requests in flight at the trip finish and are counted
MAX_IN_FLIGHT = 256  # the client's connection limit; far above what 1000/s at a few ms needs


# --- processes ---------------------------------------------------------------------------------------


@dataclass
class Proxy:
    server: procs.Server
    data_url: str
    admin_url: str
    admin_port: int
    access_log: Path


def rollguard_cmd() -> list[str]:
    """The console script a user runs, from the same environment as this interpreter."""
    script = Path(sys.executable).with_name("rollguard")
    return [str(script)] if script.exists() else [sys.executable, "-m", "proxy"]


def start_model(name: str, log_dir: Path, *extra: str) -> tuple[procs.Server, str]:
    return procs.start_sample_model(name, log_dir, *extra)


@contextlib.contextmanager
def refused_port() -> Iterator[str]:
    """A loopback URL that refuses connections: bound (so the port stays ours) but never listening, so
    the kernel answers every SYN with a RST."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((HOST, 0))
        yield f"http://{HOST}:{sock.getsockname()[1]}"
    finally:
        sock.close()


def config_doc(run_dir: Path, baseline: str, candidate: str, weight: float) -> dict[str, Any]:
    steps = [weight, *(s for s in (50.0, 100.0) if s > weight)]
    return proxy_config_doc(
        run_dir / "state",
        baseline,
        candidate,
        admin={
            "listen": f"{HOST}:0",
            "tokens": [{"name": "ops", "role": "operator", "token": f"env:{TOKEN_ENV}"}],
        },
        canary={
            "weight": 0,
            "steps": steps,
            "shadow_samples": 0,  # start goes straight to the first step: the trip-wire is armed at once
            "interval": "30s",  # no window closes during a run: only the trip-wire can roll back
            "tripwire": {"consecutive_failures": 5},
        },
        # The failed requests' times come from here; every line, since a fallback answer is a 200.
        logging={"access_log": str(run_dir / "access.log"), "sample_success": 1.0},
    )


def start_proxy(run_dir: Path, doc: dict[str, Any]) -> Proxy:
    """``rollguard serve --config FILE``, ready once it prints its listening line on stderr."""
    path = run_dir / "rollguard.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    started = procs.start_rollguard("rollguard", [*rollguard_cmd(), "serve", "--config", str(path)], run_dir)
    return Proxy(
        started.server,
        data_url=started.data_url,
        admin_url=started.admin_url,
        admin_port=started.admin_port,
        access_log=Path(doc["logging"]["access_log"]),
    )


# --- traffic -------------------------------------------------------------------------------------------


@dataclass
class Traffic:
    sent: int = 0
    answers: dict[str, int] = field(default_factory=dict)  # "200 v1", or the client-side error's name
    max_lag_s: float = 0.0  # how far behind its schedule the generator fell: it, not the proxy, was late
    # Seconds from each request's scheduled time to its answer: a machine that cannot keep up at this rate
    # shows here first, as queueing, and every other figure of the run then includes that queueing.
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0


def request_bodies(n: int, seed: int) -> list[tuple[bytes, str]]:
    """Valid bodies, encoded once so the generator spends its CPU on sending, with their sticky keys."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        body = features_generator(rng)
        out.append((json.dumps(body).encode(), str(body["user_id"])))
    return out


async def drive(
    session: aiohttp.ClientSession, rate: float, max_s: float, stop: asyncio.Event, seed: int
) -> Traffic:
    """Open loop: request i is sent at start + i / rate whatever the answers do, until ``stop`` or
    ``max_s`` (so the loop ends by itself). A generator behind schedule sends at once to catch up."""
    traffic = Traffic()
    limit = max(1, int(rate * max_s))
    bodies = request_bodies(min(limit, 5000), seed)
    pending: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()

    async def one(body: bytes, user: str, due: float) -> None:
        headers = {"content-type": "application/json", "x-user-id": user}
        try:
            async with session.post("/v1/infer", data=body, headers=headers) as r:
                await r.read()
                key = f"{r.status} {r.headers.get('x-rollguard-version', '-')}"
        except (TimeoutError, aiohttp.ClientError) as exc:
            key = type(exc).__name__
        traffic.answers[key] = traffic.answers.get(key, 0) + 1
        traffic.latencies.append(loop.time() - due)

    started = loop.time()
    for i in range(limit):
        if stop.is_set():
            break
        due = started + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            traffic.max_lag_s = max(traffic.max_lag_s, -delay)
        body, user = bodies[i % len(bodies)]
        task = asyncio.create_task(one(body, user, due))
        pending.add(task)
        task.add_done_callback(pending.discard)
        traffic.sent += 1
    traffic.seconds = loop.time() - started
    await asyncio.gather(*pending)
    return traffic


# --- one run -------------------------------------------------------------------------------------------


def epoch(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone(UTC).timestamp()


async def wait_for_phase(admin: aiohttp.ClientSession, phase: str, within: float) -> str:
    """Poll ``/status`` (20 times a second: light next to the traffic) until the phase; the last one seen."""
    deadline = time.monotonic() + within
    seen = "?"
    while time.monotonic() < deadline:
        async with admin.get("/status") as r:
            seen = str((await r.json())["rollout"]["phase"])
        if seen == phase:
            break
        await asyncio.sleep(0.05)
    return seen


async def drive_rollout(proxy: Proxy, rate: float, token: str, seed: int) -> dict[str, Any]:
    """Idle traffic, then the operator's start, then traffic until the rollback (or the timeout)."""
    stop = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT)
    timeout = aiohttp.ClientTimeout(total=10)
    auth = {"authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession(proxy.data_url, connector=connector, timeout=timeout) as data,
        aiohttp.ClientSession(proxy.admin_url, headers=auth, timeout=timeout) as admin,
    ):
        traffic_task = asyncio.create_task(drive(data, rate, WARMUP_S + TRIP_TIMEOUT_S + TAIL_S, stop, seed))
        try:
            await asyncio.sleep(WARMUP_S)
            called = time.time()
            async with admin.post("/rollout/start", json={"reason": "bench_tripwire"}) as r:
                if r.status != 200:
                    raise RuntimeError(f"POST /rollout/start answered {r.status}: {await r.text()}")
            answered = time.time()
            phase = await wait_for_phase(admin, "rolled_back", TRIP_TIMEOUT_S)
            await asyncio.sleep(TAIL_S)
        finally:
            stop.set()
            traffic = await traffic_task
        async with admin.get("/decisions") as r:
            decisions: list[dict[str, Any]] = (await r.json())["decisions"]
    return {
        "phase_at_end": phase,
        "start_call_ms": round((answered - called) * 1000, 1),
        "decisions": decisions,
        "traffic": traffic,
    }


def failed_requests(access_log: Path) -> list[float]:
    """End times (epoch s) of the routed requests whose candidate attempt failed and the fallback answered:
    the access line's ``ts`` (the request's arrival) plus its latency, i.e. when the trip-wire saw it."""
    ends: list[float] = []
    with contextlib.suppress(OSError), access_log.open("rb") as f:
        for line in f:
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("log") == "access" and entry.get("fallback") and entry.get("route") == "infer":
                    ends.append(float(entry["ts"]) + float(entry["latency_ms"]) / 1000)
    return sorted(ends)


def candidate_metrics(admin_port: int) -> dict[str, Any]:
    """Failed attempts by kind (the candidate's, and the baseline's, which a saturated machine shows as
    timeouts) and fallbacks by reason, over the whole run; kinds that never happened left out."""
    samples = probes.rollguard_metrics(admin_port)
    if isinstance(samples, str):
        return {"error": samples}
    failed: dict[str, dict[str, int]] = {"candidate": {}, "baseline": {}}
    fallbacks: dict[str, int] = {}
    for name, labels, value in samples:
        if value <= 0:
            continue
        if name == "rollguard_upstream_errors_total" and labels.get("role") in failed:
            kinds, kind = failed[labels["role"]], labels.get("kind", "")
            kinds[kind] = kinds.get(kind, 0) + int(value)
        elif name == "rollguard_fallbacks_total":
            fallbacks[labels.get("reason", "")] = fallbacks.get(labels.get("reason", ""), 0) + int(value)
    return {
        "candidate_failed_attempts": failed["candidate"],
        "baseline_failed_attempts": failed["baseline"],
        "fallbacks": fallbacks,
    }


def quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def busy_cpu_s(before: dict[int, list[int]], after: dict[int, list[int]]) -> float:
    """CPU seconds the whole machine was busy between two ``/proc/stat`` reads (idle, iowait and steal
    left out), summed over its CPUs."""
    busy = 0
    for cpu, end in after.items():
        delta = [e - b for e, b in zip(end, before.get(cpu, end), strict=True)]
        busy += sum(delta) - delta[3] - delta[4] - delta[7]  # idle, iowait, steal
    return busy / os.sysconf("SC_CLK_TCK")


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


@dataclass(frozen=True)
class Setup:
    """What every run of the benchmark shares."""

    work: Path
    baseline: str
    weight: float
    token: str
    models: frozenset[int]  # the model servers' sessions: this benchmark's own CPU, not a neighbour's


def one_run(setup: Setup, name: str, candidate: str, rate: float, seed: int) -> dict[str, Any]:
    run_dir = setup.work / name
    run_dir.mkdir(parents=True)
    proxy = start_proxy(run_dir, config_doc(run_dir, setup.baseline, candidate, setup.weight))
    try:
        cpu_before, jiffies_before, self_before = machine.process_cpu(), machine.cpu_times(), os.times()
        t0 = time.monotonic()
        got = asyncio.run(drive_rollout(proxy, rate, setup.token, seed))
        wall = time.monotonic() - t0
        cpu_after, jiffies_after, self_after = machine.process_cpu(), machine.cpu_times(), os.times()
        counts = candidate_metrics(proxy.admin_port)
    finally:
        procs.stop(proxy.server)  # SIGTERM: the access log's last lines are flushed on the way out
    proxy_session = proxy.server.popen.pid  # started in a session of its own: its id is the leader's pid
    ours = sum(machine.session_cpu_s(cpu_before, cpu_after, sid) for sid in (proxy_session, *setup.models))
    ours += (self_after.user + self_after.system) - (self_before.user + self_before.system)
    # The machine's busy time less this benchmark's own processes: exact where summing other processes'
    # counters is not (a parent reaping a long-lived child adds all of the child's CPU at once).
    others = max(0.0, busy_cpu_s(jiffies_before, jiffies_after) - ours)
    traffic: Traffic = got["traffic"]
    decisions: list[dict[str, Any]] = got["decisions"]
    start = next((d for d in decisions if d.get("action") == "start"), None)
    trips = (d for d in decisions if d.get("actor") == "tripwire" and d.get("action") == "ROLLBACK")
    trip = next(trips, None)
    result: dict[str, Any] = {
        "run": name,
        "tripped": start is not None and trip is not None,
        "phase_at_end": got["phase_at_end"],
        "start_call_ms": got["start_call_ms"],
        "sent": traffic.sent,
        "achieved_rate": round(traffic.sent / traffic.seconds, 1) if traffic.seconds else None,
        "generator_max_lag_ms": ms(traffic.max_lag_s),
        "client_p50_ms": ms(quantile(traffic.latencies, 0.50)),
        "client_p99_ms": ms(quantile(traffic.latencies, 0.99)),
        # Near 100 %: the proxy's one process was saturated and queued, whatever rollguard's own latency.
        "proxy_cpu_pct": round(100 * machine.session_cpu_s(cpu_before, cpu_after, proxy_session) / wall),
        "answers": traffic.answers,
        "client_non_200": sum(n for k, n in traffic.answers.items() if not k.startswith("200 ")),
        **counts,
        "other_cores": round(others / wall, 2),
        "machine_busy_cores": round(busy_cpu_s(jiffies_before, jiffies_after) / wall, 2),
    }
    if start is None or trip is None:
        result["decisions"] = decisions
        return result
    started, tripped = epoch(start["ts"]), epoch(trip["ts"])
    ends = failed_requests(proxy.access_log)
    # A ts is truncated to the millisecond: the trip happened in [tripped, tripped + 1 ms). The failures'
    # ends are exact, so their distances to the trip are taken to its latest possible moment: upper bounds.
    trip_latest = tripped + 0.001
    before = [e for e in ends if e <= trip_latest]
    result.update(
        start_to_trip_ms=ms(tripped - started),
        # The wait for candidate traffic (and the start's own state write) before the first failure.
        start_to_first_failure_ms=ms(before[0] - started) if before else None,
        first_failure_to_trip_ms=ms(trip_latest - before[0]) if before else None,
        deciding_failure_to_trip_ms=ms(trip_latest - before[-1]) if before else None,
        failed_requests_before_trip=len(before),
        failed_requests_total=len(ends),
        consecutive_at_trip=trip.get("tripwire", {}).get("consecutive"),
        trip_reason=trip.get("reason"),
        window_at_trip=trip.get("window"),
    )
    return result


# --- the benchmark -------------------------------------------------------------------------------------


def summarise(variant: str, rate: float, runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if r.get("tripped")]

    def stat(key: str) -> dict[str, float | None]:
        values = [float(r[key]) for r in ok if r.get(key) is not None]
        if not values:
            return {"median": None, "max": None}
        return {"median": round(statistics.median(values), 1), "max": round(max(values), 1)}

    first = stat("first_failure_to_trip_ms")
    start = stat("start_to_trip_ms")
    attempts = [sum(r.get("candidate_failed_attempts", {}).values()) for r in ok]
    return {
        "variant": variant,
        "rate": rate,
        "runs": len(runs),
        "tripped": len(ok),
        "start_to_trip_ms": start,
        "first_failure_to_trip_ms": first,
        "start_to_first_failure_ms": stat("start_to_first_failure_ms"),
        "deciding_failure_to_trip_ms": stat("deciding_failure_to_trip_ms"),
        "consecutive_at_trip": stat("consecutive_at_trip"),
        "failed_requests_before_trip": stat("failed_requests_before_trip"),
        "candidate_failed_attempts": {
            "median": statistics.median(attempts) if attempts else None,
            "max": max(attempts) if attempts else None,
        },
        "client_non_200": sum(r.get("client_non_200", 0) for r in runs),
        "answers": add_up(r.get("answers", {}) for r in runs),
        "baseline_failed_attempts": add_up(r.get("baseline_failed_attempts", {}) for r in runs),
        "achieved_rate": stat("achieved_rate")["median"],
        "client_p50_ms": stat("client_p50_ms"),
        "client_p99_ms": stat("client_p99_ms"),
        "proxy_cpu_pct": stat("proxy_cpu_pct"),
        "generator_max_lag_ms": max((r.get("generator_max_lag_ms") or 0.0 for r in runs), default=0.0),
        "other_cores": stat_of([r["other_cores"] for r in runs if "other_cores" in r]),
        # The claim: within 1 s of the 5th failure; the 1st failure's distance bounds it from above.
        "within_target": bool(ok) and len(ok) == len(runs) and (first["max"] or 0) < TARGET_S * 1000,
        # The old test's form: the start decision to the rollback, waiting for the failures included.
        "start_within_target": bool(ok) and len(ok) == len(runs) and (start["max"] or 0) < TARGET_S * 1000,
    }


def add_up(counts: Iterable[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for c in counts:
        for k, n in c.items():
            total[k] = total.get(k, 0) + n
    return total


def stat_of(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "max": None}
    return {"median": round(statistics.median(values), 2), "max": round(max(values), 2)}


def run(
    work: Path, variants: Sequence[str], rates: Sequence[float], runs: int, weight: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    token = os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(24)
    os.environ[TOKEN_ENV] = token  # inherited by the proxies only: it never appears in a file or a command
    errors: list[str] = []
    summaries: list[dict[str, Any]] = []
    all_runs: list[dict[str, Any]] = []
    baseline_server, baseline = start_model("model-v1", work, "--version", "v1")
    failing_server, failing = start_model("model-v2-500", work, "--version", "v2", "--error-rate", "1")
    models = frozenset({baseline_server.popen.pid, failing_server.popen.pid})
    setup = Setup(work, baseline, weight, token, models)
    try:
        with refused_port() as refused:
            candidates = {"refused": refused, "http_500": failing}
            for variant in variants:
                for rate in rates:
                    rows: list[dict[str, Any]] = []
                    for i in range(runs):
                        name = f"{variant}-{rate:g}-{i + 1}"
                        try:
                            rows.append(one_run(setup, name, candidates[variant], rate, seed=i))
                        except Exception as exc:  # reported, not raised: the other runs still go
                            errors.append(f"{name}: {type(exc).__name__}: {exc}")
                            rows.append({"run": name, "tripped": False, "error": str(exc)})
                        last = rows[-1]
                        print(
                            f"  {name}: start->trip {last.get('start_to_trip_ms')} ms, "
                            f"1st fail->trip {last.get('first_failure_to_trip_ms')} ms",
                            file=sys.stderr,
                            flush=True,
                        )
                    summaries.append(summarise(variant, rate, rows))
                    all_runs.extend({"variant": variant, "rate": rate, **r} for r in rows)
    finally:
        procs.stop(baseline_server)
        procs.stop(failing_server)
    return summaries, all_runs, errors


def fmt(pair: dict[str, Any], digits: int = 0) -> str:
    if pair.get("median") is None:
        return "-"
    return f"{pair['median']:.{digits}f} / {pair['max']:.{digits}f}"


def print_table(summaries: list[dict[str, Any]], weight: float) -> None:
    header = (
        "candidate",
        "req/s",
        "runs",
        "start->trip ms",
        "1st fail->trip ms",
        "decide->trip ms",
        "fails",
        "cand req",
        "cand att",
        "non-200",
        "client p50",
        "proxy cpu%",
        "other cores",
        "1 s (fail)",
        "1 s (start)",
    )
    rows = []
    for s in summaries:
        rows.append(
            (
                s["variant"],
                f"{s['rate']:g} ({s['achieved_rate'] or 0:.0f})",
                f"{s['tripped']}/{s['runs']}",
                fmt(s["start_to_trip_ms"]),
                fmt(s["first_failure_to_trip_ms"]),
                fmt(s["deciding_failure_to_trip_ms"], 1),
                fmt(s["consecutive_at_trip"]),
                fmt(s["failed_requests_before_trip"]),
                fmt(s["candidate_failed_attempts"]),
                str(s["client_non_200"]),
                fmt(s["client_p50_ms"], 1),
                fmt(s["proxy_cpu_pct"]),
                fmt(s["other_cores"], 1),
                "yes" if s["within_target"] else "NO",
                "yes" if s["start_within_target"] else "no",
            )
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for line in [header, *rows]:
        cells = zip(line, widths, strict=True)
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(cells)))
    for s in summaries:
        # Say what a client got instead of a 200, and whether the baseline failed too (a saturated machine
        # times the baseline out): the fallback covers candidate failures only.
        if s["client_non_200"]:
            others = {k: n for k, n in s["answers"].items() if not k.startswith("200 ")}
            print(
                f"  {s['variant']} at {s['rate']:g}/s: non-200 answers {others}, "
                f"baseline failed attempts {s['baseline_failed_attempts']}"
            )
    print(
        f"\nmedian / max over the runs; first step {weight:g} %, consecutive_failures 5; req/s: asked (sent);"
        "\nclient p50 ms from each request's scheduled time. '1 s (fail)', the target: every run tripped and"
        "\nits 1st fail->trip (an upper bound of the 5th failure's) was under 1 s. '1 s (start)': the old"
        "\ntest's form, start->trip under 1 s, which also waits for the failures (~fails / (rate x weight))."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per configuration (default 5)")
    parser.add_argument(
        "--rates", default=",".join(str(r) for r in RATES), help="requests/s, comma-separated (50,300,1000)"
    )
    parser.add_argument("--variants", default=",".join(VARIANTS), help="refused,http_500")
    parser.add_argument("--weight", type=float, default=20.0, help="the first canary step, percent (20)")
    parser.add_argument("--quick", action="store_true", help=f"1 run at {QUICK_RATE}/s per variant")
    parser.add_argument(
        "--out", type=Path, help="result file (results/tripwire.json; --quick: results/tripwire-quick.json)"
    )
    parser.add_argument("--keep-tmp", action="store_true", help="keep the configs and process logs")
    args = parser.parse_args()
    rates = [QUICK_RATE] if args.quick else [float(r) for r in args.rates.split(",") if r.strip()]
    runs = 1 if args.quick else args.runs
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if unknown := set(variants) - set(VARIANTS):
        parser.error(f"unknown variants {sorted(unknown)}; one of {', '.join(VARIANTS)}")
    if not 0 < args.weight < 100 or runs < 1 or not rates or min(rates) <= 0:
        parser.error("need 0 < --weight < 100, --runs >= 1 and positive rates")

    work = Path(tempfile.mkdtemp(prefix="rollguard-bench-tripwire-"))
    began = datetime.now(UTC)
    info = machine.info(REPO)
    t0 = time.monotonic()
    summaries, all_runs, errors = run(work, variants, rates, runs, args.weight)
    print()
    print_table(summaries, args.weight)
    for error in errors:
        print(f"ERROR {error}")
    print(f"\n{time.monotonic() - t0:.0f} s; load average at start {info['loadavg_at_start']}")
    if args.keep_tmp:
        print(f"configs and logs in {work}")
    else:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    doc = {
        "format": 1,
        "started_at": began.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "machine": {**info, "loadavg_at_end": os.getloadavg()},
        "parameters": {
            "quick": args.quick,
            "runs": runs,
            "rates": rates,
            "variants": variants,
            "first_step_percent": args.weight,
            "consecutive_failures": 5,
            "warmup_s": WARMUP_S,
            "trip_timeout_s": TRIP_TIMEOUT_S,
            "tail_s": TAIL_S,
            "target_s": TARGET_S,
        },
        "summary": summaries,
        "runs": all_runs,
        "errors": errors,
    }
    # A smoke test must not replace the measured result the README quotes.
    out = args.out or BENCH / "results" / ("tripwire-quick.json" if args.quick else "tripwire.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
