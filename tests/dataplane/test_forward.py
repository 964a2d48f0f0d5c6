"""The data plane end to end: real sample models, a fault-injecting upstream, real sockets."""

from __future__ import annotations

import asyncio
import hashlib
import math
import socket
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson
import pytest

from proxy.config.load import load_config
from proxy.demo.sample_model import pattern_bytes
from tests.helpers.config import config_doc, write_config
from tests.helpers.faulty_upstream import Fault, FaultyUpstream, refused_url
from tests.helpers.metrics import metric_samples, sample
from tests.helpers.models import Models
from tests.helpers.proxy_runner import start_proxy
from tests.helpers.tokens import OPERATOR_TOKEN
from tests.helpers.traffic import VALID_BODY, raw_http_server


async def set_weight(proxy: Any, weight: float) -> None:
    async with proxy.admin_client() as admin:
        r = await admin.put("/weights", json={"canary": weight})
        assert r.status_code == 200, r.text


async def test_answer_carries_version_and_request_id(proxy: Any) -> None:
    async with httpx.AsyncClient(base_url=proxy.data_url) as c:
        r = await c.post("/v1/infer", json=VALID_BODY, headers={"x-request-id": "client-id-42"})
        generated = await c.post("/v1/infer", json=VALID_BODY, headers={"x-request-id": "bad id with spaces"})
    assert r.status_code == 200
    assert r.headers["x-rollguard-version"] == "v1"
    assert r.headers["x-request-id"] == "client-id-42"
    assert r.json()["model_version"] == "v1"
    assert generated.headers["x-request-id"] != "bad id with spaces"
    assert len(generated.headers["x-request-id"]) == 32


async def test_split_is_weighted_and_sticky_through_the_proxy(proxy: Any) -> None:
    await set_weight(proxy, 25)
    n = 2000
    versions: dict[str, str] = {}
    # aiohttp, not httpx, for volume: httpx's pool manages ~130 requests/s at this concurrency.
    async with aiohttp.ClientSession(proxy.data_url) as c:
        sem = asyncio.Semaphore(32)

        async def one(i: int) -> str:
            async with sem, c.post("/v1/infer", json=VALID_BODY, headers={"x-user-id": f"user-{i}"}) as r:
                assert r.status == 200
                await r.read()
                return r.headers["x-rollguard-version"]

        for i, version in enumerate(await asyncio.gather(*(one(i) for i in range(n)))):
            versions[f"user-{i}"] = version
        share = sum(v == "v2" for v in versions.values()) / n
        # 4.5 standard errors of a binomial share at p=0.25: a false failure about once in 150,000 runs.
        assert abs(share - 0.25) < 4.5 * math.sqrt(0.25 * 0.75 / n), share
        for i in range(0, 200, 10):
            assert await one(i) == versions[f"user-{i}"]
    samples = await metric_samples(proxy.admin_url)
    assert sample(samples, "rollguard_requests_total", route="infer", version="v2") == sum(
        v == "v2" for v in versions.values()
    ) + sum(versions[f"user-{i}"] == "v2" for i in range(0, 200, 10))
    assert sample(samples, "rollguard_canary_weight_percent") == 25


async def test_unmatched_paths_go_to_the_baseline_unchanged(proxy: Any) -> None:
    await set_weight(proxy, 100)
    async with httpx.AsyncClient(base_url=proxy.data_url) as c:
        r = await c.get("/some/other/path?q=1")
        routed = await c.post("/v1/infer", json=VALID_BODY)
    assert r.status_code == 200
    assert r.json()["path"] == "/some/other/path"
    assert r.headers["x-rollguard-version"] == "v1"
    assert routed.headers["x-rollguard-version"] == "v2"  # the route does follow the weight
    samples = await metric_samples(proxy.admin_url)
    assert sample(samples, "rollguard_requests_total", route="unmatched", version="v1", code="200") == 1


