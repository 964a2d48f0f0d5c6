"""The sample model over real loopback sockets: scoring, knobs, test endpoints, run-time control, CLI."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import random
import re
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any

import aiohttp
import jsonschema
import orjson
import pytest
import yarl

from proxy.demo.sample_model import (
    REGIONS,
    ModelBehavior,
    RunningModel,
    features_generator,
    pattern_bytes,
    score_features,
    start_sample_model,
)
from tests.helpers.paths import ROOT

REQUEST_SCHEMA = json.loads((ROOT / "config/schemas/infer_request.json").read_text())
RESPONSE_SCHEMA = json.loads((ROOT / "config/schemas/infer_response.json").read_text())
REQUEST_VALIDATOR = jsonschema.Draft202012Validator(REQUEST_SCHEMA)
RESPONSE_VALIDATOR = jsonschema.Draft202012Validator(RESPONSE_SCHEMA)
BODY = {"features": {"amount": 250.0, "tenure_months": 4, "txn_24h": 6, "region": "br-ne"}, "user_id": "u-1"}


@pytest.fixture(autouse=True)
def no_server_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Handler crashes are logged by aiohttp or asyncio, not raised to the client: fail the test on them."""
    with caplog.at_level(logging.ERROR):
        yield
    records = [r for when in ("setup", "call") for r in caplog.get_records(when)]
    assert not [r for r in records if r.name.startswith(("asyncio", "aiohttp"))], caplog.text


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def model() -> AsyncIterator[RunningModel]:
    async with await start_sample_model(ModelBehavior("v1", seed=1)) as running:
        yield running


async def infer(session: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any, str | None]:
    async with session.post(f"{url}/v1/infer", data=orjson.dumps(body)) as r:
        return r.status, await r.json(content_type=None), r.headers.get("x-model-version")


async def infer_all(
    session: aiohttp.ClientSession, url: str, bodies: list[Any], concurrency: int = 32
) -> list[tuple[int, Any, str | None]]:
    gate = asyncio.Semaphore(concurrency)

    async def one(body: Any) -> tuple[int, Any, str | None]:
        async with gate:
            return await infer(session, url, body)

    return await asyncio.gather(*(one(b) for b in bodies))


