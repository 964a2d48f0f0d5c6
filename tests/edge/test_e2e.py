"""Client authentication and rate limits through the real proxy: real sockets, a counting upstream."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson
import pytest

from proxy.config.load import load_config
from tests.helpers.config import config_doc, write_config
from tests.helpers.faulty_upstream import Fault, FaultyUpstream
from tests.helpers.metrics import metric_samples, sample
from tests.helpers.proxy_runner import start_proxy

KEY_CHECKOUT = "rg_checkout-key-9f8e7d6c5b4a39281706f5e4d3c2b1a0"
KEY_REPORTS = "rg_reports-key-0a1b2c3d4e5f60718293a4b5c6d7e8f9"
HS_SECRET = "e2e-hs256-secret-0123456789abcdef0123"


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def edge_doc(tmp_path: Path, upstream: str, **over: Any) -> dict[str, Any]:
    doc = config_doc(
        tmp_path,
        upstream,
        upstream,
        routes=[
            {"name": "infer", "path": "/v1/infer", "auth": {"roles": ["scorer"]}},
            {"name": "open", "path": "/v1/open"},
        ],
        auth={
            "api_keys": [
                {"name": "checkout", "roles": ["scorer"], "key_sha256": sha(KEY_CHECKOUT)},
                {"name": "reports", "roles": ["reader"], "key_sha256": sha(KEY_REPORTS)},
            ],
            "jwt": {"keys": [{"alg": "HS256", "secret": "env:RG_TEST_E2E_JWT"}], "audience": "rollguard"},
        },
        rate_limits=[{"route": "infer", "per": "client", "rate": "1/h", "burst": 5}],
    )
    doc.update(over)
    return doc


@pytest.fixture
async def edge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("RG_TEST_E2E_JWT", HS_SECRET)
    async with FaultyUpstream(Fault.OK) as upstream:
        doc = edge_doc(tmp_path, upstream.url)
        proxy, stop, task = await start_proxy(load_config(write_config(tmp_path, doc)))
        try:
            yield proxy, upstream
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)


def access_lines(tmp_path: Path) -> tuple[bytes, list[dict[str, Any]]]:
    raw = (tmp_path / "access.log").read_bytes()
    return raw, [orjson.loads(x) for x in raw.splitlines()]


async def test_credentials_and_allow_lists_through_the_proxy(tmp_path: Path, edge: Any) -> None:
    proxy, upstream = edge
    token = jwt.encode(
        {"sub": "jwt-svc", "roles": "scorer", "aud": "rollguard", "exp": int(time.time()) + 60},
        HS_SECRET,
        "HS256",
    )
    async with httpx.AsyncClient(base_url=proxy.data_url) as c:
        ok = await c.post(
            "/v1/infer", json={}, headers={"authorization": f"Bearer {KEY_CHECKOUT}", "x-request-id": "ok-1"}
        )
        by_header = await c.post(
            "/v1/infer", json={}, headers={"x-api-key": KEY_CHECKOUT, "x-request-id": "ok-2"}
        )
        by_jwt = await c.post(
            "/v1/infer", json={}, headers={"authorization": f"Bearer {token}", "x-request-id": "ok-3"}
        )
        wrong = await c.post(
            "/v1/infer",
            json={},
            headers={"authorization": f"Bearer {KEY_CHECKOUT}x", "x-request-id": "bad-1"},
        )
        missing = await c.post("/v1/infer", json={}, headers={"x-request-id": "bad-2"})
        forbidden = await c.post(
            "/v1/infer", json={}, headers={"x-api-key": KEY_REPORTS, "x-request-id": "bad-3"}
        )
        open_anon = await c.get("/v1/open", headers={"x-request-id": "open-1"})
        unmatched = await c.get("/elsewhere", headers={"x-request-id": "open-2"})
    assert [ok.status_code, by_header.status_code, by_jwt.status_code] == [200, 200, 200]
    assert [open_anon.status_code, unmatched.status_code] == [200, 200]
    assert upstream.requests_seen == 5  # the three refused never reached it

    assert wrong.status_code == 401
    assert wrong.headers["content-type"] == "application/problem+json"
    assert wrong.headers["www-authenticate"].startswith('Bearer realm="rollguard", error="invalid_token"')
    problem = wrong.json()
    assert problem["status"] == 401 and problem["request_id"] == "bad-1"
    assert KEY_CHECKOUT not in wrong.text and KEY_CHECKOUT not in wrong.headers["www-authenticate"]
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == 'Bearer realm="rollguard"'
    assert forbidden.status_code == 403 and forbidden.json()["title"] == "Forbidden"
    assert "reports" in forbidden.json()["detail"]

    samples = await metric_samples(proxy.admin_url)
    for reason, n in {"unknown_key": 1, "missing": 1, "forbidden": 1}.items():
        assert sample(samples, "rollguard_auth_failures_total", route="infer", reason=reason) == n
    for code, n in {"401": 2, "403": 1}.items():
        assert sample(samples, "rollguard_local_responses_total", route="infer", code=code) == n
    assert sample(samples, "rollguard_requests_total", code="401") == 0  # never against a version


async def test_access_log_carries_names_not_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RG_TEST_E2E_JWT", HS_SECRET)
    token = jwt.encode(
        {"sub": "alice@example.com", "roles": ["scorer"], "aud": "rollguard", "exp": int(time.time()) + 60},
        HS_SECRET,
        "HS256",
    )
    async with FaultyUpstream(Fault.OK) as upstream:
        proxy, stop, task = await start_proxy(
            load_config(write_config(tmp_path, edge_doc(tmp_path, upstream.url)))
        )
        async with httpx.AsyncClient(base_url=proxy.data_url) as c:
            await c.post("/v1/infer", json={}, headers={"x-api-key": KEY_CHECKOUT, "x-request-id": "ok-1"})
            await c.post(
                "/v1/infer", json={}, headers={"authorization": f"Bearer {token}", "x-request-id": "ok-2"}
            )
            await c.post(
                "/v1/infer", json={}, headers={"x-api-key": KEY_CHECKOUT + "zz", "x-request-id": "bad-1"}
            )
            await c.post(
                "/v1/infer",
                json={},
                headers={"authorization": f"Bearer {token[:-4]}AAAA", "x-request-id": "bad-2"},
            )
            await c.get("/v1/open", headers={"x-request-id": "open-1"})
        stop.set()
        await task  # a stop flushes the log
    raw, lines = access_lines(tmp_path)
    by_id = {x["request_id"]: x for x in lines}
    assert by_id["ok-1"]["client_name"] == "checkout" and by_id["ok-1"]["status"] == 200
    # A JWT subject that is an email is pseudonymised like any other personal data.
    assert by_id["ok-2"]["status"] == 200 and by_id["ok-2"]["client_name"].startswith("<email:")
    assert by_id["bad-1"]["status"] == 401 and "client_name" not in by_id["bad-1"]
    assert by_id["bad-2"]["status"] == 401 and "signature" in by_id["bad-2"]["error"]
    assert "client_name" not in by_id["open-1"]
    for secret in (KEY_CHECKOUT, token, token.split(".")[2], token.split(".")[1], "alice@example.com"):
        assert secret.encode() not in raw


async def test_a_burst_gets_429s_with_retry_after_and_the_upstream_never_sees_them(
    tmp_path: Path, edge: Any
) -> None:
    proxy, upstream = edge
    async with httpx.AsyncClient(base_url=proxy.data_url) as c:
        answers = await asyncio.gather(
            *(c.post("/v1/infer", json={}, headers={"x-api-key": KEY_CHECKOUT}) for _ in range(12))
        )
        other = await c.post("/v1/infer", json={}, headers={"authorization": f"Bearer {KEY_CHECKOUT}"})
    codes = sorted(r.status_code for r in answers)
    assert codes == [200] * 5 + [429] * 7  # burst 5, then 1 per hour
    assert other.status_code == 429  # same client, other way of presenting the key
    limited = [r for r in answers if r.status_code == 429]
    for r in limited:
        assert r.headers["content-type"] == "application/problem+json"
        retry = int(r.headers["retry-after"])
        assert 3590 <= retry <= 3600  # the next request passes an hour after the burst
        assert r.json()["status"] == 429
    assert upstream.requests_seen == 5
    samples = await metric_samples(proxy.admin_url)
    assert sample(samples, "rollguard_local_responses_total", route="infer", code="429") == 8
    assert sample(samples, "rollguard_rate_limited_total", route="infer") == 8
    assert sample(samples, "rollguard_requests_total", route="infer", code="429") == 0
    assert sample(samples, "rollguard_requests_total", route="infer", code="200") == 5


async def test_refusal_comes_before_the_body_is_read(tmp_path: Path, edge: Any) -> None:
    """A client declaring a 50 MB body gets its 401 once 64 KiB have arrived, and the connection is closed."""
    proxy, upstream = edge
    host, port = proxy.data_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /v1/infer HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: 50000000\r\n\r\n"
    )
    # The listener buffers at most 64 KiB of a body before the app decides; it never waits for the rest.
    writer.write(b"{" + b" " * (128 * 1024))
    await writer.drain()
    async with asyncio.timeout(5):
        head = await reader.readuntil(b"\r\n\r\n")
        rest = await reader.read()  # the proxy closes: we never have to send the 50 MB
    writer.close()
    assert head.startswith(b"HTTP/1.1 401 ")
    assert b"connection: close" in head.lower()
    assert b'"status":401' in rest
    assert upstream.requests_seen == 0


async def test_a_client_that_expects_100_continue_is_refused_before_sending_any_body(
    tmp_path: Path, edge: Any
) -> None:
    proxy, upstream = edge
    host, port = proxy.data_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /v1/infer HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: 50000000\r\nexpect: 100-continue\r\n\r\n"
    )
    await writer.drain()
    async with asyncio.timeout(5):
        head = await reader.readuntil(b"\r\n\r\n")
        rest = await reader.read()
    writer.close()
    assert head.startswith(b"HTTP/1.1 401 ")  # no "100 Continue" first: the body is never asked for
    assert b"connection: close" in head.lower()
    assert b'"status":401' in rest
    assert upstream.requests_seen == 0
