"""Shadow traffic end to end: mirrors never touch the client, and every pair is learned from."""

from __future__ import annotations

import asyncio
import math
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson
import pytest

from proxy.demo.sample_model import ModelBehavior, features_generator, score_features
from tests.helpers.config import config_doc, write_config
from tests.helpers.faulty_upstream import Fault, FaultyUpstream
from tests.helpers.metrics import metric_samples, sample
from tests.helpers.models import Models
from tests.helpers.tokens import OPERATOR_TOKEN
from tests.helpers.traffic import VALID_BODY

SHADOW_ALL = {"sample": 1.0, "timeout": "2s", "noise_sample": 0.0}


async def load(url: str, bodies: list[dict[str, Any]], concurrency: int = 16) -> list[tuple[int, float, str]]:
    """POST every body to /v1/infer; (status, seconds, version) per request, in order."""
    out: list[tuple[int, float, str]] = [(0, 0.0, "")] * len(bodies)
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(url) as session:

        async def one(i: int) -> None:
            async with sem:
                t0 = time.perf_counter()
                hdrs = {"x-user-id": str(bodies[i].get("user_id", i))}
                async with session.post("/v1/infer", json=bodies[i], headers=hdrs) as r:
                    await r.read()
                    out[i] = (r.status, time.perf_counter() - t0, r.headers.get("x-rollguard-version", ""))

        await asyncio.gather(*(one(i) for i in range(len(bodies))))
    return out


def bodies(n: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [features_generator(rng) for _ in range(n)]


async def wait_for_metric(admin_url: str, name: str, value: float, **labels: str) -> float:
    async with asyncio.timeout(10):
        while True:
            got = sample(await metric_samples(admin_url), name, **labels)
            if got >= value:
                return got
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("fault", [Fault.HANG_BEFORE_HEADERS, Fault.STATUS_500, Fault.SLOW_DRIP])
async def test_a_broken_shadow_never_touches_the_client(
    proxy_factory: Any, models: Models, fault: Fault
) -> None:
    async with FaultyUpstream(fault, drip_interval=0.01) as faulty:
        proxy = await proxy_factory(
            upstreams={
                "baseline": {"url": models.baseline.url, "version": "v1"},
                "candidate": {"url": faulty.url, "version": "v2"},
            },
            # A hung mirror outlives the whole test: any client waiting on one would never be answered.
            shadow={**SHADOW_ALL, "timeout": "60s", "max_in_flight": 64},
        )
        async with asyncio.timeout(30):  # a failure guard: 400 requests to a healthy baseline
            results = await load(proxy.data_url, bodies(400))
        assert all(status == 200 and version == "v1" for status, _, version in results)
        assert faulty.requests_seen > 0  # the shadow really was sent traffic
        samples = await metric_samples(proxy.admin_url)
        sent = sample(samples, "rollguard_shadow_requests_total", outcome="sent")
        dropped = sample(samples, "rollguard_shadow_requests_total", outcome="dropped")
        assert sent + dropped == 400
        if fault is Fault.HANG_BEFORE_HEADERS:
            # Order, not duration: every client had its answer while every mirror was still hung.
            assert sample(samples, "rollguard_shadow_in_flight") == sent == 64
        assert sample(samples, "rollguard_requests_total", role="baseline", code="200") == 400


async def test_drops_are_counted_when_max_in_flight_is_reached(proxy_factory: Any, models: Models) -> None:
    async with FaultyUpstream(Fault.HANG_BEFORE_HEADERS) as faulty:
        proxy = await proxy_factory(
            upstreams={
                "baseline": {"url": models.baseline.url, "version": "v1"},
                "candidate": {"url": faulty.url, "version": "v2"},
            },
            shadow={**SHADOW_ALL, "timeout": "10s", "max_in_flight": 5},
        )
        results = await load(proxy.data_url, bodies(60), concurrency=4)
        assert all(status == 200 for status, _, _ in results)
        async with asyncio.timeout(5):
            await faulty.wait_for_requests(5)
        samples = await metric_samples(proxy.admin_url)
        assert sample(samples, "rollguard_shadow_requests_total", outcome="sent") == 5
        assert sample(samples, "rollguard_shadow_requests_total", outcome="dropped") == 55
        assert sample(samples, "rollguard_shadow_in_flight") == 5  # held at the bound, never above
        async with proxy.admin_client() as admin:
            status = (await admin.get("/status")).json()
        assert status["shadow"]["in_flight"] == 5 and status["shadow"]["max_in_flight"] == 5
    # The hung candidate goes away (its sockets close): every held mirror ends, failed, and gives its
    # slot back, so the bound never leaks capacity.
    in_flight = await _settled_in_flight(proxy.admin_url)
    assert in_flight == 0
    samples = await metric_samples(proxy.admin_url)
    assert sample(samples, "rollguard_shadow_requests_total", outcome="failed") == 5


async def _settled_in_flight(admin_url: str, within: float = 10.0) -> float:
    """The in-flight gauge once it stops at zero (a failure guard bounds the wait, not a timing claim)."""
    deadline = time.monotonic() + within
    while True:
        value = sample(await metric_samples(admin_url), "rollguard_shadow_in_flight")
        if value == 0 or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.05)


