"""Memory budgets of a real proxy process: what a large body, a stream of failures and a hung shadow cost.

    .venv/bin/python benchmarks/bench_memory.py [--quick] [--out FILE]

Starts ``python -m proxy serve --config FILE`` in its own process, as a user does, with the sample model
(``python -m proxy.demo.sample_model``) as its upstreams, and reads the proxy's resident memory from
``/proc/<pid>/status`` around each scenario. The scenarios and their budgets are the ones the test suite
used to assert:

- ``50MB response`` (once asserted in ``tests/dataplane/test_forward.py``): one
  50,000,000-byte ``GET /bytes`` streamed back through the proxy; growth of the peak RSS (``VmHWM``),
  budget 16 MiB. Holding the body would add ~48 MiB; streaming holds a few chunks.
- ``50MB request body``: the same amount the other way, a chunked ``POST /echo`` of 50,000,000 bytes
  (``limits.max_body_bytes: 64MiB``), so the request body path is held to the same 16 MiB budget.
- ``faults <kind>`` (once asserted in ``tests/dataplane/test_resilience.py``): a baseline
  that fails in one way, 100 requests of warm-up then 1,000 at concurrency 20; growth of ``VmRSS``
  (and the open file descriptors), budget 12 MiB per kind.
- ``hung shadow`` (once asserted in ``tests/shadow/test_mirror.py``): every
  request mirrored (``shadow.sample: 1``, ``timeout: 30s``, ``max_in_flight: 64``) to
  ``anchors/hung_upstream.py``, which reads and never answers; 1,000 requests of warm-up, then 4,000;
  growth of ``VmRSS``, budget 8 MiB.

Why not a test: RSS depends on the allocator, the Python build, the kernel and whatever else runs on
the machine, so a budget asserted in the suite fails for reasons that are not bugs and, once loosened
to stop that, no longer catches the ones that are. Here the numbers are printed and written with the
machine they were measured on; a row over budget is reported, and the exit code is always 0.
``--quick`` runs smaller counts and three fault kinds (well under a minute): a smoke test, not a result.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import random
import re
import socket
import struct
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import yaml

REPO = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

import procs  # benchmarks/procs.py: start, stop and probe the processes a benchmark needs
from proxy_config import proxy_config_doc

from proxy.demo.sample_model import features_generator

HOST = procs.HOST
_BIG = 50_000_000  # the tests' 50 MB, in bytes (not MiB), so "holding it" would be ~48 MiB
_FAULTS = (
    "refused",
    "reset_before_headers",
    "reset_mid_body",
    "hang_before_headers",
    "hang_mid_body",
    "garbage",
    "duplicate_content_length",
    "status_500",
)
_QUICK_FAULTS = ("refused", "hang_before_headers", "status_500")


# --- /proc -------------------------------------------------------------------------------------------


def _status_kib(pid: int, key: str) -> int:
    """One ``/proc/<pid>/status`` field in KiB: ``VmRSS`` (now) or ``VmHWM`` (the peak since start)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {key} for pid {pid}")


def rss_kib(pid: int) -> int:
    return _status_kib(pid, "VmRSS")


def peak_rss_kib(pid: int) -> int:
    return _status_kib(pid, "VmHWM")


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


# --- processes -----------------------------------------------------------------------------------------


@dataclass
class Proxy:
    server: procs.Server
    data_url: str

    @property
    def pid(self) -> int:
        return self.server.popen.pid


def start_model(version: str, log_dir: Path) -> tuple[procs.Server, str]:
    """The sample model in its own process (as the benchmark harness runs upstreams), ready to answer."""
    return procs.start_sample_model(f"model-{version}", log_dir, "--version", version)


def config_doc(work: Path, baseline: str, candidate: str, **overrides: Any) -> dict[str, Any]:
    return proxy_config_doc(work / "state", baseline, candidate, **overrides)


def start_proxy(work: Path, name: str, doc: dict[str, Any]) -> Proxy:
    """``python -m proxy serve --config FILE``, ready once it prints its listening line on stderr."""
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    cmd = [sys.executable, "-m", "proxy", "serve", "--config", str(path)]
    started = procs.start_rollguard(f"proxy-{name}", cmd, work)
    return Proxy(started.server, started.data_url)


@contextlib.contextmanager
def running(proxy: Proxy) -> Iterator[Proxy]:
    try:
        yield proxy
    finally:
        procs.stop(proxy.server)


# --- a failing upstream (faulty_upstream.py of tests/helpers, rebuilt: benchmarks import no tests) ---