async def test_request_header_hygiene(proxy: Any) -> None:
    headers = {
        "connection": "keep-alive, x-private-hop",
        "x-private-hop": "secret",
        "keep-alive": "timeout=5",
        "te": "trailers",
        "proxy-connection": "keep-alive",
        "x-rollguard-force": "candidate",
        "x-rollguard-token": "not-a-token",
        "x-forwarded-for": "6.6.6.6",
        "x-custom": "kept",
        "authorization": "Bearer end-to-end",
    }
    async with httpx.AsyncClient(base_url=proxy.data_url) as c:
        r = await c.post("/echo?a=1&b=%20x", content=b"hello", headers=headers)
    echo = r.json()
    got = {k.lower(): v for k, v in echo["headers"]}
    for dropped in (
        "x-private-hop",
        "keep-alive",
        "te",
        "proxy-connection",
        "x-rollguard-force",
        "x-rollguard-token",
        "transfer-encoding",
        "upgrade",
    ):
        assert dropped not in got, dropped
    assert "x-private-hop" not in got.get("connection", "")
    assert got["x-custom"] == "kept"
    assert got["authorization"] == "Bearer end-to-end"
    # The test client is on 127.0.0.1, a trusted peer in the test config: its chain is appended to.
    assert got["x-forwarded-for"] == "6.6.6.6, 127.0.0.1"
    assert got["x-forwarded-proto"] == "http"
    assert got["forwarded"].startswith("for=127.0.0.1;proto=http")
    assert got["x-request-id"] == r.headers["x-request-id"]
    assert echo["raw_path"] == "/echo?a=1&b=%20x"
    assert echo["body_sha256"] == hashlib.sha256(b"hello").hexdigest()
    assert r.headers["x-rollguard-version"] == "v1"  # the forged force header did nothing


async def test_untrusted_peer_cannot_forge_forwarded_headers(proxy_factory: Any) -> None:
    proxy = await proxy_factory(forwarded={"trusted": ["10.0.0.0/8"]})
    async with httpx.AsyncClient(base_url=proxy.data_url) as c:
        r = await c.get("/echo", headers={"x-forwarded-for": "6.6.6.6", "forwarded": "for=6.6.6.6"})
    got = {k.lower(): v for k, v in r.json()["headers"]}
    assert got["x-forwarded-for"] == "127.0.0.1"
    assert "6.6.6.6" not in got["forwarded"]


async def test_response_header_hygiene(proxy_factory: Any, tmp_path: Path, models: Models) -> None:
    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n"
            b"connection: keep-alive, x-hop-secret\r\nx-hop-secret: 1\r\nkeep-alive: timeout=5\r\n"
            b"x-rollguard-version: forged\r\nx-end-to-end: yes\r\n\r\nok"
        )
        await writer.drain()

    async with raw_http_server(upstream) as url:
        proxy = await proxy_factory(
            upstreams={
                "baseline": {"url": url, "version": "v1"},
                "candidate": {"url": models.candidate.url, "version": "v2"},
            }
        )
        async with httpx.AsyncClient(base_url=proxy.data_url) as c:
            r = await c.get("/anything")
    assert r.text == "ok"
    assert r.headers["x-end-to-end"] == "yes"
    assert "x-hop-secret" not in r.headers
    assert "keep-alive" not in r.headers
    assert r.headers.get_list("x-rollguard-version") == ["v1"]


async def test_force_header_needs_an_operator_token(proxy: Any) -> None:
    async with httpx.AsyncClient(base_url=proxy.data_url) as c:
        forced = await c.post(
            "/v1/infer",
            json=VALID_BODY,
            headers={"x-rollguard-force": "candidate", "x-rollguard-token": OPERATOR_TOKEN},
        )
        viewer = await c.post(
            "/v1/infer",
            json=VALID_BODY,
            headers={"x-rollguard-force": "candidate", "x-rollguard-token": "wrong"},
        )
        echoed = await c.get(
            "/echo", headers={"x-rollguard-force": "candidate", "x-rollguard-token": OPERATOR_TOKEN}
        )
    assert forced.headers["x-rollguard-version"] == "v2"
    assert viewer.headers["x-rollguard-version"] == "v1"
    assert echoed.headers["x-rollguard-version"] == "v2"
    names = {k.lower() for k, _ in echoed.json()["headers"]}
    assert "x-rollguard-token" not in names and "x-rollguard-force" not in names