async def test_credentials_never_reach_the_shadow(proxy_factory: Any, models: Models) -> None:
    async with FaultyUpstream(Fault.OK) as faulty:
        proxy = await proxy_factory(
            upstreams={
                "baseline": {"url": models.baseline.url, "version": "v1"},
                "candidate": {"url": faulty.url, "version": "v2"},
            },
            shadow={**SHADOW_ALL, "credential_headers": ["x-api-key", "x-partner-secret"]},
        )
        secret_headers = {
            "authorization": "Bearer s3cr3t-token",
            "cookie": "session=abc123",
            "x-api-key": "key-123",
            "x-partner-secret": "partner-xyz",
            "x-user-id": "u-1",
        }
        async with httpx.AsyncClient(base_url=proxy.data_url) as c:
            r = await c.post("/v1/infer", json=VALID_BODY, headers=secret_headers)
        assert r.status_code == 200 and r.headers["x-rollguard-version"] == "v1"
        async with asyncio.timeout(5):
            await faulty.wait_for_requests(1)
        seen = faulty.requests[-1]
        assert seen.header("x-rollguard-shadow") == "1"
        assert seen.header("x-user-id") == "u-1"
        for name in ("authorization", "cookie", "x-api-key", "x-partner-secret"):
            assert seen.header(name) is None, name
        assert b"s3cr3t" not in seen.body and orjson.loads(seen.body) == VALID_BODY


async def test_credentials_forwarded_when_configured(proxy_factory: Any, models: Models) -> None:
    async with FaultyUpstream(Fault.OK) as faulty:
        proxy = await proxy_factory(
            upstreams={
                "baseline": {"url": models.baseline.url, "version": "v1"},
                "candidate": {"url": faulty.url, "version": "v2"},
            },
            shadow={**SHADOW_ALL, "forward_credentials": True},
        )
        async with httpx.AsyncClient(base_url=proxy.data_url) as c:
            await c.post("/v1/infer", json=VALID_BODY, headers={"authorization": "Bearer t"})
        async with asyncio.timeout(5):
            await faulty.wait_for_requests(1)
        assert faulty.requests[-1].header("authorization") == "Bearer t"


async def test_only_sampled_methods_and_bodies_are_mirrored(proxy_factory: Any, models: Models) -> None:
    async with FaultyUpstream(Fault.OK) as faulty:
        route = {**config_doc(Path("."), "", "")["routes"][0], "methods": ["POST", "PUT"]}
        proxy = await proxy_factory(
            upstreams={
                "baseline": {"url": models.baseline.url, "version": "v1"},
                "candidate": {"url": faulty.url, "version": "v2"},
            },
            routes=[route],
            shadow={**SHADOW_ALL, "methods": ["POST"], "max_body_bytes": 200},
        )
        big = {**VALID_BODY, "padding": "x" * 400}
        async with httpx.AsyncClient(base_url=proxy.data_url) as c:
            put = await c.put("/v1/infer", json=VALID_BODY)  # a routed method, not a shadow method
            assert put.headers["x-rollguard-version"] == "v1"
            assert (await c.post("/v1/infer", json=big)).status_code == 200  # over max_body_bytes
            assert (await c.post("/v1/infer", json=VALID_BODY)).status_code == 200
        samples = await wait_for_metric(proxy.admin_url, "rollguard_shadow_requests_total", 1, outcome="sent")
        assert samples == 1
        all_samples = await metric_samples(proxy.admin_url)
        assert sample(all_samples, "rollguard_shadow_requests_total", outcome="skipped") == 1