def _reset(writer: asyncio.StreamWriter) -> None:
    # SO_LINGER 0 makes close() send RST instead of FIN: the proxy sees ECONNRESET.
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _read_body(reader: asyncio.StreamReader, head: bytes) -> None:
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                return
            await reader.readexactly(size + 2)
    m = re.search(rb"content-length:\s*(\d+)", lower)
    if m and int(m.group(1)):
        await reader.readexactly(int(m.group(1)))


async def _until_eof(reader: asyncio.StreamReader) -> None:
    while await reader.read(65536):
        pass


def fault_handler(fault: str) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]:
    """One connection's handler for ``fault``; as in the tests, the fault applies to every request."""
    ok_body = b'{"error":"injected 500"}'

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                if fault == "reset_before_headers":
                    _reset(writer)
                    return
                await _read_body(reader, head)
                if fault == "status_500":
                    writer.write(
                        b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (len(ok_body), ok_body)
                    )
                    await writer.drain()
                    continue
                if fault in ("reset_mid_body", "hang_mid_body"):
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b" " * 1000)
                    await writer.drain()
                    if fault == "reset_mid_body":
                        _reset(writer)
                    else:
                        await _until_eof(reader)
                    return
                if fault == "hang_before_headers":
                    await _until_eof(reader)
                    return
                if fault == "garbage":
                    writer.write(b"\x16\x03\x01\x02\x00SSH-2.0-not-http \xff\xfe\x00\r\n\r\n")
                elif fault == "duplicate_content_length":
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 2\r\nContent-Length: 9\r\n\r\n{}"
                    )
                await writer.drain()
                return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.transport.abort()

    return handle


@contextlib.asynccontextmanager
async def faulty_upstream(fault: str) -> AsyncIterator[str]:
    """A URL whose server fails as ``fault`` says; for ``refused`` a port where nothing listens."""
    if fault == "refused":
        (port,) = procs.free_ports(1)
        yield f"http://{HOST}:{port}"
        return
    server = await asyncio.start_server(fault_handler(fault), HOST, 0)
    try:
        yield f"http://{HOST}:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 5)


# --- the scenarios ---------------------------------------------------------------------------------------


def row(
    scenario: str, measure: str, before_kib: int, after_kib: int, budget_mib: float, **detail: Any
) -> dict[str, Any]:
    growth = (after_kib - before_kib) / 1024
    return {
        "scenario": scenario,
        "measure": measure,
        "rss_before_mib": round(before_kib / 1024, 2),
        "rss_after_mib": round(after_kib / 1024, 2),
        "growth_mib": round(growth, 2),
        "budget_mib": budget_mib,
        "within_budget": growth < budget_mib,
        **detail,
    }


async def big_response(proxy: Proxy) -> dict[str, Any]:
    """warm up with 1 MB, then stream 50 MB back; peak RSS before and after."""
    async with httpx.AsyncClient(base_url=proxy.data_url, timeout=60) as c:
        warm = await c.get("/bytes", params={"n": 1_000_000, "chunk": 65536})
        before = peak_rss_kib(proxy.pid)
        received = 0
        started = time.perf_counter()
        async with c.stream("GET", "/bytes", params={"n": _BIG, "chunk": 65536}) as r:
            async for chunk in r.aiter_raw():
                received += len(chunk)
        seconds = time.perf_counter() - started
    return row(
        "50MB response",
        "VmHWM",
        before,
        peak_rss_kib(proxy.pid),
        16,
        ok=warm.status_code == 200 and r.status_code == 200 and received == _BIG,
        bytes=received,
        seconds=round(seconds, 2),
        rss_now_mib=round(rss_kib(proxy.pid) / 1024, 2),
    )


async def big_request(proxy: Proxy) -> dict[str, Any]:
    """The request direction: a chunked 50 MB POST to /echo, which answers its length and sha256."""
    block = bytes(range(256)) * 256  # 64 KiB

    async def chunks(total: int) -> AsyncIterator[bytes]:
        sent = 0
        while sent < total:
            part = block[: min(len(block), total - sent)]
            sent += len(part)
            yield part

    digest = hashlib.sha256()
    for i in range(0, _BIG, len(block)):
        digest.update(block[: min(len(block), _BIG - i)])
    async with httpx.AsyncClient(base_url=proxy.data_url, timeout=60) as c:
        warm = await c.post("/echo", content=chunks(1_000_000))
        before = peak_rss_kib(proxy.pid)
        started = time.perf_counter()
        r = await c.post("/echo", content=chunks(_BIG))
        seconds = time.perf_counter() - started
    doc = r.json() if r.status_code == 200 else {}
    return row(
        "50MB request body",
        "VmHWM",
        before,
        peak_rss_kib(proxy.pid),
        16,
        ok=warm.status_code == 200
        and doc.get("body_length") == _BIG
        and doc.get("body_sha256") == digest.hexdigest(),
        status=r.status_code,
        seconds=round(seconds, 2),
        rss_now_mib=round(rss_kib(proxy.pid) / 1024, 2),
    )


