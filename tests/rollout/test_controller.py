"""The canary controller end to end: real sample models, one-second windows, the real admin API."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.demo.sample_model import ModelBehavior
from tests.helpers.config import config_doc, write_config
from tests.helpers.faulty_upstream import refused_url
from tests.helpers.metrics import metric_samples, sample
from tests.helpers.models import Models
from tests.helpers.traffic import VALID_BODY, drive_traffic, wait_for_phase

# Short windows and small samples so a rollout fits in seconds; thresholds wide enough that an identical
# candidate passes on a few hundred samples, which is what a test can afford.
FAST_CANARY = {
    "steps": [20, 50, 100],
    "interval": "1s",
    "min_samples": 60,
    "shadow_samples": 100,
    "max_failed_windows": 2,
    "gates": {
        "error_rate": 0.05,
        "decision_delta_pp": 30,
        "latency_p95_ms": 500,
        "latency_ratio": 5.0,
        "cost_per_1k": 1.0,
    },
    "tripwire": {"consecutive_failures": 5},
}


async def start_rollout(proxy: Any) -> dict[str, Any]:
    async with proxy.admin_client() as admin:
        r = await admin.post("/rollout/start", json={"reason": "test rollout"})
        assert r.status_code == 200, r.text
        return dict(r.json())


async def run_rollout(proxy: Any, until: set[str], within: float) -> tuple[dict[str, Any], dict[str, int]]:
    stop = asyncio.Event()
    traffic = asyncio.create_task(drive_traffic(proxy.data_url, stop))
    try:
        await start_rollout(proxy)
        async with proxy.admin_client() as admin:
            final = await wait_for_phase(admin, until, within)
    finally:
        stop.set()
        counts = await traffic
    return dict(final), counts


async def decisions(proxy: Any) -> list[dict[str, Any]]:
    async with proxy.admin_client() as admin:
        return list((await admin.get("/decisions")).json()["decisions"])


async def test_a_good_candidate_goes_through_shadow_and_every_step_to_promotion(proxy_factory: Any) -> None:
    proxy = await proxy_factory(canary=FAST_CANARY)
    final, counts = await run_rollout(proxy, {"promoted", "rolled_back"}, within=60)
    assert final["phase"] == "promoted", final
    assert final["weight"] == 100
    assert counts and all(k.startswith("200") for k in counts), counts
    actions = [d["action"] for d in await decisions(proxy)]
    assert actions[0] == "start"
    assert actions.count("PROCEED") == 2  # shadow -> 20%, 20% -> 50%
    assert actions[-1] == "PROMOTE"
    for d in await decisions(proxy):
        if d["actor"] == "controller":
            assert d["gates"], d  # every decision carries the gate values that drove it
    async with proxy.admin_client() as admin:
        text = (await admin.get("/reports/rollout_decision.txt")).text
        plan = (await admin.get("/reports/canary_plan.md")).text
    assert "PROMOTE" in text and "by controller" in text
    assert "20% -> 50% -> 100%" in plan


async def test_an_erroring_candidate_is_rolled_back_and_latched(proxy_factory: Any, models: Models) -> None:
    models.candidate.model.set_behavior(ModelBehavior(version="v2", error_rate=0.3, seed=1))
    proxy = await proxy_factory(canary=FAST_CANARY, shadow={"noise_sample": 0.0})
    final, counts = await run_rollout(proxy, {"rolled_back", "promoted"}, within=60)
    assert final["phase"] == "rolled_back" and final["weight"] == 0
    assert "error" in str(final["reason"]) or "trip-wire" in str(final["reason"])
    # The fallback answered every client: the candidate's 500s never reached anyone.
    assert counts and all(k.startswith("200") for k in counts), counts
    async with proxy.admin_client() as admin:
        assert (await admin.put("/weights", json={"canary": 5})).status_code == 409  # latched
        assert (await admin.post("/rollout/start")).status_code == 409
        rearmed = await admin.post("/rollout/rearm", json={"reason": "fixed the model"})
        assert rearmed.status_code == 200 and rearmed.json()["phase"] == "idle"


async def test_tripwire_rolls_back_at_the_deciding_failure(proxy_factory: Any, models: Models) -> None:
    proxy = await proxy_factory(
        upstreams={
            "baseline": {"url": models.baseline.url, "version": "v1"},
            "candidate": {"url": refused_url(), "version": "v2"},
        },
        canary={**FAST_CANARY, "shadow_samples": 0, "interval": "30s"},  # no window closes during the test
    )
    final, counts = await run_rollout(proxy, {"rolled_back"}, within=20)
    assert final["reason"].startswith("trip-wire"), final
    assert counts and all(k.startswith("200 v1") for k in counts), (
        counts
    )  # every client answered by the fallback
    log = await decisions(proxy)
    start = next(d for d in log if d["action"] == "start")
    trip = next(d for d in log if d["actor"] == "tripwire")
    assert log.index(start) < log.index(trip)
    assert trip["tripwire"]["consecutive"] >= 5 or "consecutive" in trip["reason"]
    # Counts, not durations (the reaction time is measured by benchmarks/bench_tripwire.py): the
    # rollback came at the deciding failure, so the candidate saw at most those five plus the requests
    # already in flight to it then (the traffic driver holds at most 48).
    samples = await metric_samples(proxy.admin_url)
    tried = sample(samples, "rollguard_upstream_errors_total", role="candidate")
    assert 5 <= tried <= 5 + 48, tried


async def test_the_steps_evidence_survives_a_pause_and_resume(proxy_factory: Any) -> None:
    proxy = await proxy_factory(canary={**FAST_CANARY, "shadow_samples": 0, "interval": "30s"})

    async def candidate_requests(admin: httpx.AsyncClient) -> int:
        status = (await admin.get("/status")).json()
        return int(status["controller"]["window"]["candidate"]["requests"])

    async with proxy.admin_client() as admin, httpx.AsyncClient(base_url=proxy.data_url) as client:
        await admin.post("/rollout/start")
        for i in range(100):
            await client.post("/v1/infer", json=VALID_BODY, headers={"x-user-id": f"u-{i}"})
        before = await candidate_requests(admin)
        assert before > 0
        await admin.post("/rollout/pause", json={"reason": "a look at the dashboards"})
        await admin.post("/rollout/resume")
        assert await candidate_requests(admin) == before  # not started afresh
        status = (await admin.get("/status")).json()
        assert status["controller"]["tripwire"]["armed"] is True


@pytest.mark.parametrize(
    ("move", "from_phase"),
    [("promote", "idle"), ("rearm", "idle"), ("resume", "idle"), ("pause", "idle"), ("rollback", "idle")],
)
async def test_illegal_moves_are_409(proxy: Any, move: str, from_phase: str) -> None:
    async with proxy.admin_client() as admin:
        r = await admin.post(f"/rollout/{move}")
        status = (await admin.get("/status")).json()["rollout"]
    assert r.status_code == 409, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert status["phase"] == from_phase


async def test_pause_resume_promote_and_rollback_by_an_operator(proxy_factory: Any) -> None:
    proxy = await proxy_factory(canary={**FAST_CANARY, "shadow_samples": 0, "interval": "30s"})
    async with proxy.admin_client() as admin:
        started = (await admin.post("/rollout/start")).json()
        assert started["phase"] == "canary" and started["weight"] == 20
        paused = (await admin.post("/rollout/pause", json={"reason": "lunch"})).json()
        assert paused["phase"] == "paused" and paused["weight"] == 20
        assert (await admin.post("/rollout/pause")).status_code == 409
        resumed = (await admin.post("/rollout/resume")).json()
        assert resumed["phase"] == "canary" and resumed["weight"] == 20
        promoted = (await admin.post("/rollout/promote", json={"reason": "looks great"})).json()
        assert promoted["phase"] == "promoted" and promoted["weight"] == 100
        rolled = (await admin.post("/rollout/rollback", json={"reason": "regret"})).json()
        assert rolled["phase"] == "rolled_back" and rolled["weight"] == 0
        bad = await admin.post("/rollout/launch")
        assert bad.status_code == 404
        weak = await proxy.admin_client(None).__aenter__()
        try:
            assert (await weak.post("/rollout/start")).status_code == 401
        finally:
            await weak.aclose()
    log = await decisions(proxy)
    assert [d["action"] for d in log][-5:] == ["start", "pause", "resume", "PROMOTE", "ROLLBACK"]
    assert all(d["actor"] == "ops" for d in log[-5:])


async def test_sigkill_mid_rollout_resumes_where_it_was(
    tmp_path: Path, models: Models, proxy_process: Any
) -> None:
    doc = config_doc(
        tmp_path,
        models.baseline.url,
        models.candidate.url,
        canary={**FAST_CANARY, "shadow_samples": 0, "interval": "1h"},
    )
    cfg = write_config(tmp_path, doc)
    first = await asyncio.to_thread(proxy_process, cfg)
    headers = {"authorization": "Bearer op-token-for-tests-0123456789"}
    async with httpx.AsyncClient(base_url=first.admin_url, headers=headers) as admin:
        started = (await admin.post("/rollout/start")).json()
        before = len((await admin.get("/decisions")).json()["decisions"])
    first.kill()
    second = await asyncio.to_thread(proxy_process, cfg)
    async with httpx.AsyncClient(base_url=second.admin_url, headers=headers) as admin:
        status = (await admin.get("/status")).json()["rollout"]
        after = (await admin.get("/decisions")).json()["decisions"]
    for key in ("phase", "step", "weight", "rollout_id", "revision", "passes", "failed_windows"):
        assert status[key] == started[key], key
    assert len(after) == before  # no spurious decision on the way back up


async def test_status_shows_the_controller(proxy_factory: Any) -> None:
    proxy = await proxy_factory(canary={**FAST_CANARY, "shadow_samples": 0})
    stop = asyncio.Event()
    traffic = asyncio.create_task(drive_traffic(proxy.data_url, stop))
    seen: dict[str, Any] | None = None
    try:
        await start_rollout(proxy)
        t0 = time.monotonic()
        async with proxy.admin_client() as admin:
            # A failure guard, not a timing claim: the first 1 s window closes long before it.
            while seen is None and time.monotonic() - t0 < 20:
                doc = (await admin.get("/status")).json()
                ctl = doc["controller"]
                if ctl["last_decision"] is not None and ctl["window"]["candidate"]["requests"] > 0:
                    seen = doc
                await asyncio.sleep(0.1)
    finally:
        stop.set()
        await traffic
    assert seen is not None, "no decision with candidate traffic in the window was ever shown"
    ctl, rollout = seen["controller"], seen["rollout"]
    assert ctl["last_decision"]["action"] in {"PROCEED", "HOLD", "PROMOTE"}, ctl["last_decision"]
    assert ctl["window"]["baseline"]["requests"] > 0
    assert {g["gate"] for g in ctl["gates"]} >= {"latency_p95", "error_rate", "decision_delta"}
    # Armed exactly while the candidate takes real canary traffic (and nothing has tripped it).
    assert rollout["phase"] == "canary" and rollout["weight"] > 0, rollout
    assert ctl["tripwire"]["armed"] is True, ctl["tripwire"]