async def test_a_client_disconnect_does_not_cancel_a_sent_mirror(proxy_factory: Any, models: Models) -> None:
    models.baseline.model.set_behavior(ModelBehavior(version="v1", latency_ms=3000))
    models.candidate.model.set_behavior(ModelBehavior(version="v2", latency_ms=300))
    proxy = await proxy_factory(shadow=SHADOW_ALL)
    async with httpx.AsyncClient(base_url=proxy.data_url, timeout=0.1) as c:
        with pytest.raises(httpx.TimeoutException):
            await c.post("/v1/infer", json=VALID_BODY)
    # The client is gone; the candidate's answer still arrives and is accounted as a shadow exchange.
    await wait_for_metric(proxy.admin_url, "rollguard_upstream_duration_seconds_count", 1, role="shadow")
    samples = await metric_samples(proxy.admin_url)
    assert sample(samples, "rollguard_shadow_requests_total", outcome="failed") == 0


def expected_divergence(drift: float, n: int = 200_000) -> float:
    """The true share of requests whose decision flips under ``drift``, by Monte Carlo."""
    rng = random.Random(99)
    flips = 0
    for _ in range(n):
        f = features_generator(rng)["features"]
        flips += (score_features(f) >= 0.5) != (score_features(f, drift) >= 0.5)
    return 100.0 * flips / n


async def test_drifted_candidate_shows_the_expected_divergence_and_noise(
    proxy_factory: Any, models: Models, tmp_path: Path
) -> None:
    drift = 0.4
    models.candidate.model.set_behavior(ModelBehavior(version="v2", drift=drift))
    proxy = await proxy_factory(shadow={**SHADOW_ALL, "noise_sample": 1.0, "noise": {"min_samples": 50}})
    n = 1500
    results = await load(proxy.data_url, bodies(n, seed=11))
    assert all(status == 200 for status, _, _ in results)
    await wait_for_metric(proxy.admin_url, "rollguard_shadow_comparisons_total", n)
    async with proxy.admin_client() as admin:
        report = (await admin.get("/reports/shadow_eval.json")).json()
    ev = report["routes"]["infer"]
    assert ev["compared"] == n
    lo, hi = ev["decision_divergence_pp"]["ci95"]
    truth = expected_divergence(drift)
    assert lo <= truth <= hi, (truth, ev["decision_divergence_pp"])
    assert ev["score_delta"]["mean"] > 0  # the candidate scores higher everywhere
    assert ev["distribution_shift"]["ks"]["p_value"] < 0.01
    real = {f["field"] for f in ev["fields"]["real"]}
    noise = {f["field"] for f in ev["fields"]["noise"]}
    assert "/score" in real and "/model_version" in real
    assert "/prediction_id" in noise and "/served_at" in noise
    segments = {s["segment"]: s for s in ev["segments"]}
    assert {"br-se", "br-ne", "us-east"} <= set(segments)
    assert segments["br-se"]["count"] > 0 and segments["br-se"]["candidate_decision_rate"] is not None
    samples = await metric_samples(proxy.admin_url)
    assert sample(samples, "rollguard_shadow_score_delta_count", route="infer") == n
    assert sample(samples, "rollguard_upstream_duration_seconds_count", role="shadow", version="v1") == n


async def test_a_candidate_that_moves_one_region_is_flagged_in_the_fairness_spot_check(
    proxy_factory: Any, models: Models
) -> None:
    models.candidate.model.set_behavior(ModelBehavior(version="v2", region_drift={"br-ne": -1.0}))
    proxy = await proxy_factory(shadow=SHADOW_ALL)
    n = 1500
    results = await load(proxy.data_url, bodies(n, seed=5))
    assert all(status == 200 for status, _, _ in results)
    await wait_for_metric(proxy.admin_url, "rollguard_shadow_comparisons_total", n)
    async with proxy.admin_client() as admin:
        ev = (await admin.get("/reports/shadow_eval.json")).json()["routes"]["infer"]
    segments = {s["segment"]: s for s in ev["segments"]}
    assert segments["br-ne"]["decision_rate_shift_ci95_pp"][1] < 0  # br-ne's approvals fell
    for region in ("br-se", "br-s", "us-east", "eu-west"):
        assert segments[region]["decision_rate_shift_pp"] == 0, segments[region]  # nobody else's moved
    fairness = ev["fairness"]
    assert fairness["segments"] == 5 and fairness["most_moved"]["segment"] == "br-ne"
    assert [f["segment"] for f in fairness["flagged"]] == ["br-ne"], fairness


