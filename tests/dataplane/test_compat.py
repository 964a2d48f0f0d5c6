"""``routes[].compat_schemas`` end to end: older response schemas that consumers still read, checked
against the candidate's live answers (served in canary, mirrored in shadow) and counted in
``rollguard_compat_violations_total{route,schema}``, never changing what a client receives."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web

from proxy.config.load import load_config
from tests.helpers.config import config_doc, write_config
from tests.helpers.metrics import metric_samples, sample
from tests.helpers.models import Models
from tests.helpers.proxy_runner import RunningProxy, start_proxy
from tests.helpers.tokens import VIEWER_TOKEN
from tests.helpers.traffic import VALID_BODY

COMPAT = "rollguard_compat_violations_total"
# The candidate's answer: today's contract, without the ``decision`` field that older readers still need.
DROPPED = orjson.dumps(
    {"score": 0.7, "model_version": "v2", "prediction_id": "p-1", "served_at": "2026-01-01T00:00:00Z"}
)
SCHEMAS = {
    # today's response contract: decision became optional
    "infer_response_v2.json": {"type": "object", "required": ["score", "model_version"]},
    # what older consumers read: both need decision (v0 also a boolean one), so the candidate breaks both
    "infer_response_v1.json": {"type": "object", "required": ["score", "decision"]},
    "infer_response_v0.json": {
        "type": "object",
        "required": ["score", "decision", "model_version"],
        "properties": {"decision": {"type": "boolean"}},
    },
    # a reader of the score alone is still served
    "score_only.json": {"type": "object", "required": ["score"], "properties": {"score": {"type": "number"}}},
}
COMPAT_PATHS = ["schemas/infer_response_v1.json", "schemas/infer_response_v0.json", "schemas/score_only.json"]
NAMES = ("infer_response_v1", "infer_response_v0", "score_only")


@contextlib.asynccontextmanager
async def json_upstream(body: bytes, status: int = 200) -> AsyncIterator[str]:
    """A model server on loopback that answers every request with ``body`` as JSON; yields its URL."""

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=body, status=status, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def write_schemas(folder: Path) -> None:
    (folder / "schemas").mkdir(exist_ok=True)
    for name, schema in SCHEMAS.items():
        (folder / "schemas" / name).write_text(json.dumps(schema), encoding="utf-8")


def infer_route(**over: Any) -> dict[str, Any]:
    """The route, with schema paths relative to the config file's folder (the test's tmp_path)."""
    route: dict[str, Any] = {
        "name": "infer",
        "path": "/v1/infer",
        "methods": ["POST"],
        "response_schema": "schemas/infer_response_v2.json",
        "score": "/score",
        "compat_schemas": COMPAT_PATHS,
    }
    route.update(over)
    return {k: v for k, v in route.items() if v is not None}


@pytest.fixture
async def start(tmp_path: Path, models: Models) -> AsyncIterator[Any]:
    """``await start(baseline=url, candidate=url, **overrides)``: a proxy in this loop, stopped at the end."""
    write_schemas(tmp_path)
    running: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    async def factory(
        baseline: str | None = None, candidate: str | None = None, **overrides: Any
    ) -> RunningProxy:
        doc = config_doc(
            tmp_path,
            baseline or models.baseline.url,
            candidate or models.candidate.url,
            **{"routes": [infer_route()], **overrides},
        )
        proxy, stop, task = await start_proxy(load_config(write_config(tmp_path, doc)))
        running.append((stop, task))
        return proxy

    yield factory
    for stop, task in running:
        stop.set()
        await asyncio.wait_for(task, 20)


async def set_weight(proxy: RunningProxy, weight: float) -> None:
    async with proxy.admin_client() as admin:
        r = await admin.put("/weights", json={"canary": weight})
        assert r.status_code == 200, r.text


async def report(proxy: RunningProxy, name: str) -> dict[str, Any]:
    async with proxy.admin_client(VIEWER_TOKEN) as admin:
        r = await admin.get(f"/reports/{name}")
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    return doc


def compat_counts(samples: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> dict[str, float]:
    return {
        dict(labels)["schema"]: value
        for (name, labels), value in samples.items()
        if name == COMPAT and dict(labels)["route"] == "infer"
    }


async def test_every_route_and_schema_is_a_series_at_zero_before_any_traffic(start: Any) -> None:
    proxy = await start()
    assert compat_counts(await metric_samples(proxy.admin_url)) == dict.fromkeys(NAMES, 0.0)


@pytest.mark.parametrize(
    "route",
    [
        pytest.param(infer_route(), id="with-response-schema-and-score"),
        pytest.param(infer_route(response_schema=None, score=None), id="compat-schemas-only"),
    ],
)
async def test_a_candidate_answer_is_counted_once_per_schema_it_breaks_and_reaches_the_client_unchanged(
    start: Any, route: dict[str, Any]
) -> None:
    async with json_upstream(DROPPED) as candidate:
        proxy = await start(candidate=candidate, routes=[route])
        await set_weight(proxy, 100)
        async with httpx.AsyncClient(base_url=proxy.data_url) as c:
            answers = [await c.post("/v1/infer", json=VALID_BODY) for _ in range(3)]
    for r in answers:
        assert r.status_code == 200 and r.headers["x-rollguard-version"] == "v2"
        assert r.content == DROPPED  # an observation: the bytes the candidate sent, as it sent them
    samples = await metric_samples(proxy.admin_url)
    assert compat_counts(samples) == {"infer_response_v1": 3, "infer_response_v0": 3, "score_only": 0}
    # Not a failure of the candidate: no contract breach, no fallback, nothing for the gates.
    assert sample(samples, "rollguard_upstream_errors_total", role="candidate") == 0
    assert sample(samples, "rollguard_schema_violations_total", role="candidate") == 0
    assert sample(samples, "rollguard_fallbacks_total") == 0
    assert sample(samples, "rollguard_requests_total", role="candidate", code="200") == 3

    staging = await report(proxy, "staging_report.json")
    versions = staging["routes"]["infer"]["versions"]
    expected = {"infer_response_v0": 3, "infer_response_v1": 3, "score_only": 0}
    assert versions["candidate"]["compat_violations"] == expected
    assert "compat_violations" not in versions["baseline"]  # never checked
    assert staging["totals"]["candidate"]["compat_violations"] == expected


async def test_the_baseline_answers_are_not_checked(start: Any) -> None:
    async with json_upstream(DROPPED) as baseline:
        proxy = await start(baseline=baseline)  # weight 0: the baseline answers everything
        async with httpx.AsyncClient(base_url=proxy.data_url) as c:
            answers = [await c.post("/v1/infer", json=VALID_BODY) for _ in range(3)]
    assert all(r.status_code == 200 and r.content == DROPPED for r in answers)
    assert compat_counts(await metric_samples(proxy.admin_url)) == dict.fromkeys(NAMES, 0.0)


@pytest.mark.parametrize(
    ("status", "limits", "fallback"),
    [
        pytest.param(500, {}, "http_5xx", id="error-answer"),
        pytest.param(200, {"inspect_body_bytes": 16}, None, id="over-inspect-body-bytes"),
    ],
)
async def test_answers_that_are_not_inspected_are_not_checked(
    start: Any, status: int, limits: dict[str, Any], fallback: str | None
) -> None:
    async with json_upstream(DROPPED, status=status) as candidate:
        proxy = await start(candidate=candidate, limits=limits)
        await set_weight(proxy, 100)
        async with httpx.AsyncClient(base_url=proxy.data_url) as c:
            r = await c.post("/v1/infer", json=VALID_BODY)
    assert r.status_code == 200
    if fallback is None:
        assert r.headers["x-rollguard-version"] == "v2" and r.content == DROPPED
    else:
        assert r.headers["x-rollguard-version"] == "v1"  # the candidate's 500 was replaced
    samples = await metric_samples(proxy.admin_url)
    assert compat_counts(samples) == dict.fromkeys(NAMES, 0.0)
    if fallback is not None:
        assert sample(samples, "rollguard_fallbacks_total", reason=fallback) == 1


async def test_mirrored_answers_are_counted_and_reported_in_shadow_eval(start: Any) -> None:
    n = 4
    async with json_upstream(DROPPED) as candidate:
        proxy = await start(candidate=candidate, shadow={"sample": 1.0, "noise_sample": 0.0})
        async with httpx.AsyncClient(base_url=proxy.data_url) as c:
            answers = [await c.post("/v1/infer", json=VALID_BODY) for _ in range(n)]
        async with asyncio.timeout(10):
            while True:  # mirrors complete off the client's path
                ev = (await report(proxy, "shadow_eval.json"))["routes"].get("infer", {})
                if ev.get("pairs_total", 0) >= n:
                    break
                await asyncio.sleep(0.02)
    # The clients were answered by the baseline, the mirror never showed.
    assert all(r.status_code == 200 and r.headers["x-rollguard-version"] == "v1" for r in answers)
    assert all(r.json()["decision"] in (True, False) for r in answers)
    assert ev["compat"] == {
        "infer_response_v0": {"checked": n, "violations": n},
        "infer_response_v1": {"checked": n, "violations": n},
        "score_only": {"checked": n, "violations": 0},
    }
    samples = await metric_samples(proxy.admin_url)
    assert compat_counts(samples) == {"infer_response_v1": n, "infer_response_v0": n, "score_only": 0}
    assert sample(samples, "rollguard_shadow_requests_total", outcome="sent") == n


async def test_a_reload_compiles_the_files_names_a_bad_one_and_primes_the_new_series(
    tmp_path: Path, start: Any
) -> None:
    proxy = await start(routes=[infer_route(compat_schemas=None)])
    assert compat_counts(await metric_samples(proxy.admin_url)) == {}
    assert proxy.config.source is not None
    doc = config_doc(tmp_path, proxy.config.baseline.url, proxy.config.candidate.url)
    broken = copy.deepcopy(doc)
    broken["routes"] = [infer_route(compat_schemas=["schemas/score_only.json", "schemas/missing.json"])]
    write_config(tmp_path, broken)
    async with proxy.admin_client() as admin:
        refused = await admin.post("/config/reload")
        assert refused.status_code == 422, refused.text
        assert "routes[0].compat_schemas[1]: cannot read" in refused.json()["detail"]
        assert compat_counts(await metric_samples(proxy.admin_url)) == {}  # nothing applied

        doc["routes"] = [infer_route(compat_schemas=["schemas/score_only.json"])]
        write_config(tmp_path, doc)
        applied = await admin.post("/config/reload")
        assert applied.status_code == 200, applied.text
    assert compat_counts(await metric_samples(proxy.admin_url)) == {"score_only": 0.0}
