"""Resilience through real sockets: safe retries, circuit breakers, full pools, no leaks, clean drains."""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import signal
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from proxy.dataplane.retry import RetryBudget
from proxy.demo.sample_model import ModelBehavior
from tests.helpers.config import config_doc, write_config
from tests.helpers.faulty_upstream import Fault, FaultyUpstream, refused_url
from tests.helpers.metrics import metric_samples, sample
from tests.helpers.models import Models
from tests.helpers.tokens import VIEWER_TOKEN
from tests.helpers.traffic import VALID_BODY, raw_http_server


async def flaky_server(fail_first: int) -> Any:
    """A raw upstream that resets its first ``fail_first`` connections, then answers 200."""
    seen = {"n": 0}

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        seen["n"] += 1
        if seen["n"] <= fail_first:
            writer.transport.abort()
            return
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
        )
        await writer.drain()

    return raw_http_server(handler), seen


async def test_idempotent_requests_are_retried_after_a_reset(proxy_factory: Any, models: Models) -> None:
    # aiohttp itself resends an idempotent request once when a connection drops (RFC 9112 §9.3.1), so
    # two resets are needed before rollguard's own retry, with its backoff and budget, takes over.
    server, seen = await flaky_server(fail_first=2)
    async with server as url:
        proxy = await proxy_factory(
            upstreams={
                "baseline": {"url": url, "version": "v1", "retries": {"attempts": 2, "backoff_base": "1ms"}},
                "candidate": {"url": models.candidate.url, "version": "v2"},
            }
        )
        async with httpx.AsyncClient(base_url=proxy.data_url) as c:
            r = await c.get("/anything")
        assert r.status_code == 200 and r.text == "ok"
        assert seen["n"] == 3
        samples = await metric_samples(proxy.admin_url)
        assert sample(samples, "rollguard_retries_total", role="baseline", reason="reset") == 1
        assert sample(samples, "rollguard_upstream_errors_total", role="baseline", kind="reset") == 1


async def test_non_idempotent_requests_are_not_retried_unless_keyed(
    proxy_factory: Any, models: Models, tmp_path: Path
) -> None:
    server, seen = await flaky_server(fail_first=1)
    async with server as url:
        route = {
            **config_doc(tmp_path, "", "")["routes"][0],
            "path": "/pay",
            "request_schema": None,
            "retry_idempotency_key": True,
        }
        route = {k: v for k, v in route.items() if v is not None and k not in ("response_schema", "score")}
        proxy = await proxy_factory(
            routes=[route],
            upstreams={
                "baseline": {"url": url, "version": "v1", "retries": {"attempts": 2, "backoff_base": "1ms"}},
                "candidate": {"url": models.candidate.url, "version": "v2"},
            },
        )
        async with httpx.AsyncClient(base_url=proxy.data_url) as c:
            refused = await c.post("/pay", content=b"{}")
            assert refused.status_code == 502  # a reset POST may have had effects: never replayed
            seen["n"] = 0
            keyed = await c.post("/pay", content=b"{}", headers={"idempotency-key": "order-1"})
        assert keyed.status_code == 200 and seen["n"] == 2


async def test_circuit_opens_fails_fast_and_recovers(proxy_factory: Any, models: Models) -> None:
    async with FaultyUpstream(Fault.STATUS_500) as faulty:
        proxy = await proxy_factory(
            upstreams={
                "baseline": {
                    "url": faulty.url,
                    "version": "v1",
                    "retries": {"attempts": 0},
                    "breaker": {"failures": 3, "open_for": "400ms"},
                },
                "candidate": {"url": models.candidate.url, "version": "v2"},
            }
        )
        async with httpx.AsyncClient(base_url=proxy.data_url) as c:
            codes = [(await c.post("/v1/infer", json=VALID_BODY)).status_code for _ in range(3)]
            assert codes == [500, 500, 500]
            seen = faulty.requests_seen
            fast = await c.post("/v1/infer", json=VALID_BODY)
            assert fast.status_code == 503 and int(fast.headers["retry-after"]) >= 1
            assert fast.headers["content-type"] == "application/problem+json"
            assert faulty.requests_seen == seen  # refused without touching the upstream
            async with proxy.admin_client() as admin:
                status = (await admin.get("/status")).json()
            assert status["upstreams"]["baseline"]["circuit"]["state"] == "open"
            samples = await metric_samples(proxy.admin_url)
            circuit = {
                state: sample(samples, "rollguard_upstream_circuit_state", role="baseline", state=state)
                for state in ("closed", "half_open", "open")
            }
            assert circuit == {"closed": 0, "half_open": 0, "open": 1}, circuit
            faulty.fault = Fault.OK
            await asyncio.sleep(0.45)  # open_for elapses: the next call is the half-open probe
            probe = await c.post("/v1/infer", json=VALID_BODY)
            assert probe.status_code == 200
            after = await c.post("/v1/infer", json=VALID_BODY)
            assert after.status_code == 200
        samples = await metric_samples(proxy.admin_url)
        assert sample(samples, "rollguard_upstream_errors_total", role="baseline", kind="circuit_open") == 1