async def test_put_shadow_and_report_cli(proxy: Any, tmp_path: Path) -> None:
    async with proxy.admin_client() as admin:
        bad = await admin.put("/shadow", json={"sample": 1.5})
        assert bad.status_code == 422 and "sample" in bad.json()["detail"]
        r = await admin.put("/shadow", json={"sample": 1, "reason": "start shadowing"})
        assert r.status_code == 200 and r.json()["shadow_sample"] == 1
        decisions = (await admin.get("/decisions")).json()["decisions"]
    assert decisions[-1]["action"] == "set_shadow_sample" and decisions[-1]["actor"] == "ops"
    results = await load(proxy.data_url, bodies(50))
    assert all(status == 200 for status, _, _ in results)
    await wait_for_metric(proxy.admin_url, "rollguard_shadow_comparisons_total", 50)
    out = tmp_path / "artifacts"
    env = {"ROLLGUARD_TOKEN": OPERATOR_TOKEN, "PATH": "/usr/bin:/bin"}
    res = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "proxy", "report", "--out", str(out), "--admin", proxy.admin_url],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert res.returncode == 0, res.stderr
    doc = orjson.loads((out / "shadow_eval.json").read_bytes())
    assert doc["routes"]["infer"]["compared"] == 50
    assert doc["versions"] == {"baseline": "v1", "candidate": "v2"}


async def test_a_hung_shadow_holds_at_most_max_in_flight_mirrors_and_drops_the_rest(
    tmp_path: Path, models: Models, proxy_process: Any
) -> None:
    # memory growth: measured in benchmarks/bench_memory.py, not asserted here
    async with FaultyUpstream(Fault.HANG_BEFORE_HEADERS) as faulty:
        doc = config_doc(
            tmp_path,
            models.baseline.url,
            faulty.url,
            shadow={**SHADOW_ALL, "timeout": "30s", "max_in_flight": 64},
            logging={"access_log": "off"},
        )
        proc = await asyncio.to_thread(proxy_process, write_config(tmp_path, doc))
        for seed in range(1, 6):
            results = await load(proc.data_url, bodies(1000, seed=seed), concurrency=32)
            assert all(status == 200 for status, _, _ in results)
        samples = await metric_samples(proc.admin_url)
        # None of the 64 held mirrors can finish within the 30 s timeout, so every later one is dropped.
        assert sample(samples, "rollguard_shadow_requests_total", outcome="sent") == 64
        assert sample(samples, "rollguard_shadow_requests_total", outcome="dropped") == 5000 - 64
        assert sample(samples, "rollguard_shadow_in_flight") == 64
        assert faulty.open_connections <= 64


def test_expected_divergence_is_not_trivial() -> None:
    # Guard for the drift test above: the drift must flip a clearly non-zero share of decisions.
    assert 3 < expected_divergence(0.4, n=20_000) < 30
    assert math.isclose(expected_divergence(0.0, n=2000), 0.0)


@pytest.mark.parametrize("after_rollback", [False, True])
async def test_a_rolled_back_candidate_gets_mirrors_only_when_asked(
    proxy_factory: Any, after_rollback: bool
) -> None:
    proxy = await proxy_factory(shadow={**SHADOW_ALL, "after_rollback": after_rollback})

    async def sent_after(n: int) -> float:
        """Mirrors sent once ``n`` more requests are answered (a mirror is counted before the answer)."""
        results = await load(proxy.data_url, bodies(n, seed=n))
        assert [status for status, _, _ in results] == [200] * n
        return sample(
            await metric_samples(proxy.admin_url), "rollguard_shadow_requests_total", outcome="sent"
        )

    assert await sent_after(20) == 20  # mirroring as configured while the rollout is idle
    async with proxy.admin_client() as admin:
        # An override set for the rollout ends with it: a rollback does not inherit it.
        assert (await admin.put("/shadow", json={"sample": 1.0, "reason": "t"})).status_code == 200
        assert (await admin.post("/rollout/start", json={"reason": "t"})).status_code == 200
        rolled = await admin.post("/rollout/rollback", json={"reason": "too slow"})
        assert rolled.status_code == 200 and rolled.json()["phase"] == "rolled_back", rolled.text
    assert await sent_after(20) == (40 if after_rollback else 20)
    # An operator asking again (PUT /shadow after the rollback) is heard either way.
    async with proxy.admin_client() as admin:
        assert (await admin.put("/shadow", json={"sample": 1.0, "reason": "diagnose"})).status_code == 200
    before = sample(await metric_samples(proxy.admin_url), "rollguard_shadow_requests_total", outcome="sent")
    assert await sent_after(10) == before + 10
    # Re-armed and idle again: mirrored as before.
    async with proxy.admin_client() as admin:
        assert (await admin.post("/rollout/rearm", json={"reason": "fixed"})).status_code == 200
    assert await sent_after(10) == before + 20