async def test_wrong_force_tokens_are_counted_then_throttled_and_a_valid_one_still_forces(
    proxy: Any, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = {"x-rollguard-force": "candidate", "x-rollguard-token": "guess"}
    async with httpx.AsyncClient(base_url=proxy.data_url) as c:
        guesses = [await c.post("/v1/infer", json=VALID_BODY, headers=wrong) for _ in range(10)]
        throttled = await c.post("/v1/infer", json=VALID_BODY, headers=wrong)
        valid = await c.post(
            "/v1/infer",
            json=VALID_BODY,
            headers={"x-rollguard-force": "candidate", "x-rollguard-token": OPERATOR_TOKEN},
        )
    assert [r.headers["x-rollguard-version"] for r in guesses] == ["v1"] * 10  # served, unforced
    assert throttled.status_code == 429
    assert throttled.headers["content-type"] == "application/problem+json"
    assert 1 <= int(throttled.headers["retry-after"]) <= 60
    assert valid.status_code == 200 and valid.headers["x-rollguard-version"] == "v2"
    samples = await metric_samples(proxy.admin_url)
    assert sample(samples, "rollguard_auth_failures_total", route="infer", reason="force_token") == 10
    warnings = [r.getMessage() for r in caplog.records if r.name == "rollguard.force"]
    assert len(warnings) == 1 and "127.0.0.1" in warnings[0] and "guess" not in warnings[0]


async def test_contract_rejects_bad_request_with_problem_json(proxy: Any) -> None:
    async with httpx.AsyncClient(base_url=proxy.data_url) as c:
        bad = await c.post(
            "/v1/infer",
            json={"features": {"amount": -5, "tenure_months": 1, "txn_24h": 0, "region": "br-se"}},
        )
        nan = await c.post(
            "/v1/infer",
            content=b'{"features": {"amount": NaN}}',
            headers={"content-type": "application/json"},
        )
    assert bad.status_code == 400
    assert bad.headers["content-type"] == "application/problem+json"
    doc = bad.json()
    assert doc["status"] == 400 and "/features/amount" in doc["detail"]
    assert doc["request_id"] == bad.headers["x-request-id"]
    assert nan.status_code == 400 and "not valid JSON" in nan.json()["detail"]
    assert nan.json()["detail"].startswith("request body breaks the route's contract at /")
    samples = await metric_samples(proxy.admin_url)
    assert sample(samples, "rollguard_local_responses_total", route="infer", code="400") == 2
    assert sample(samples, "rollguard_requests_total") == 0  # no model answered
    assert sample(samples, "rollguard_schema_violations_total", direction="request", version="v1") == 2


@pytest.mark.parametrize(
    ("fault", "status", "kind"),
    [
        (Fault.RESET_BEFORE_HEADERS, 502, "reset"),
        (Fault.GARBAGE, 502, "protocol"),
        (Fault.DUPLICATE_CONTENT_LENGTH, 502, "protocol"),
        (Fault.HANG_BEFORE_HEADERS, 504, "timeout"),
    ],
)
async def test_upstream_failures_map_to_problem_json(
    proxy_factory: Any, models: Models, fault: Fault, status: int, kind: str
) -> None:
    async with FaultyUpstream(fault) as faulty:
        proxy = await proxy_factory(
            upstreams={
                "baseline": {"url": faulty.url, "version": "v1", "timeout": "500ms"},
                "candidate": {"url": models.candidate.url, "version": "v2"},
            }
        )
        async with httpx.AsyncClient(base_url=proxy.data_url) as c:
            r = await c.post("/v1/infer", json=VALID_BODY)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    doc = r.json()
    assert doc["status"] == status and doc["request_id"] == r.headers["x-request-id"]
    assert "baseline" in doc["detail"]
    if kind == "timeout":
        assert "timeout" in doc["detail"]
    samples = await metric_samples(proxy.admin_url)
    assert sample(samples, "rollguard_upstream_errors_total", role="baseline", kind=kind) == 1
    assert sample(samples, "rollguard_requests_total", role="baseline", code=str(status)) == 1


async def test_refused_upstream_is_502_without_fallback(proxy_factory: Any, models: Models) -> None:
    proxy = await proxy_factory(
        upstreams={
            "baseline": {"url": models.baseline.url, "version": "v1"},
            "candidate": {"url": refused_url(), "version": "v2"},
        },
        canary={"weight": 0, "fallback_to_baseline": False},
    )
    await set_weight(proxy, 100)
    async with httpx.AsyncClient(base_url=proxy.data_url) as c:
        r = await c.post("/v1/infer", json=VALID_BODY)
    assert r.status_code == 502
    assert "candidate" in r.json()["detail"] and "connect" in r.json()["detail"]
    samples = await metric_samples(proxy.admin_url)
    # A refused connection is retried once (safe: nothing was sent), then the client gets the 502.
    assert sample(samples, "rollguard_upstream_errors_total", role="candidate", kind="connect") == 2
    assert sample(samples, "rollguard_retries_total", role="candidate", reason="connect") == 1
    assert sample(samples, "rollguard_requests_total", role="candidate", code="502") == 1


@pytest.mark.parametrize(
    ("candidate_fault", "reason"),
    [
        (None, "connect"),
        (Fault.STATUS_500, "http_5xx"),
        (Fault.HANG_BEFORE_HEADERS, "timeout"),
        (Fault.RESET_BEFORE_HEADERS, "reset"),
    ],
)
async def test_failed_candidate_is_answered_by_the_baseline(
    proxy_factory: Any, models: Models, candidate_fault: Fault | None, reason: str
) -> None:
    async with FaultyUpstream(candidate_fault or Fault.OK) as faulty:
        proxy = await proxy_factory(
            upstreams={
                "baseline": {"url": models.baseline.url, "version": "v1", "timeout": "2s"},
                "candidate": {
                    "url": faulty.url if candidate_fault else refused_url(),
                    "version": "v2",
                    "timeout": "300ms",
                },
            },
        )
        await set_weight(proxy, 100)
        async with httpx.AsyncClient(base_url=proxy.data_url) as c:
            r = await c.post("/v1/infer", json=VALID_BODY, headers={"x-user-id": "u-1"})
    assert r.status_code == 200
    assert r.headers["x-rollguard-version"] == "v1"
    assert r.json()["model_version"] == "v1"
    samples = await metric_samples(proxy.admin_url)
    assert sample(samples, "rollguard_upstream_errors_total", role="candidate", kind=reason) == 1
    assert sample(samples, "rollguard_fallbacks_total", route="infer", reason=reason) == 1
    assert sample(samples, "rollguard_requests_total", role="baseline", code="200") == 1
    assert sample(samples, "rollguard_requests_total", role="candidate") == 0


async def test_candidate_contract_breach_falls_back(proxy_factory: Any, models: Models) -> None:
    from proxy.demo.sample_model import ModelBehavior

    models.candidate.model.set_behavior(ModelBehavior(version="v2", schema_break_rate=1.0))
    proxy = await proxy_factory()
    await set_weight(proxy, 100)
    async with httpx.AsyncClient(base_url=proxy.data_url) as c:
        r = await c.post("/v1/infer", json=VALID_BODY)
    assert r.status_code == 200 and r.headers["x-rollguard-version"] == "v1"
    samples = await metric_samples(proxy.admin_url)
    assert sample(samples, "rollguard_schema_violations_total", role="candidate", direction="response") == 1
    assert sample(samples, "rollguard_upstream_errors_total", role="candidate", kind="contract") == 1
    assert sample(samples, "rollguard_fallbacks_total", reason="contract") == 1


async def test_baseline_contract_breach_passes_or_502s_as_the_route_says(
    proxy_factory: Any, models: Models, tmp_path: Path
) -> None:
    from proxy.demo.sample_model import ModelBehavior

    models.baseline.model.set_behavior(ModelBehavior(version="v1", schema_break_rate=1.0))
    observe = await proxy_factory()
    route = dict(config_doc(tmp_path, "", "")["routes"][0], response_mode="enforce")
    enforce = await proxy_factory(routes=[route])
    async with httpx.AsyncClient() as c:
        passed = await c.post(observe.data_url + "/v1/infer", json=VALID_BODY)
        refused = await c.post(enforce.data_url + "/v1/infer", json=VALID_BODY)
    assert passed.status_code == 200 and passed.headers["x-rollguard-version"] == "v1"
    assert refused.status_code == 502 and refused.headers["content-type"] == "application/problem+json"
    assert "contract" in refused.json()["detail"]
    for proxy in (observe, enforce):
        samples = await metric_samples(proxy.admin_url)
        assert (
            sample(samples, "rollguard_schema_violations_total", role="baseline", direction="response") == 1
        )


async def test_upstream_5xx_passes_through_and_counts(proxy_factory: Any, models: Models) -> None:
    async with FaultyUpstream(Fault.STATUS_500) as faulty:
        proxy = await proxy_factory(
            upstreams={
                "baseline": {"url": faulty.url, "version": "v1"},
                "candidate": {"url": models.candidate.url, "version": "v2"},
            }
        )
        async with httpx.AsyncClient(base_url=proxy.data_url) as c:
            r = await c.post("/v1/infer", json=VALID_BODY)
    assert r.status_code == 500
    samples = await metric_samples(proxy.admin_url)
    assert sample(samples, "rollguard_upstream_errors_total", role="baseline", kind="http_5xx") == 1


async def test_reset_mid_body_cuts_the_client_response(proxy_factory: Any, models: Models) -> None:
    async with FaultyUpstream(Fault.RESET_MID_BODY) as faulty:
        proxy = await proxy_factory(
            upstreams={
                "baseline": {"url": faulty.url, "version": "v1"},
                "candidate": {"url": models.candidate.url, "version": "v2"},
            }
        )
        async with httpx.AsyncClient(base_url=proxy.data_url) as c:
            with pytest.raises(httpx.RemoteProtocolError):
                await c.get("/whatever")
    samples = await metric_samples(proxy.admin_url)
    assert sample(samples, "rollguard_upstream_errors_total", role="baseline", kind="reset") == 1


async def test_client_disconnect_cancels_the_upstream_call(proxy_factory: Any, models: Models) -> None:
    async with FaultyUpstream(Fault.HANG_BEFORE_HEADERS) as faulty:
        proxy = await proxy_factory(
            upstreams={
                "baseline": {"url": faulty.url, "version": "v1", "timeout": "60s"},
                "candidate": {"url": models.candidate.url, "version": "v2"},
            }
        )
        host, port = proxy.data_url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(5):
            await faulty.wait_for_requests(1)
            assert faulty.open_connections == 1
        writer.close()
        await writer.wait_closed()
        # The proxy notices the client is gone and closes its upstream connection: no call left behind.
        async with asyncio.timeout(5):
            await faulty.wait_for_open_connections(0)


async def test_websocket_upgrade_is_501(proxy: Any) -> None:
    async with httpx.AsyncClient(base_url=proxy.data_url) as c:
        r = await c.get(
            "/ws",
            headers={
                "connection": "upgrade",
                "upgrade": "websocket",
                "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
                "sec-websocket-version": "13",
            },
        )
    assert r.status_code == 501
    assert r.headers["content-type"] == "application/problem+json"


async def test_body_over_the_limit_is_413(proxy_factory: Any) -> None:
    proxy = await proxy_factory(limits={"max_body_bytes": "64KiB", "replay_body_bytes": "16KiB"})
    big = b"x" * (100 * 1024)

    async def chunks() -> Any:
        for i in range(0, len(big), 8192):
            yield big[i : i + 8192]

    async with httpx.AsyncClient(base_url=proxy.data_url) as c:
        declared = await c.post("/echo", content=big)
        streamed = await c.post("/echo", content=chunks())
        fits = await c.post("/echo", content=big[: 60 * 1024])
    assert declared.status_code == 413 and declared.json()["status"] == 413
    assert streamed.status_code == 413
    assert fits.status_code == 200
    assert fits.json()["body_sha256"] == hashlib.sha256(big[: 60 * 1024]).hexdigest()


async def test_large_request_body_streams_intact(proxy_factory: Any) -> None:
    proxy = await proxy_factory(limits={"max_body_bytes": "32MiB", "replay_body_bytes": "64KiB"})
    body = bytes(range(256)) * (20 * 4096)  # 20 MiB

    async def chunks() -> Any:
        for i in range(0, len(body), 65536):
            yield body[i : i + 65536]

    async with httpx.AsyncClient(base_url=proxy.data_url, timeout=30) as c:
        with_length = await c.post("/echo", content=body)
        chunked = await c.post("/echo", content=chunks())
    for r in (with_length, chunked):
        assert r.status_code == 200
        assert r.json()["body_length"] == len(body)
        assert r.json()["body_sha256"] == hashlib.sha256(body).hexdigest()
    samples = await metric_samples(proxy.admin_url)
    assert sample(samples, "rollguard_unbuffered_bodies_total", direction="request") == 2


async def test_sse_events_arrive_before_the_stream_ends(proxy: Any) -> None:
    async with httpx.AsyncClient(base_url=proxy.data_url, timeout=10) as c:
        async with c.stream("GET", "/sse", params={"n": 3, "interval_ms": 300}) as r:
            assert r.status_code == 200
            events = []
            async for line in r.aiter_lines():
                if line.startswith("data:"):
                    events.append(line)
                    if len(events) == 1:
                        # The first event is here while the upstream is still producing the rest.
                        assert not r.is_closed
    assert len(events) == 3


async def test_a_50mb_response_streams_through_whole(
    tmp_path: Path, models: Models, proxy_process: Any
) -> None:
    # memory growth: measured in benchmarks/bench_memory.py, not asserted here
    doc = config_doc(tmp_path, models.baseline.url, models.candidate.url, logging={"access_log": "off"})
    proc = proxy_process(write_config(tmp_path, doc))
    received = 0
    digest = hashlib.sha256()
    async with httpx.AsyncClient(base_url=proc.data_url, timeout=60) as c:
        async with c.stream("GET", "/bytes", params={"n": 50_000_000, "chunk": 65536}) as r:
            assert r.status_code == 200
            async for chunk in r.aiter_raw():
                received += len(chunk)
                digest.update(chunk)
    assert received == 50_000_000
    assert digest.hexdigest() == hashlib.sha256(pattern_bytes(50_000_000)).hexdigest()


async def test_access_log_has_one_line_per_request_without_query(tmp_path: Path, models: Models) -> None:
    doc = config_doc(tmp_path, models.baseline.url, models.candidate.url)
    proxy, stop, task = await start_proxy(load_config(write_config(tmp_path, doc)))
    async with httpx.AsyncClient(base_url=proxy.data_url) as c:
        await c.post("/v1/infer", json=VALID_BODY, headers={"x-request-id": "log-me-1"})
        await c.get("/echo?email=someone@example.com")
    stop.set()
    await task  # a stop flushes the log
    raw = (tmp_path / "access.log").read_bytes()
    lines = [orjson.loads(x) for x in raw.splitlines()]
    assert len(lines) == 2
    first = next(x for x in lines if x["request_id"] == "log-me-1")
    assert first["route"] == "infer" and first["status"] == 200 and first["version"] == "v1"
    assert first["latency_ms"] > 0 and first["upstream_ms"] > 0
    assert b"someone@example.com" not in raw


def test_port_taken_is_a_clear_error(tmp_path: Path) -> None:
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        doc = config_doc(tmp_path, "http://127.0.0.1:1", "http://127.0.0.1:2", listen=f"127.0.0.1:{port}")
        cfg = write_config(tmp_path, doc)
        res = subprocess.run(
            [sys.executable, "-m", "proxy", "serve", "--config", str(cfg)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert res.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in res.stderr