async def test_an_open_candidate_circuit_falls_back(proxy_factory: Any, models: Models) -> None:
    async with FaultyUpstream(Fault.STATUS_500) as faulty:
        proxy = await proxy_factory(
            upstreams={
                "baseline": {"url": models.baseline.url, "version": "v1"},
                "candidate": {
                    "url": faulty.url,
                    "version": "v2",
                    "breaker": {"failures": 2, "open_for": "30s"},
                },
            }
        )
        async with proxy.admin_client() as admin:
            await admin.put("/weights", json={"canary": 100})
        async with httpx.AsyncClient(base_url=proxy.data_url) as c:
            answers = [await c.post("/v1/infer", json=VALID_BODY) for _ in range(6)]
        assert all(a.status_code == 200 and a.headers["x-rollguard-version"] == "v1" for a in answers)
        assert faulty.requests_seen == 2  # then the open circuit keeps traffic off the candidate
        samples = await metric_samples(proxy.admin_url)
        assert sample(samples, "rollguard_fallbacks_total", reason="circuit_open") == 4
        assert sample(samples, "rollguard_upstream_errors_total", role="candidate", kind="circuit_open") == 4


async def test_a_full_pool_answers_503_at_once(proxy_factory: Any, models: Models) -> None:
    async with FaultyUpstream(Fault.HANG_BEFORE_HEADERS) as faulty:
        proxy = await proxy_factory(
            upstreams={
                "baseline": {"url": faulty.url, "version": "v1", "max_connections": 2, "timeout": "5s"},
                "candidate": {"url": models.candidate.url, "version": "v2"},
            }
        )
        async with aiohttp.ClientSession(proxy.data_url) as s:
            hung = [asyncio.create_task(s.get("/slow")) for _ in range(2)]
            async with asyncio.timeout(5):
                await faulty.wait_for_requests(2)
            async with s.get("/third") as r:
                assert r.status == 503
                assert r.headers["content-type"] == "application/problem+json"
                assert "busy" in (await r.json())["detail"]
            for t in hung:
                t.cancel()
            await asyncio.gather(*hung, return_exceptions=True)
        samples = await metric_samples(proxy.admin_url)
        assert sample(samples, "rollguard_upstream_errors_total", role="baseline", kind="pool_full") == 1