async def burst(data_url: str, n: int) -> dict[str, int]:
    """The fault burst: ``n`` GET /x at concurrency 20; answers counted by status."""
    sem = asyncio.Semaphore(20)
    counts: dict[str, int] = {}
    async with aiohttp.ClientSession(data_url) as s:

        async def one() -> None:
            async with sem:
                try:
                    async with s.get("/x") as r:
                        await r.read()
                        key = str(r.status)
                except aiohttp.ClientError:
                    key = "cut"  # a body cut short after the head: the client sees the cut
                counts[key] = counts.get(key, 0) + 1

        await asyncio.gather(*(one() for _ in range(n)))
    return counts


async def faults(work: Path, candidate: str, fault: str, warm: int, n: int) -> dict[str, Any]:
    async with faulty_upstream(fault) as url:
        doc = config_doc(
            work,
            url,
            candidate,
            upstreams={
                "baseline": {
                    "url": url,
                    "version": "v1",
                    "timeout": "100ms",
                    "retries": {"attempts": 0},
                    # Never open: every request must reach the fault, or there is nothing to leak.
                    "breaker": {"failures": 1_000_000, "failure_rate": 1.0, "min_volume": 1_000_000},
                },
                "candidate": {"url": candidate, "version": "v2"},
            },
        )
        # Started in a thread: the fault server runs on this loop and must answer while the proxy starts.
        proxy = await asyncio.to_thread(start_proxy, work, f"faults-{fault}", doc)
        with running(proxy):
            await burst(proxy.data_url, warm)
            fds, before = open_fds(proxy.pid), rss_kib(proxy.pid)
            started = time.perf_counter()
            counts = await burst(proxy.data_url, n)
            seconds = time.perf_counter() - started
            await asyncio.sleep(0.3)  # let the last sockets close
            return row(
                f"faults {fault} ({n} req)",
                "VmRSS",
                before,
                rss_kib(proxy.pid),
                12,
                ok=set(counts) <= {"502", "504", "500", "cut", "200"},
                statuses=counts,
                seconds=round(seconds, 2),
                fds_before=fds,
                fds_after=open_fds(proxy.pid),
            )


async def load(data_url: str, bodies: list[dict[str, Any]], concurrency: int) -> dict[str, int]:
    """The shadow load: POST every body to /v1/infer with its sticky user id."""
    sem = asyncio.Semaphore(concurrency)
    counts: dict[str, int] = {}
    async with aiohttp.ClientSession(data_url) as session:

        async def one(body: dict[str, Any]) -> None:
            async with sem:
                hdrs = {"x-user-id": str(body.get("user_id", 0))}
                try:
                    async with session.post("/v1/infer", json=body, headers=hdrs) as r:
                        await r.read()
                        key = str(r.status)
                except aiohttp.ClientError as exc:
                    key = type(exc).__name__
                counts[key] = counts.get(key, 0) + 1

        await asyncio.gather(*(one(b) for b in bodies))
    return counts


