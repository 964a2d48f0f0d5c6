"""The paired canary (``canary.paired_sample``): candidate-routed requests also sent to the baseline, off
the client's path, with the shadow's isolation rules; their decisions reach the controller as pairs."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import aiohttp

from proxy.demo.sample_model import features_generator
from tests.helpers.faulty_upstream import Fault, FaultyUpstream
from tests.helpers.metrics import metric_samples, sample
from tests.helpers.models import Models

PAIRED = {"paired_sample": 1.0, "shadow_samples": 0}
SHADOW = {"sample": 0.0, "noise_sample": 0.0, "timeout": "2s"}


async def post_all(url: str, n: int, headers: dict[str, str] | None = None) -> list[tuple[int, str]]:
    rng = random.Random(3)
    out: list[tuple[int, str]] = []
    async with aiohttp.ClientSession(url) as session:
        for _ in range(n):
            hdrs = {"authorization": "Bearer user-secret", **(headers or {})}
            async with session.post("/v1/infer", json=features_generator(rng), headers=hdrs) as r:
                await r.read()
                out.append((r.status, r.headers.get("x-rollguard-version", "")))
    return out


async def full_weight(proxy: Any) -> None:
    async with proxy.admin_client() as admin:
        r = await admin.put("/weights", json={"canary": 100, "reason": "paired test"})
        assert r.status_code == 200, r.text


async def at_full_weight(
    proxy_factory: Any, baseline_url: str, models: Models, canary: dict[str, Any]
) -> Any:
    """A proxy in front of ``baseline_url`` and the candidate sample model, every request to the candidate."""
    proxy = await proxy_factory(
        upstreams={
            "baseline": {"url": baseline_url, "version": "v1"},
            "candidate": {"url": models.candidate.url, "version": "v2"},
        },
        canary=canary,
        shadow=SHADOW,
    )
    await full_weight(proxy)
    return proxy


async def paired_status(proxy: Any, at_least: int) -> dict[str, Any]:
    async with proxy.admin_client() as admin, asyncio.timeout(10):
        while True:
            window = (await admin.get("/status")).json()["controller"]["window"]
            if window["paired"]["pairs"] >= at_least:
                return dict(window)
            await asyncio.sleep(0.05)


async def paired_metric(proxy: Any, outcome: str, at_least: float) -> None:
    async with asyncio.timeout(10):
        while True:
            got = sample(
                await metric_samples(proxy.admin_url), "rollguard_paired_requests_total", outcome=outcome
            )
            if got >= at_least:
                return
            await asyncio.sleep(0.05)


async def test_candidate_requests_are_paired_with_the_baselines_answer(proxy_factory: Any) -> None:
    # Both versions are the sample model (the same scores): every pair agrees.
    proxy = await proxy_factory(canary=PAIRED, shadow=SHADOW)
    await full_weight(proxy)
    results = await post_all(proxy.data_url, 50)
    assert results == [(200, "v2")] * 50  # every client answered by the candidate, unchanged
    window = await paired_status(proxy, 50)
    assert window["paired"] == {"pairs": 50, "candidate_only": 0, "baseline_only": 0}
    # Paired answers are not the baseline's traffic: its window has none of them.
    assert window["baseline"]["requests"] == 0 and window["candidate"]["requests"] == 50
    samples = await metric_samples(proxy.admin_url)
    assert sample(samples, "rollguard_paired_requests_total", outcome="sent") == 50
    assert sample(samples, "rollguard_paired_requests_total", outcome="failed") == 0


async def test_paired_requests_carry_the_shadow_header_and_no_credentials(
    proxy_factory: Any, models: Models
) -> None:
    async with FaultyUpstream(Fault.OK) as baseline:
        proxy = await at_full_weight(proxy_factory, baseline.url, models, canary=PAIRED)
        results = await post_all(proxy.data_url, 10, {"cookie": "session=abc"})
        assert results == [(200, "v2")] * 10
        await baseline.wait_for_requests(10)
        for seen in baseline.requests:
            assert seen.header("x-rollguard-shadow") == "1"
            assert seen.header("authorization") is None and seen.header("cookie") is None
        # The recording baseline always answers score 0.7 (positive): the candidate's negative decisions
        # are the only discordant pairs there can be.
        paired = (await paired_status(proxy, 10))["paired"]
        assert paired["pairs"] == 10 and paired["candidate_only"] == 0 and paired["baseline_only"] > 0


async def test_a_failing_baseline_never_touches_the_client_and_makes_no_pair(
    proxy_factory: Any, models: Models
) -> None:
    async with FaultyUpstream(Fault.STATUS_500) as baseline:
        proxy = await at_full_weight(proxy_factory, baseline.url, models, canary=PAIRED)
        assert await post_all(proxy.data_url, 20) == [(200, "v2")] * 20
        await paired_metric(proxy, "failed", 20)
        async with proxy.admin_client() as admin:
            window = (await admin.get("/status")).json()["controller"]["window"]
        assert window["paired"]["pairs"] == 0 and window["baseline"]["failures"] == 0


async def test_without_paired_sample_nothing_is_sent_to_the_baseline(
    proxy_factory: Any, models: Models
) -> None:
    async with FaultyUpstream(Fault.OK) as baseline:
        proxy = await at_full_weight(proxy_factory, baseline.url, models, canary={"shadow_samples": 0})
        assert await post_all(proxy.data_url, 20) == [(200, "v2")] * 20
        # A pair is counted when it is offered, before the client's answer: none was.
        samples = await metric_samples(proxy.admin_url)
        assert sample(samples, "rollguard_paired_requests_total") == 0
        assert baseline.requests_seen == 0
