"""GET /history through a real admin listener: viewer-only, one record per judged window oldest first, the
candidate's mirrored evidence in the shadow phase, the folded timeline and the latest rollout's span."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import jsonschema

from proxy.admin.openapi import document as openapi_document
from proxy.rollout.history import HISTORY_WINDOWS
from tests.helpers.proxy_runner import RunningProxy
from tests.helpers.tokens import VIEWER_TOKEN
from tests.helpers.traffic import drive_traffic

# A step that never gathers enough samples holds every window: a steady stream of judged windows.
HOLDING_CANARY = {
    "weight": 0,
    "steps": [10, 50, 100],
    "interval": "300ms",
    "min_samples": 1_000_000,
    "shadow_samples": 0,
}
# A shadow phase that never has enough pairs: every window is judged on the mirrors, and holds.
HOLDING_SHADOW = {**HOLDING_CANARY, "shadow_samples": 1_000_000}


def _valid(doc: dict[str, Any]) -> None:
    """The answer matches the schema the OpenAPI document gives for it."""
    spec = openapi_document(metrics_auth=False)
    schema = {**spec["components"]["schemas"]["History"], "components": spec["components"]}
    jsonschema.validate(doc, schema)


async def _until(
    fetch: Callable[[], Awaitable[httpx.Response]], ok: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    async with asyncio.timeout(30):
        while True:
            doc: dict[str, Any] = (await fetch()).json()
            if ok(doc):
                return doc
            await asyncio.sleep(0.1)


async def test_history_needs_a_viewer_token(proxy: RunningProxy) -> None:
    async with httpx.AsyncClient(base_url=proxy.admin_url) as anonymous:
        none = await anonymous.get("/history")
        wrong = await anonymous.get("/history", headers={"authorization": "Bearer not-a-configured-token"})
    for r in (none, wrong):
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.headers["content-type"] == "application/problem+json"
    async with proxy.admin_client(VIEWER_TOKEN) as viewer:
        r = await viewer.get("/history")
        assert (await viewer.post("/history")).status_code == 405
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    doc = r.json()
    _valid(doc)
    assert doc["capacity"] == HISTORY_WINDOWS
    assert doc["windows"] == [] and doc["timeline"] == []  # nothing judged, nothing logged yet
    assert doc["rollout"] == {
        "started_at": None,
        "windows": 0,
        "ended_at": None,
        "ended_by": None,
        "actor": None,
    }


async def _rollout(proxy: RunningProxy, until: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Start a rollout under traffic and pause it once the history satisfies ``until``; the paused
    history (no window closes while paused) and the decision log, read after it."""
    stop = asyncio.Event()
    traffic = asyncio.create_task(drive_traffic(proxy.data_url, stop, rps=200))
    try:
        async with proxy.admin_client() as ops:
            assert (await ops.post("/rollout/start", json={"reason": "ship v2"})).status_code == 200
            async with proxy.admin_client(VIEWER_TOKEN) as viewer:
                await _until(lambda: viewer.get("/history"), until)
            assert (await ops.post("/rollout/pause", json={"reason": "look"})).status_code == 200
    finally:
        stop.set()
        await traffic
    async with proxy.admin_client(VIEWER_TOKEN) as viewer:
        history: dict[str, Any] = (await viewer.get("/history")).json()
        history["log"] = (await viewer.get("/decisions")).json()["decisions"]
        history["status"] = (await viewer.get("/status")).json()
    return history


async def test_each_judged_window_is_recorded_oldest_first(proxy_factory: Any) -> None:
    proxy = await proxy_factory(canary=HOLDING_CANARY)
    doc = await _rollout(
        proxy, lambda d: len(d["windows"]) >= 3 and d["windows"][-1]["candidate"]["requests"] > 0
    )
    log, rollout_id = doc.pop("log"), doc.pop("status")["rollout"]["rollout_id"]
    _valid(doc)
    windows = doc["windows"]
    holds = [e for e in log if e["actor"] == "controller"]
    assert len(windows) == len(holds) >= 3  # one record per decision the controller logged
    assert [w["ts"] for w in windows] == [e["ts"] for e in holds]  # oldest first, as logged
    for w in windows:
        assert (w["rollout_id"], w["phase"], w["step"], w["weight"], w["action"]) == (
            rollout_id,
            "canary",
            0,
            10,
            "HOLD",
        )
        for role in ("baseline", "candidate"):
            v = w[role]
            assert v["source"] == "live"
            assert v["error_rate"] == (v["failures"] / v["requests"] if v["requests"] else None)
    last = windows[-1]
    for role in ("baseline", "candidate"):
        q = last[role]["latency_ms"]
        assert last[role]["requests"] > 0 and 0 < q["p50"] <= q["p95"] <= q["p99"], (role, q)
    # The step's evidence only grows between its windows: each is every sample since the step began.
    counts = [w["baseline"]["requests"] for w in windows]
    assert counts == sorted(counts)
    # The timeline folds the run of HOLDs into one row after the operator's start, and ends with the pause.
    rows = doc["timeline"]
    assert [(r["action"], r["actor"], r["count"]) for r in rows] == [
        ("start", "ops", 1),
        ("HOLD", "controller", len(holds)),
        ("pause", "ops", 1),
    ]
    assert rows[1]["first_ts"] == holds[0]["ts"] and rows[1]["ts"] == holds[-1]["ts"]
    assert rows[1]["reason"] == holds[-1]["reason"] and rows[1]["reason"].startswith("inconclusive")
    start = next(e for e in log if e["action"] == "start")
    assert doc["rollout"] == {
        "started_at": start["ts"],
        "windows": len(holds),
        "ended_at": None,
        "ended_by": None,
        "actor": None,
    }

    async with proxy.admin_client() as ops:
        assert (await ops.post("/rollout/promote", json={"reason": "enough"})).status_code == 200
        after = (await ops.get("/history")).json()
    assert after["rollout"]["ended_by"] == "PROMOTE" and after["rollout"]["actor"] == "ops"
    assert after["rollout"]["windows"] == len(holds)
    assert after["timeline"][-1]["action"] == "PROMOTE" and after["timeline"][-1]["weight"] == 100


async def test_in_the_shadow_phase_the_candidate_side_is_its_mirrored_answers(proxy_factory: Any) -> None:
    proxy = await proxy_factory(canary=HOLDING_SHADOW, shadow={"sample": 1.0})
    doc = await _rollout(
        proxy, lambda d: len(d["windows"]) >= 2 and d["windows"][-1]["candidate"]["requests"] > 0
    )
    status = doc.pop("status")
    doc.pop("log")
    _valid(doc)
    for w in doc["windows"]:
        assert (w["phase"], w["step"], w["weight"]) == ("shadow", -1, 0)
        assert w["baseline"]["source"] == "live" and w["candidate"]["source"] == "mirror"
    last = doc["windows"][-1]["candidate"]
    assert last["latency_ms"]["p95"] is not None and last["decision_rate"] is not None
    # The status carries the same mirrored figures while the phase is shadow; paused, they are gone.
    assert status["rollout"]["phase"] == "paused" and "mirror" not in status["controller"]["window"]
    assert status["controller"]["shadow_samples"] == 1_000_000

    async with proxy.admin_client() as ops:
        assert (await ops.post("/rollout/resume")).status_code == 200
        shadow = (await ops.get("/status")).json()
    mirror = shadow["controller"]["window"]["mirror"]
    assert mirror["source"] == "mirror" and mirror["requests"] >= last["requests"]
    assert shadow["controller"]["window"]["candidate"]["requests"] == 0  # no live candidate traffic