def bodies(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [features_generator(rng) for _ in range(n)]


async def hung_shadow(proxy: Proxy, warm: int, per_round: int) -> dict[str, Any]:
    """Warm-up, then 4 rounds (seeds 2..5) at concurrency 32, as the test did; RSS after the warm-up
    and after the last round."""
    warm_counts = await load(proxy.data_url, bodies(warm, seed=1), concurrency=32)
    before = rss_kib(proxy.pid)
    counts: dict[str, int] = {}
    started = time.perf_counter()
    for seed in range(2, 6):
        for key, value in (await load(proxy.data_url, bodies(per_round, seed), concurrency=32)).items():
            counts[key] = counts.get(key, 0) + value
    seconds = time.perf_counter() - started
    return row(
        f"hung shadow ({4 * per_round} req)",
        "VmRSS",
        before,
        rss_kib(proxy.pid),
        8,
        ok=set(counts) == {"200"} and set(warm_counts) == {"200"},
        statuses=counts,
        seconds=round(seconds, 2),
    )


# --- the run ---------------------------------------------------------------------------------------------


def run(work: Path, quick: bool) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    fault_kinds = _QUICK_FAULTS if quick else _FAULTS
    fault_n, fault_warm = (300, 100) if quick else (1000, 100)
    shadow_warm, shadow_round = (300, 250) if quick else (1000, 1000)
    models = [start_model("v1", work), start_model("v2", work)]
    (_, baseline), (_, candidate) = models

    def attempt(name: str, fn: Callable[[], dict[str, Any]]) -> None:
        # One failed scenario is a row saying so; the others still run and the exit code stays 0.
        try:
            results.append(fn())
        except Exception as exc:  # reported, not raised: a benchmark reports what it saw
            results.append({"scenario": name, "error": f"{type(exc).__name__}: {exc}"})
        print(f"  done: {name}", file=sys.stderr, flush=True)

    def with_proxy(name: str, doc: dict[str, Any], fn: Callable[[Proxy], Any]) -> Callable[[], Any]:
        def go() -> dict[str, Any]:
            with running(start_proxy(work, name, doc)) as proxy:
                result: dict[str, Any] = asyncio.run(fn(proxy))
                return result

        return go

    try:
        attempt("50MB response", with_proxy("response", config_doc(work, baseline, candidate), big_response))
        request_doc = config_doc(work, baseline, candidate, limits={"max_body_bytes": "64MiB"})
        attempt("50MB request body", with_proxy("request", request_doc, big_request))
        for fault in fault_kinds:
            attempt(
                f"faults {fault}",
                lambda f=fault: asyncio.run(faults(work, candidate, f, fault_warm, fault_n)),
            )
        attempt("hung shadow", lambda: shadow_run(work, baseline, shadow_warm, shadow_round))
    finally:
        for server, _ in models:
            procs.stop(server)
    return results


def shadow_run(work: Path, baseline: str, warm: int, per_round: int) -> dict[str, Any]:
    (port,) = procs.free_ports(1)
    hung = procs.start(
        "hung_upstream",
        [sys.executable, str(BENCH / "anchors" / "hung_upstream.py"), "--port", str(port)],
        work,
        cwd=REPO,
    )
    try:
        procs.wait_until(lambda: procs.accepts(port), [hung], 20, "the hung upstream accepts")
        shadow = {"sample": 1.0, "timeout": "30s", "noise_sample": 0.0, "max_in_flight": 64}
        doc = config_doc(work, baseline, f"http://{HOST}:{port}", shadow=shadow)
        with running(start_proxy(work, "hung-shadow", doc)) as proxy:
            result = asyncio.run(hung_shadow(proxy, warm, per_round))
    finally:
        procs.stop(hung)
    # Its counters, printed on SIGTERM: most connections open at once must stay <= max_in_flight (64).
    with contextlib.suppress(ValueError, OSError):
        import json

        stats = json.loads(hung.stdout_path.read_text().strip().splitlines()[-1])
        result["hung_upstream"] = stats
        result["ok"] = result["ok"] and stats["max_open"] <= 64
    return result


def print_table(results: list[dict[str, Any]]) -> None:
    header = (
        "scenario",
        "measure",
        "before MiB",
        "after/peak MiB",
        "growth MiB",
        "budget MiB",
        "within",
        "ok",
    )
    rows = []
    for r in results:
        if "error" in r:
            rows.append((r["scenario"], "-", "-", "-", "-", "-", "ERROR", r["error"][:60]))
            continue
        rows.append(
            (
                r["scenario"],
                r["measure"],
                f"{r['rss_before_mib']:.1f}",
                f"{r['rss_after_mib']:.1f}",
                f"{r['growth_mib']:.2f}",
                f"{r['budget_mib']:g}",
                "yes" if r["within_budget"] else "NO",
                "yes" if r["ok"] else "NO",
            )
        )
    widths = [max(len(str(x[i])) for x in [header, *rows]) for i in range(len(header))]
    for line in [header, *rows]:
        print(
            "  ".join(
                str(c).ljust(w) if i == 0 else str(c).rjust(w)
                for i, (c, w) in enumerate(zip(line, widths, strict=True))
            )
        )
    for r in results:
        extra = {
            k: r[k] for k in ("statuses", "fds_before", "fds_after", "hung_upstream", "seconds") if k in r
        }
        if extra:
            print(f"  {r['scenario']}: {extra}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    parser.add_argument("--quick", action="store_true", help="smaller counts, three fault kinds")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the configs and process logs")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rollguard-bench-memory-"))
    started = time.monotonic()
    results = run(work, args.quick)
    print()
    print_table(results)
    print(f"\n{time.monotonic() - started:.0f} s; 'ok' means every answer was one the scenario allows")
    if args.keep_tmp:
        print(f"configs and logs in {work}")
    else:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    if args.out is not None:
        import machine  # benchmarks/machine.py: what the numbers were measured on

        machine.write_result(args.out, REPO, [{"quick": args.quick, **r} for r in results])
    return 0


if __name__ == "__main__":
    sys.exit(main())
