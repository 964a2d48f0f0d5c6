"""Live config reload: SIGHUP to ``rollguard serve`` and ``POST /config/reload``, dropping nothing."""

from __future__ import annotations

import asyncio
import copy
import http.client
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from proxy.config.diff import changed_sections, effective, restart_keys
from proxy.config.load import load_config
from proxy.demo.sample_model import ModelBehavior, start_sample_model
from tests.helpers.config import config_doc, write_config
from tests.helpers.faulty_upstream import OK_BODY, Fault, FaultyUpstream
from tests.helpers.metrics import metric_samples, sample
from tests.helpers.models import Models
from tests.helpers.paths import SCHEMAS
from tests.helpers.proxy_runner import ProxyProcess, RunningProxy, start_proxy, wait_for_log
from tests.helpers.traffic import VALID_BODY

STRICT_ECHO = {
    "name": "strict-echo",
    "path": "/echo",
    "methods": ["POST"],
    "request_schema": str(SCHEMAS / "infer_request.json"),
    "mode": "enforce",
}


@dataclass
class Live:
    """A proxy running in this event loop from a config file the test rewrites."""

    path: Path
    doc: dict[str, Any]
    proxy: RunningProxy

    def rewrite(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        write_config(self.path.parent, doc, self.path.name)

    async def reload(self, expect: int = 200) -> dict[str, Any]:
        async with self.proxy.admin_client() as admin:
            r = await admin.post("/config/reload")
        assert r.status_code == expect, r.text
        doc: dict[str, Any] = r.json()
        return doc

    async def status(self) -> dict[str, Any]:
        async with self.proxy.admin_client() as admin:
            doc: dict[str, Any] = (await admin.get("/status")).json()
        return doc


@pytest.fixture
async def live(tmp_path: Path, models: Models) -> AsyncIterator[Any]:
    stops: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    async def start(**overrides: Any) -> Live:
        doc = config_doc(tmp_path, models.baseline.url, models.candidate.url, **overrides)
        path = write_config(tmp_path, doc)
        proxy, stop, task = await start_proxy(load_config(path))
        stops.append((stop, task))
        return Live(path=path, doc=doc, proxy=proxy)

    yield start
    for stop, task in stops:
        stop.set()
        await asyncio.wait_for(task, 20)


def keep_alive(url: str) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    conn.connect()
    return conn


def post(conn: http.client.HTTPConnection, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    conn.request("POST", path, body=orjson.dumps(body), headers={"content-type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    assert not resp.will_close  # the connection stays open for the next request
    return resp.status, orjson.loads(data)


async def test_added_route_and_moved_baseline_apply_to_new_requests(live: Any) -> None:
    rl: Live = await live(logging={"access_log": "off"})
    second = await start_sample_model(ModelBehavior(version="v1-second"))
    try:
        async with httpx.AsyncClient(base_url=rl.proxy.data_url, timeout=10) as c:
            before = await c.post("/echo", json={"not": "a valid infer body"})
            assert before.status_code == 200  # unmatched: straight to the baseline
            assert (await c.post("/v1/infer", json=VALID_BODY)).json()["model_version"] == "v1"

            doc = copy.deepcopy(rl.doc)
            doc["routes"].append(STRICT_ECHO)
            doc["upstreams"]["baseline"]["url"] = second.url
            rl.rewrite(doc)
            outcome = await rl.reload()
            assert outcome["outcome"] == "ok" and outcome["actor"] == "ops"
            assert outcome["changed"] == ["upstreams.baseline", "routes"]
            assert outcome["restart_required"] == []

            # The new route's contract is in force, and its traffic is its own in the metrics...
            refused = await c.post("/echo", json={"not": "a valid infer body"})
            assert refused.status_code == 400
            assert refused.headers["content-type"] == "application/problem+json"
            assert (await c.post("/echo", json=VALID_BODY)).status_code == 200
            # ...and the baseline is the second model server now.
            assert (await c.post("/v1/infer", json=VALID_BODY)).json()["model_version"] == "v1-second"
        samples = await metric_samples(rl.proxy.admin_url)
        assert sample(samples, "rollguard_requests_total", route="strict-echo") == 1
        assert sample(samples, "rollguard_config_reloads_total", outcome="ok") == 1
        status = await rl.status()
        assert status["routes"] == ["infer", "strict-echo"]
        # The staging report follows: the new route has its own latency figures and contract samples.
        async with rl.proxy.admin_client() as admin:
            staging = (await admin.get("/reports/staging_report.json")).json()
        echo = staging["routes"]["strict-echo"]
        assert echo["contract"] == {
            "request_schema": True,
            "response_schema": False,
            "mode": "enforce",
            "checked": 2,
            "valid": 1,
            "invalid": 1,
        }
        assert echo["versions"]["baseline"]["upstream"]["attempts"] == 1
        assert status["upstreams"]["baseline"]["url"] == second.url
        assert status["config"]["generation"] == 2
    finally:
        await second.close()


async def test_in_flight_and_kept_alive_requests_survive_a_reload_then_old_pools_close(
    live: Any, models: Models, caplog: pytest.LogCaptureFixture
) -> None:
    async with FaultyUpstream(Fault.SLOW_DRIP, drip_interval=0.01) as slow:
        rl: Live = await live(
            logging={"access_log": "off"},
            upstreams={
                "baseline": {"url": slow.url, "version": "v1", "timeout": "5s"},
                "candidate": {"url": models.candidate.url, "version": "v2", "timeout": "2s"},
            },
        )
        held = await asyncio.to_thread(keep_alive, rl.proxy.data_url)
        try:
            # A request the slow baseline answers a byte at a time (over a second), under way...
            in_flight = asyncio.create_task(asyncio.to_thread(post, held, "/v1/infer", VALID_BODY))
            async with asyncio.timeout(10):
                await slow.wait_for_requests(1)
            # ...while the baseline moves to the sample model server.
            doc = copy.deepcopy(rl.doc)
            doc["upstreams"]["baseline"] = {"url": models.baseline.url, "version": "v1", "timeout": "2s"}
            rl.rewrite(doc)
            # (routes too: their default deadline is the two upstream timeouts added)
            assert (await rl.reload())["changed"] == ["upstreams.baseline", "routes"]
            assert not in_flight.done()
            status, body = await in_flight
            assert status == 200 and orjson.dumps(body) == OK_BODY  # finished on the old pool

            # The same client connection, opened before the reload, now reaches the new baseline.
            status, body = await asyncio.to_thread(post, held, "/v1/infer", VALID_BODY)
            assert status == 200 and body["model_version"] == "v1"
            assert slow.requests_seen == 1
            # The old pool is closed once its request is done: its upstream connection goes away.
            async with asyncio.timeout(10):
                await slow.wait_for_open_connections(0)
            assert (await rl.status())["config"]["retiring"] == 0
            # Closed by the proxy, not dropped for the garbage collector (which aiohttp reports).
            assert not [r for r in caplog.records if "Unclosed" in r.getMessage()]
        finally:
            held.close()


async def test_same_candidate_keeps_the_rollout_a_new_one_resets_it(live: Any) -> None:
    rl: Live = await live(canary={"weight": 0, "shadow_samples": 0}, logging={"access_log": "off"})
    async with rl.proxy.admin_client() as admin:
        started = (await admin.post("/rollout/start", json={"reason": "go"})).json()
    assert (started["phase"], started["weight"]) == ("canary", 1)

    doc = copy.deepcopy(rl.doc)
    doc["canary"]["gates"] = {"latency_p95_ms": 250, "error_rate": 0.01}
    doc["canary"]["steps"] = [2, 10, 100]
    rl.rewrite(doc)
    outcome = await rl.reload()
    assert outcome["changed"] == ["canary"] and "candidate_reset" not in outcome
    status = await rl.status()
    rollout = status["rollout"]
    assert (rollout["phase"], rollout["weight"], rollout["step"]) == ("canary", 1, 0)
    assert rollout["rollout_id"] == started["rollout_id"]
    assert status["controller"]["thresholds"]["latency_p95_ms"] == 250
    assert status["controller"]["thresholds"]["error_rate"] == 0.01
    assert status["controller"]["steps"] == [2, 10, 100]

    doc = copy.deepcopy(doc)
    doc["upstreams"]["candidate"]["version"] = "v3"
    rl.rewrite(doc)
    outcome = await rl.reload()
    assert outcome["changed"] == ["upstreams.candidate"]
    assert outcome["candidate_reset"] == "candidate changed from v2 to v3: reset to idle"
    status = await rl.status()
    assert (status["rollout"]["phase"], status["rollout"]["weight"]) == ("idle", 0)
    assert status["versions"] == {"baseline": "v1", "candidate": "v3"}
    async with rl.proxy.admin_client() as admin:
        decisions = (await admin.get("/decisions")).json()["decisions"]
    reset = [d for d in decisions if d["action"] == "reset"]
    assert len(reset) == 1 and reset[0]["actor"] == "rollguard"
    assert reset[0]["reason"] == "candidate changed from v2 to v3: reset to idle"
    assert reset[0]["before"]["weight"] == 1 and reset[0]["weight"] == 0
    reloads = [d for d in decisions if d["action"] == "config_reload"]
    assert [d["changed"] for d in reloads] == [["canary"], ["upstreams.candidate"]]
    # Traffic at weight 0 goes to the baseline; the new version is primed in the metrics.
    samples = await metric_samples(rl.proxy.admin_url)
    assert (
        "rollguard_upstream_errors_total",
        frozenset({("route", "infer"), ("role", "candidate"), ("version", "v3"), ("kind", "timeout")}),
    ) in samples


async def test_a_shorter_interval_applies_to_the_window_in_progress(live: Any) -> None:
    rl: Live = await live(
        canary={"weight": 0, "shadow_samples": 0, "interval": "1h"}, logging={"access_log": "off"}
    )
    async with rl.proxy.admin_client() as admin:
        assert (await admin.post("/rollout/start")).json()["phase"] == "canary"
    doc = copy.deepcopy(rl.doc)
    doc["canary"]["interval"] = "100ms"
    rl.rewrite(doc)
    await rl.reload()
    async with rl.proxy.admin_client() as admin, asyncio.timeout(10):
        while True:  # the hour-long window was cut short: a decision within a fraction of a second
            controller = (await admin.get("/status")).json()["controller"]
            if controller["last_decision"] is not None:
                break
            await asyncio.sleep(0.05)
    assert controller["interval_s"] == 0.1
    assert controller["last_decision"]["action"] == "HOLD"  # no samples yet: inconclusive


async def test_restart_only_keys_are_named_and_the_rest_applies(
    live: Any, caplog: pytest.LogCaptureFixture
) -> None:
    rl: Live = await live(logging={"access_log": "off"})
    doc = copy.deepcopy(rl.doc)
    doc["listen"] = "127.0.0.1:1"
    doc["limits"] = {"max_concurrency": 7, "max_body_bytes": "2KiB", "replay_body_bytes": "1KiB"}
    rl.rewrite(doc)
    with caplog.at_level(logging.WARNING, logger="rollguard.reload"):
        outcome = await rl.reload()
    assert outcome["restart_required"] == ["listen", "limits.max_concurrency"]
    # listen is kept as it runs; the body limits apply (and the shadow's body cap, which follows them)
    assert outcome["changed"] == ["limits", "shadow"]
    assert any(
        "need a restart to take effect: listen, limits.max_concurrency" in r.getMessage()
        for r in caplog.records
    )
    async with httpx.AsyncClient(base_url=rl.proxy.data_url, timeout=10) as c:
        too_big = await c.post("/v1/infer", content=b"x" * 3000)
        assert too_big.status_code == 413  # the new max_body_bytes, on the listener it started with


async def test_a_bad_file_changes_nothing_and_names_the_key(live: Any) -> None:
    rl: Live = await live(logging={"access_log": "off"})
    doc = copy.deepcopy(rl.doc)
    doc["canary"]["steps"] = [1, 120]
    doc["routes"].append(STRICT_ECHO)
    rl.rewrite(doc)
    async with rl.proxy.admin_client() as admin:
        r = await admin.post("/config/reload")
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert "canary.steps[1]: 120 is greater than the maximum of 100" in r.json()["detail"]
    status = await rl.status()
    assert status["routes"] == ["infer"] and status["config"]["generation"] == 1
    assert status["config"]["last_reload"]["outcome"] == "error"
    async with httpx.AsyncClient(base_url=rl.proxy.data_url, timeout=10) as c:
        assert (await c.post("/echo", json={"any": "thing"})).status_code == 200  # still unmatched
    samples = await metric_samples(rl.proxy.admin_url)
    assert sample(samples, "rollguard_config_reloads_total", outcome="error") == 1
    assert sample(samples, "rollguard_config_reloads_total", outcome="ok") == 0


def test_effective_config_keeps_what_only_a_restart_changes(tmp_path: Path) -> None:
    doc = config_doc(tmp_path, "http://127.0.0.1:9001", "http://127.0.0.1:9002")
    old = load_config(write_config(tmp_path, doc, "a.yaml"))
    doc["admin"]["listen"] = "127.0.0.1:9999"
    doc["state"] = {"url": f"file:{tmp_path / 'other.json'}"}
    doc["limits"] = {"head_timeout": "3s", "max_header_bytes": "8KiB", "inspect_body_bytes": "4KiB"}
    doc["logging"] = {"access_log": "off", "sample_success": 0.5}
    doc["tracing"] = {"exporter": "otlp", "sample_ratio": 0.5}
    doc["reports"] = {"dir": str(tmp_path / "elsewhere"), "samples": 9}
    new = load_config(write_config(tmp_path, doc, "b.yaml"))
    assert restart_keys(old, new) == [
        "admin.listen",
        "state.url",
        "limits.max_header_bytes",
        "limits.head_timeout",
        "logging.access_log",
        "reports.dir",
        "tracing.exporter",
    ]
    applied = effective(old, new)
    assert applied.admin.listen == old.admin.listen and applied.state == old.state
    assert applied.limits.head_timeout == old.limits.head_timeout
    assert applied.limits.inspect_body_bytes == 4096
    assert applied.logging.access_log == old.logging.access_log and applied.logging.sample_success == 0.5
    assert not applied.tracing.enabled and applied.tracing.sample_ratio == 0.5
    assert applied.reports.dir == old.reports.dir and applied.reports.samples == 9
    assert changed_sections(old, applied) == ["limits", "logging", "tracing", "reports"]
    assert (
        changed_sections(
            old,
            load_config(
                write_config(
                    tmp_path, config_doc(tmp_path, "http://127.0.0.1:9001", "http://127.0.0.1:9002"), "c.yaml"
                )
            ),
        )
        == []
    )


# -- SIGHUP to `rollguard serve` ------------------------------------------------------------------------


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def test_sighup_reloads_and_a_broken_file_keeps_the_old_config(
    tmp_path: Path, models: Models, proxy_process: Any
) -> None:
    doc = config_doc(tmp_path, models.baseline.url, models.candidate.url, logging={"access_log": "off"})
    path = write_config(tmp_path, doc)
    proc: ProxyProcess = await asyncio.to_thread(proxy_process, path)
    headers = {"authorization": "Bearer op-token-for-tests-0123456789"}
    async with (
        httpx.AsyncClient(base_url=proc.data_url, timeout=10) as data,
        httpx.AsyncClient(base_url=proc.admin_url, headers=headers, timeout=10) as admin,
    ):
        assert (await admin.get("/status")).json()["controller"]["thresholds"]["latency_p95_ms"] == 120
        doc["canary"]["gates"] = {"latency_p95_ms": 250}
        doc["routes"].append(STRICT_ECHO)
        write_config(tmp_path, doc)
        seen = len(proc.stderr_lines)
        proc.signal(signal.SIGHUP)
        await wait_for_log(proc, "config reloaded (generation 2): routes, canary", seen)
        assert (await admin.get("/status")).json()["controller"]["thresholds"]["latency_p95_ms"] == 250
        assert (await data.post("/echo", json={"bad": 1})).status_code == 400

        doc["canary"]["gates"] = {"latency_p95_ms": "fast"}
        write_config(tmp_path, doc)
        seen = len(proc.stderr_lines)
        proc.signal(signal.SIGHUP)
        await wait_for_log(proc, "config reload failed, the running config stays in force", seen)
        failed = [line for line in proc.stderr_lines[seen:] if "config reload failed" in line]
        assert " ERROR " in failed[0] and "canary.gates.latency_p95_ms: 'fast'" in failed[0]
        status = (await admin.get("/status")).json()
        assert status["controller"]["thresholds"]["latency_p95_ms"] == 250
        assert (await data.post("/echo", json={"bad": 1})).status_code == 400
        assert (await data.post("/v1/infer", json=VALID_BODY)).status_code == 200
    samples = await metric_samples(proc.admin_url)
    assert sample(samples, "rollguard_config_reloads_total", outcome="ok") == 1
    assert sample(samples, "rollguard_config_reloads_total", outcome="error") == 1
    assert sample(samples, "rollguard_config_last_reload_success_timestamp_seconds") > 0
    assert proc.proc is not None and proc.proc.poll() is None


async def test_repeated_reloads_leak_no_file_descriptors(
    tmp_path: Path, models: Models, proxy_process: Any
) -> None:
    second = await start_sample_model(ModelBehavior(version="v1-second"))
    try:
        doc = config_doc(tmp_path, models.baseline.url, models.candidate.url, logging={"access_log": "off"})
        path = write_config(tmp_path, doc)
        proc: ProxyProcess = await asyncio.to_thread(proxy_process, path)
        assert proc.proc is not None
        headers = {"authorization": "Bearer op-token-for-tests-0123456789"}
        urls = [second.url, models.baseline.url]

        async def cycle(n: int) -> int:
            """Move the baseline, send traffic through the new pool, wait until the old one is closed."""
            doc["upstreams"]["baseline"]["url"] = urls[n % 2]
            write_config(tmp_path, doc)
            seen = len(proc.stderr_lines)
            proc.signal(signal.SIGHUP)
            await wait_for_log(proc, f"config reloaded (generation {n + 2})", seen)
            async with httpx.AsyncClient(base_url=proc.data_url, timeout=10) as data:
                for _ in range(5):
                    r = await data.post("/v1/infer", json=VALID_BODY)
                    assert r.json()["model_version"] == ("v1-second" if n % 2 == 0 else "v1")
            async with httpx.AsyncClient(base_url=proc.admin_url, headers=headers, timeout=10) as admin:
                async with asyncio.timeout(10):
                    while True:  # polled over HTTP: the proxy is another process
                        if not (await admin.get("/status")).json()["config"]["retiring"]:
                            break
                        await asyncio.sleep(0.05)
            assert proc.proc is not None
            return fds(proc.proc.pid)

        warm = [await cycle(n) for n in range(2)]
        later = [await cycle(n) for n in range(2, 8)]
        assert max(later) <= max(warm) + 2, (warm, later)
        # Closed, not left to the garbage collector (which aiohttp reports as an error).
        assert not [line for line in proc.stderr_lines if "Unclosed" in line]
    finally:
        await second.close()


async def _answered_by(proxy: RunningProxy) -> str:
    async with httpx.AsyncClient(base_url=proxy.data_url, timeout=10) as c:
        r = await c.post("/v1/infer", json=VALID_BODY)
    assert r.status_code == 200, r.text
    return r.headers["x-rollguard-version"]


async def _promote(proxy: RunningProxy) -> None:
    async with proxy.admin_client() as admin:
        assert (await admin.post("/rollout/start", json={"reason": "go"})).status_code == 200
        promoted = (await admin.post("/rollout/promote", json={"reason": "ship it"})).json()
    assert (promoted["phase"], promoted["weight"]) == ("promoted", 100), promoted


async def test_a_promotion_is_never_handed_back_to_the_old_baseline(live: Any, models: Models) -> None:
    rl: Live = await live(canary={"weight": 0, "shadow_samples": 0}, logging={"access_log": "off"})
    await _promote(rl.proxy)
    assert await _answered_by(rl.proxy) == "v2"

    # Only the candidate changed: v1, out of service since the promotion, would take every request.
    doc = copy.deepcopy(rl.doc)
    doc["upstreams"]["candidate"]["version"] = "v3"
    rl.rewrite(doc)
    async with rl.proxy.admin_client() as admin:
        r = await admin.post("/config/reload")
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    detail = r.json()["detail"]
    assert "upstreams.baseline.version: v2 was promoted and serves all traffic" in detail, detail
    assert "Make v2 the baseline first" in detail, detail
    status = await rl.status()
    assert (status["rollout"]["phase"], status["rollout"]["weight"]) == ("promoted", 100)
    assert status["versions"] == {"baseline": "v1", "candidate": "v2"}
    assert await _answered_by(rl.proxy) == "v2"

    # The documented way on: the promoted version becomes the baseline, then the next candidate comes.
    doc = copy.deepcopy(rl.doc)
    doc["upstreams"]["baseline"] = {"url": models.candidate.url, "version": "v2"}
    doc["upstreams"]["candidate"] = {"url": models.baseline.url, "version": "v3"}
    rl.rewrite(doc)
    outcome = await rl.reload()
    assert outcome["candidate_reset"] == "candidate changed from v2 to v3: reset to idle"
    status = await rl.status()
    assert (status["rollout"]["phase"], status["rollout"]["weight"]) == ("idle", 0)
    assert await _answered_by(rl.proxy) == "v2"  # now as the baseline


async def test_a_restart_that_would_revert_a_promotion_is_refused(tmp_path: Path, models: Models) -> None:
    doc = config_doc(
        tmp_path,
        models.baseline.url,
        models.candidate.url,
        canary={"weight": 0, "shadow_samples": 0},
        logging={"access_log": "off"},
    )
    path = write_config(tmp_path, doc)
    proxy, stop, task = await start_proxy(load_config(path))
    try:
        await _promote(proxy)
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
    state_file = load_config(path).state.path
    before = state_file.read_bytes()
    doc["upstreams"]["candidate"]["version"] = "v3"
    write_config(tmp_path, doc)
    res = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "serve", "--config", str(path), stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(res.communicate(), 30)
    assert res.returncode == 2, err.decode()
    assert b"invalid config: upstreams.baseline.version: v2 was promoted" in err, err.decode()
    assert state_file.read_bytes() == before  # nothing reset, nothing logged