def test_retry_budget_bounds_retries_by_active_requests() -> None:
    budget = RetryBudget()
    budget.active = 100
    granted = sum(budget.acquire(0.2) for _ in range(50))
    assert granted == 20  # 20% of 100 active requests
    budget.release()
    assert budget.acquire(0.2)
    quiet = RetryBudget()
    quiet.active = 1
    assert sum(quiet.acquire(0.2) for _ in range(10)) == RetryBudget.MIN_CONCURRENT


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def _fds_settle(pid: int, at_most: int, within: float = 10.0) -> int:
    """The process's fd count once it is at most ``at_most`` (or, past the guard, whatever it is)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        n = _fds(pid)
        if n <= at_most or asyncio.get_running_loop().time() > deadline:
            return n
        await asyncio.sleep(0.05)


@pytest.mark.parametrize(
    "fault",
    [
        None,  # connection refused
        Fault.RESET_BEFORE_HEADERS,
        Fault.RESET_MID_BODY,
        Fault.HANG_BEFORE_HEADERS,
        Fault.HANG_MID_BODY,
        Fault.GARBAGE,
        Fault.DUPLICATE_CONTENT_LENGTH,
        Fault.STATUS_500,
    ],
)
async def test_a_thousand_faults_leak_no_sockets(
    tmp_path: Path, models: Models, proxy_process: Any, fault: Fault | None
) -> None:
    async with FaultyUpstream(fault or Fault.OK) as faulty:
        url = faulty.url if fault is not None else refused_url()
        doc = config_doc(
            tmp_path,
            url,
            models.candidate.url,
            logging={"access_log": "off"},
            upstreams={
                "baseline": {
                    "url": url,
                    "version": "v1",
                    "timeout": "100ms",
                    "retries": {"attempts": 0},
                    "breaker": {"failures": 1_000_000, "failure_rate": 1.0, "min_volume": 1_000_000},
                },
                "candidate": {"url": models.candidate.url, "version": "v2"},
            },
        )
        proc = await asyncio.to_thread(proxy_process, write_config(tmp_path, doc))
        assert proc.proc is not None
        pid = proc.proc.pid

        async def burst(n: int) -> list[int]:
            sem = asyncio.Semaphore(20)
            async with aiohttp.ClientSession(proc.data_url) as s:

                async def one() -> int:
                    async with sem:
                        try:
                            async with s.get("/x") as r:
                                await r.read()
                                return r.status
                        except aiohttp.ClientError:
                            return -1  # a body cut short after the head: the client sees the cut

                return await asyncio.gather(*(one() for _ in range(n)))

        await burst(100)
        fds = _fds(pid)  # memory growth: measured in benchmarks/bench_memory.py, not asserted here
        statuses = await burst(1000)
        assert set(statuses) <= {502, 504, 500, -1, 200}, set(statuses)
        # The last sockets close a moment after their answers: wait for the count to settle back.
        assert await _fds_settle(pid, fds + 5) <= fds + 5, (fds, _fds(pid))


async def test_sigterm_drains_accepted_requests(tmp_path: Path, models: Models, proxy_process: Any) -> None:
    models.baseline.model.set_behavior(ModelBehavior(version="v1", latency_ms=1500))
    doc = config_doc(tmp_path, models.baseline.url, models.candidate.url, logging={"access_log": "off"})
    proc = await asyncio.to_thread(proxy_process, write_config(tmp_path, doc))
    assert proc.proc is not None
    async with aiohttp.ClientSession(proc.data_url) as s:

        async def one() -> int:
            async with s.post("/v1/infer", json=VALID_BODY) as r:
                await r.read()
                return r.status

        inflight = [asyncio.create_task(one()) for _ in range(30)]
        # SIGTERM only once all 30 are accepted and waiting on the (1.5 s) model: the proxy's own count.
        viewer = {"authorization": f"Bearer {VIEWER_TOKEN}"}
        async with httpx.AsyncClient(base_url=proc.admin_url, headers=viewer) as admin:
            while (await admin.get("/status")).json()["upstreams"]["baseline"]["in_flight"] < 30:
                assert not any(t.done() for t in inflight), "a request ended before the signal"
                await asyncio.sleep(0.01)
        proc.signal(signal.SIGTERM)
        statuses = await asyncio.gather(*inflight)
    assert statuses == [200] * 30
    assert await asyncio.to_thread(proc.wait, 20) == 0
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as c:
            await c.get(proc.data_url + "/x", timeout=2)


async def test_requests_in_flight_build_and_process_are_exported(proxy_factory: Any) -> None:
    async with FaultyUpstream(Fault.HANG_BEFORE_HEADERS) as hung:
        proxy = await proxy_factory(
            upstreams={
                "baseline": {"url": hung.url, "version": "v1", "timeout": "30s"},
                "candidate": {"url": hung.url, "version": "v2"},
            }
        )
        async with httpx.AsyncClient(base_url=proxy.data_url, timeout=30) as c:
            waiting = [asyncio.create_task(c.post("/v1/infer", json=VALID_BODY)) for _ in range(3)]
            async with asyncio.timeout(10):  # a failure guard: three requests reach the hung model
                await hung.wait_for_requests(3)
            samples = await metric_samples(proxy.admin_url)
            for task in waiting:
                task.cancel()
            await asyncio.gather(*waiting, return_exceptions=True)
    assert sample(samples, "rollguard_upstream_in_flight", role="baseline", version="v1") == 3
    assert sample(samples, "rollguard_upstream_in_flight", role="candidate", version="v2") == 0
    closed = sample(samples, "rollguard_upstream_circuit_state", role="baseline", state="closed")
    assert closed == 1
    assert sample(samples, "rollguard_build_info", version=importlib.metadata.version("rollguard")) == 1
    assert sample(samples, "process_resident_memory_bytes") > 0
    assert sample(samples, "process_open_fds") > 0