def generated(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [features_generator(rng) for _ in range(n)]


def test_packaged_schemas_are_byte_identical_to_config_copies() -> None:
    for name in ("infer_request.json", "infer_response.json"):
        assert (ROOT / "proxy/schemas" / name).read_bytes() == (ROOT / "config/schemas" / name).read_bytes()
        jsonschema.Draft202012Validator.check_schema(json.loads((ROOT / "config/schemas" / name).read_text()))


async def test_same_input_gives_the_same_score_and_fresh_noise_fields(
    model: RunningModel, session: aiohttp.ClientSession
) -> None:
    (s1, a, v1), (s2, b, v2) = [await infer(session, model.url, BODY) for _ in range(2)]
    assert s1 == s2 == 200 and v1 == v2 == "v1"
    RESPONSE_VALIDATOR.validate(a)
    RESPONSE_VALIDATOR.validate(b)
    assert a["score"] == b["score"] == round(score_features(BODY["features"]), 6)
    assert a["decision"] is b["decision"] is (a["score"] >= 0.5)
    assert a["model_version"] == "v1"
    assert a["prediction_id"] != b["prediction_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", a["prediction_id"])
    assert datetime.fromisoformat(a["served_at"]).utcoffset() is not None


def test_score_is_a_monotone_sigmoid_of_the_logit() -> None:
    f = BODY["features"]
    base = score_features(f)
    assert 0 < base < 1
    assert score_features(f, drift=0.5) > base > score_features(f, drift=-0.5)
    logit = math.log(base / (1 - base))
    assert score_features(f, drift=0.3) == pytest.approx(1 / (1 + math.exp(-(logit + 0.3))))
    assert score_features({**f, "amount": 1e9, "txn_24h": 100_000}) == pytest.approx(1.0)
    assert score_features({**f, "tenure_months": 1200, "amount": 0}) == pytest.approx(0.0, abs=1e-9)


async def test_positive_drift_raises_the_decision_rate(session: aiohttp.ClientSession) -> None:
    bodies = generated(2000, seed=7)
    async with (
        await start_sample_model(ModelBehavior("v1")) as base,
        await start_sample_model(ModelBehavior("v2", drift=0.5)) as drifted,
    ):
        a, b = await asyncio.gather(
            infer_all(session, base.url, bodies), infer_all(session, drifted.url, bodies)
        )
    assert all(status == 200 for status, _, _ in a + b)
    rate_a = sum(doc["decision"] for _, doc, _ in a) / len(a)
    rate_b = sum(doc["decision"] for _, doc, _ in b) / len(b)
    # About 23% -> 37% on generated traffic; 10 pp is far outside sampling noise at n=2000 (sd ~1 pp).
    assert 0.15 < rate_a < 0.35
    assert rate_b - rate_a > 0.10
    assert all(y["score"] > x["score"] for (_, x, _), (_, y, _) in zip(a, b, strict=True))


async def test_error_rate_matches_the_observed_share(session: aiohttp.ClientSession) -> None:
    n, p = 1000, 0.2
    async with await start_sample_model(ModelBehavior("v1", error_rate=p, seed=11)) as running:
        results = await infer_all(session, running.url, generated(n, seed=3))
    errors = [doc for status, doc, _ in results if status == 500]
    assert {status for status, _, _ in results} == {200, 500}
    # Binomial sd is sqrt(n p (1-p)) ~ 12.6; 5 sd keeps this test from ever flaking.
    assert abs(len(errors) - n * p) < 5 * math.sqrt(n * p * (1 - p))
    assert errors[0] == {"error": "injected failure", "model_version": "v1"}
    assert all(version == "v1" for _, _, version in results)


async def test_schema_breaks_break_the_response_schema(session: aiohttp.ClientSession) -> None:
    async with await start_sample_model(ModelBehavior("v1", schema_break_rate=1.0, seed=5)) as running:
        results = await infer_all(session, running.url, generated(60, seed=1))
    docs = [doc for status, doc, _ in results if status == 200]
    assert len(docs) == 60
    assert not any(RESPONSE_VALIDATOR.is_valid(doc) for doc in docs)
    assert any(doc.get("score") == 1.7 for doc in docs) and any("score" not in doc for doc in docs)


async def test_invalid_requests_get_400_even_when_errors_are_injected(session: aiohttp.ClientSession) -> None:
    features = BODY["features"]
    bad_bodies: list[Any] = [
        {},
        [],
        {"features": {**features, "amount": -1}},
        {"features": {**features, "region": "mars"}},
        {"features": {**features, "tenure_months": 1.5}},
        {"features": {**features, "shoe_size": 42}},
        {"features": {k: v for k, v in features.items() if k != "txn_24h"}},
        {"features": features, "user_id": 7},
    ]
    async with await start_sample_model(ModelBehavior("v1", error_rate=1.0)) as running:
        for body in bad_bodies:
            status, doc, version = await infer(session, running.url, body)
            assert (status, version) == (400, "v1"), body
            assert doc["error"] == "request does not match the schema"
        async with session.post(f"{running.url}/v1/infer", data=b'{"features":') as r:
            assert r.status == 400 and (await r.json())["error"] == "invalid JSON"
        async with session.get(f"{running.url}/v1/infer") as r:
            assert r.status == 405 and r.headers["x-model-version"] == "v1"


async def test_latency_delays_infer_by_at_least_latency_ms(session: aiohttp.ClientSession) -> None:
    async with await start_sample_model(ModelBehavior("v1", latency_ms=30)) as running:
        loop = asyncio.get_running_loop()
        started = loop.time()
        status, _, _ = await infer(session, running.url, BODY)
        # A lower bound only: sleeps never end early, so this cannot flake on a slow machine.
        assert status == 200 and loop.time() - started >= 0.03


async def test_healthz_and_unmatched_paths(model: RunningModel, session: aiohttp.ClientSession) -> None:
    async with session.get(f"{model.url}/healthz") as r:
        assert r.status == 200 and r.headers["x-model-version"] == "v1"
    for method, path in [("GET", "/v2/other"), ("DELETE", "/a/b"), ("POST", "/healthz")]:
        async with session.request(method, f"{model.url}{path}?q=1") as r:
            assert r.status == 200 and r.headers["x-model-version"] == "v1"
            assert await r.json() == {"path": path, "method": method, "version": "v1"}


async def test_echo_reports_headers_in_order_and_body_digest(
    model: RunningModel, session: aiohttp.ClientSession
) -> None:
    body = random.Random(1).randbytes(3 * 1024 * 1024)  # above the infer size limit: echo streams
    headers = [("X-Mixed-Case", "A"), ("x-dup", "1"), ("x-dup", "2"), ("Content-Type", "application/x-bin")]
    url = yarl.URL(f"{model.url}/echo?a=1&b=%20", encoded=True)
    async with session.put(url, data=body, headers=headers) as r:
        assert r.status == 200
        doc = await r.json()
    assert (doc["method"], doc["path"], doc["query_string"]) == ("PUT", "/echo", "a=1&b=%20")
    assert doc["raw_path"] == "/echo?a=1&b=%20"
    assert doc["body_length"] == len(body)
    assert doc["body_sha256"] == hashlib.sha256(body).hexdigest()
    sent = [tuple(h) for h in doc["headers"]]
    assert [h for h in sent if h[0] in ("X-Mixed-Case", "x-dup")] == [
        ("X-Mixed-Case", "A"),
        ("x-dup", "1"),
        ("x-dup", "2"),
    ]
    assert ("Content-Length", str(len(body))) in sent


async def test_bytes_streams_exactly_n_pattern_bytes(
    model: RunningModel, session: aiohttp.ClientSession
) -> None:
    n, chunk = 12_345, 1000
    async with session.get(f"{model.url}/bytes", params={"n": n, "chunk": chunk}) as r:
        assert r.headers["transfer-encoding"] == "chunked" and "content-length" not in r.headers
        assert await r.read() == pattern_bytes(n)
    async with session.get(f"{model.url}/bytes", params={"n": 5000, "framing": "length"}) as r:
        assert r.headers["content-length"] == "5000"
        assert await r.read() == pattern_bytes(5000)
    async with session.get(f"{model.url}/bytes", params={"n": "-1"}) as r:
        assert r.status == 400


async def test_bytes_streams_50_mb(model: RunningModel, session: aiohttp.ClientSession) -> None:
    n = 50 * 1024 * 1024
    received, digest = 0, hashlib.sha256()
    async with session.get(f"{model.url}/bytes", params={"n": n}) as r:
        async for piece in r.content.iter_chunked(1 << 20):
            received += len(piece)
            digest.update(piece)
    assert received == n
    expected = hashlib.sha256(pattern_bytes(n)).hexdigest()
    assert digest.hexdigest() == expected


async def test_clients_leaving_mid_exchange_are_not_server_errors(
    model: RunningModel, session: aiohttp.ClientSession
) -> None:
    for path in ("/bytes?n=100000000", "/sse?n=100000&interval_ms=0"):
        async with session.get(f"{model.url}{path}") as r:
            await r.content.readexactly(1000)
            r.close()  # drops the connection with the body unread
    for path in ("/echo", "/v1/infer"):
        reader, writer = await asyncio.open_connection("127.0.0.1", model.port)
        writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n".encode() + b"{")
        await writer.drain()
        writer.close()
        await writer.wait_closed()
    # A later request on a fresh connection still works, and the runner's shutdown waits for the handlers
    # above to end; any traceback they logged fails this test through no_server_errors.
    status, _, _ = await infer(session, model.url, BODY)
    assert status == 200
    await model.close()


async def test_sse_streams_n_events(model: RunningModel, session: aiohttp.ClientSession) -> None:
    async with session.get(f"{model.url}/sse", params={"n": 4, "interval_ms": 1}) as r:
        assert r.headers["content-type"] == "text/event-stream"
        text = (await r.read()).decode()
    events = [e for e in text.split("\n\n") if e]
    assert len(events) == 4
    assert events[3] == 'id: 3\nevent: tick\ndata: {"i":3,"version":"v1"}'


async def test_behavior_changes_at_run_time_over_http_and_in_process(
    model: RunningModel, session: aiohttp.ClientSession
) -> None:
    _, before, _ = await infer(session, model.url, BODY)
    async with session.put(f"{model.url}/_control/behavior", json={"version": "v2", "drift": 1.0}) as r:
        assert r.status == 200
        assert (await r.json())["version"] == "v2"
    assert model.model.behavior == ModelBehavior("v2", drift=1.0, seed=1)
    status, after, version = await infer(session, model.url, BODY)
    assert (status, after["model_version"], version) == (200, "v2", "v2")
    assert after["score"] > before["score"]

    for bad in ({"error_rate": 1.5}, {"drift": "high"}, {"versoin": "v3"}, [1], {"seed": 1.5}):
        async with session.put(f"{model.url}/_control/behavior", json=bad) as r:
            assert r.status == 400, bad
    async with session.get(f"{model.url}/_control/behavior") as r:
        assert (await r.json())["version"] == "v2"

    # A drift for one region's requests only: other regions score as before.
    us = {**BODY, "features": {**BODY["features"], "region": "us-east"}}
    _, us_before, _ = await infer(session, model.url, us)
    async with session.put(f"{model.url}/_control/behavior", json={"region_drift": {"us-east": -2.0}}) as r:
        assert r.status == 200 and (await r.json())["region_drift"] == {"us-east": -2.0}
    _, us_after, _ = await infer(session, model.url, us)
    _, br_ne, _ = await infer(session, model.url, BODY)
    assert us_after["score"] < us_before["score"] and br_ne["score"] == after["score"]

    model.model.set_behavior(ModelBehavior("v3", error_rate=1.0))
    status, _, version = await infer(session, model.url, BODY)
    assert (status, version) == (500, "v3")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"version": ""},
        {"version": "v1", "error_rate": 1.01},
        {"version": "v1", "schema_break_rate": -0.1},
        {"version": "v1", "latency_ms": -1},
        {"version": "v1", "drift": math.nan},
        {"version": "v1", "drift": math.inf},
        {"version": "v1", "seed": True},
        {"version": "v1", "region_drift": {"mars": 1.0}},
        {"version": "v1", "region_drift": {"br-ne": math.nan}},
        {"version": "v1", "region_drift": [("br-ne", 1.0)]},
    ],
)
def test_behavior_rejects_impossible_values(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ModelBehavior(**kwargs)


def test_features_generator_is_valid_deterministic_and_realistic() -> None:
    bodies = generated(2000, seed=42)
    assert bodies == generated(2000, seed=42)
    assert all(REQUEST_VALIDATOR.is_valid(b) for b in bodies)
    assert all(re.fullmatch(r"u-[0-9]+", b["user_id"]) for b in bodies)
    counts = {r: sum(b["features"]["region"] == r for b in bodies) for r in REGIONS}
    assert max(counts, key=counts.__getitem__) == "br-se" and min(counts.values()) > 100
    amounts = sorted(b["features"]["amount"] for b in bodies)
    assert 30 < amounts[len(amounts) // 2] < 120 and amounts[-1] > 500


async def test_main_serves_until_sigterm(session: aiohttp.ClientSession) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy.demo.sample_model",
        "--port",
        "0",
        "--version",
        "v7",
        "--drift",
        "0.3",
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        async with asyncio.timeout(20):
            line = (await proc.stderr.readline()).decode()
        match = re.search(r"http://127\.0\.0\.1:[0-9]+", line)
        assert match, line
        status, doc, version = await infer(session, match.group(0), BODY)
        assert (status, doc["model_version"], version) == (200, "v7", "v7")
        assert doc["score"] == round(score_features(BODY["features"], drift=0.3), 6)
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
