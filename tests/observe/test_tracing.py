"""Tracing end to end: a real OTLP/HTTP receiver, real upstreams that record what they receive, the real
proxy. Spans are read as the collector receives them (protobuf, decoded with the OTLP message types);
each test stops its proxy first, which flushes the exporter (the lifespan's shutdown)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from proxy.config.load import load_config
from proxy.errors import ConfigError
from tests.helpers.config import config_doc, write_config
from tests.helpers.faulty_upstream import refused_url
from tests.helpers.proxy_runner import RunningProxy, start_proxy
from tests.helpers.tokens import OPERATOR_TOKEN, VIEWER_TOKEN
from tests.helpers.traffic import VALID_BODY, raw_http_server

ANSWER = orjson.dumps({"score": 0.7, "decision": True, "model_version": "x"})
ROUTE = {"name": "infer", "path": "/v1/infer", "methods": ["POST"]}
SERVER, CLIENT = 2, 3  # OTLP Span.SpanKind values
STATUS_ERROR = 2


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


@dataclass
class Span:
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent: str
    attrs: dict[str, Any]
    links: list[tuple[str, str]]
    status: int
    scope: str


@dataclass
class Collector:
    """An OTLP/HTTP traces endpoint: every exported span, decoded."""

    url: str = ""
    spans: list[Span] = field(default_factory=list)
    posts: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        msg = ExportTraceServiceRequest.FromString(await request.read())
        self.posts += 1
        for rs in msg.resource_spans:
            for ss in rs.scope_spans:
                for s in ss.spans:
                    self.spans.append(
                        Span(
                            name=s.name,
                            kind=s.kind,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent=s.parent_span_id.hex(),
                            attrs={a.key: _value(a.value) for a in s.attributes},
                            links=[(ln.trace_id.hex(), ln.span_id.hex()) for ln in s.links],
                            status=s.status.code,
                            scope=ss.scope.name,
                        )
                    )
        body = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=body, content_type="application/x-protobuf")

    def named(self, name: str) -> list[Span]:
        return [s for s in self.spans if s.name == name]

    def one(self, name: str) -> Span:
        (span,) = self.named(name)
        return span


@dataclass
class Upstream:
    """A model server that answers JSON and records every request's headers; 503s ``fail_first`` times."""

    version: str
    fail_first: int = 0
    url: str = ""
    seen: list[dict[str, str]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.seen.append({k.lower(): v for k, v in request.headers.items()})
        self.arrived.set()
        if len(self.seen) <= self.fail_first:
            return web.json_response({"error": "busy"}, status=503)
        return web.Response(body=ANSWER, content_type="application/json")


@contextlib.asynccontextmanager
async def serving(route: str, handler: Any) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", route, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def collector() -> AsyncIterator[Collector]:
    c = Collector()
    async with serving("/v1/traces", c.handle) as url:
        c.url = f"{url}/v1/traces"
        yield c


@pytest.fixture
async def upstreams() -> AsyncIterator[tuple[Upstream, Upstream]]:
    baseline, candidate = Upstream("v1"), Upstream("v2")
    async with serving("/{tail:.*}", baseline.handle) as b, serving("/{tail:.*}", candidate.handle) as c:
        baseline.url, candidate.url = b, c
        yield baseline, candidate


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path, baseline: str, candidate: str, **overrides: Any
) -> AsyncIterator[RunningProxy]:
    """A proxy for the body of the ``async with``; stopped (exporter flushed) on the way out."""
    overrides.setdefault("routes", [ROUTE])
    doc = config_doc(tmp_path, baseline, candidate, **overrides)
    proxy, stop, task = await start_proxy(load_config(write_config(tmp_path, doc)))
    try:
        yield proxy
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


def otlp(collector: Collector, ratio: float = 1.0, **extra: Any) -> dict[str, Any]:
    return {"exporter": "otlp", "endpoint": collector.url, "sample_ratio": ratio, **extra}


def access_lines(tmp_path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(x) for x in (tmp_path / "access.log").read_bytes().splitlines()]


def traceparent(value: str) -> tuple[str, str, bool]:
    """(trace id, parent span id, sampled) of a W3C traceparent (other flag bits, e.g. random, ignored)."""
    version, trace_id, span_id, flags = value.split("-")
    assert version == "00"
    return trace_id, span_id, bool(int(flags, 16) & 1)


CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


# -- the data path --------------------------------------------------------------------------------


async def test_server_span_with_a_client_span_per_attempt(
    tmp_path: Path, collector: Collector, upstreams: tuple[Upstream, Upstream]
) -> None:
    baseline, candidate = upstreams
    async with running(tmp_path, baseline.url, candidate.url, tracing=otlp(collector)) as proxy:
        async with httpx.AsyncClient(base_url=proxy.data_url) as c:
            r = await c.post("/v1/infer?email=ana@example.com", json=VALID_BODY)
    assert r.status_code == 200
    server = collector.one("POST infer")
    assert server.kind == SERVER and server.parent == ""
    assert server.scope == "rollguard"
    assert server.attrs == {
        "http.request.method": "POST",
        "rollguard.route": "infer",
        "http.route": "/v1/infer",
        "rollguard.request_id": r.headers["x-request-id"],
        "http.response.status_code": 200,
        "rollguard.role": "baseline",
        "rollguard.version": "v1",
        "rollguard.retries": 0,
        "rollguard.fallback": False,
    }
    client = collector.one("POST infer baseline")
    assert client.kind == CLIENT and client.status != STATUS_ERROR
    assert (client.trace_id, client.parent) == (server.trace_id, server.span_id)
    assert client.attrs == {
        "rollguard.role": "baseline",
        "rollguard.version": "v1",
        "http.request.method": "POST",
        "http.response.status_code": 200,
    }
    # What the upstream received names our CLIENT span, sampled.
    assert traceparent(baseline.seen[0]["traceparent"]) == (client.trace_id, client.span_id, True)
    # Nothing from the raw request line reaches a span.
    assert not any("example.com" in str(v) for s in collector.spans for v in s.attrs.values())
    (line,) = access_lines(tmp_path)
    assert line["trace_id"] == server.trace_id


async def test_an_incoming_sampled_traceparent_is_continued_and_replaced_upstream(
    tmp_path: Path, collector: Collector, upstreams: tuple[Upstream, Upstream]
) -> None:
    baseline, candidate = upstreams
    # ratio 0: only the client's sampled flag can make these spans recorded.
    async with running(tmp_path, baseline.url, candidate.url, tracing=otlp(collector, 0.0)) as proxy:
        async with httpx.AsyncClient(base_url=proxy.data_url) as c:
            headers = {
                "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01",
                "tracestate": "vendor=abc",
                "x-request-id": "ana@example.com",  # well-formed, so kept: masked in the span as in the log
            }
            r = await c.post("/v1/infer", json=VALID_BODY, headers=headers)
    assert r.status_code == 200
    server = collector.one("POST infer")
    assert (server.trace_id, server.parent) == (CLIENT_TRACE, CLIENT_SPAN)
    assert server.attrs["rollguard.request_id"].startswith("<email:")
    client = collector.one("POST infer baseline")
    seen = baseline.seen[0]
    assert traceparent(seen["traceparent"]) == (CLIENT_TRACE, client.span_id, True)
    assert seen["tracestate"] == "vendor=abc"
    assert access_lines(tmp_path)[0]["trace_id"] == CLIENT_TRACE


async def test_unsampled_requests_export_nothing_but_log_and_propagate_their_trace_id(
    tmp_path: Path, collector: Collector, upstreams: tuple[Upstream, Upstream]
) -> None:
    baseline, candidate = upstreams
    async with running(tmp_path, baseline.url, candidate.url, tracing=otlp(collector, 0.0)) as proxy:
        async with httpx.AsyncClient(base_url=proxy.data_url) as c:
            fresh = await c.post("/v1/infer", json=VALID_BODY)
            # A client's unsampled decision wins even where the ratio would not matter.
            declined = await c.post(
                "/v1/infer", json=VALID_BODY, headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-00"}
            )
    assert fresh.status_code == declined.status_code == 200
    assert collector.spans == []
    logged = [line["trace_id"] for line in access_lines(tmp_path)]
    sent = [traceparent(seen["traceparent"]) for seen in baseline.seen]
    assert len(logged[0]) == 32 and int(logged[0], 16) != 0
    assert [(t, f) for t, _, f in sent] == [(logged[0], False), (CLIENT_TRACE, False)]
    assert logged[1] == CLIENT_TRACE
    assert sent[1][1] != CLIENT_SPAN  # our (unrecorded) span's id, not the client's


async def test_a_partial_ratio_records_that_share_of_new_traces(
    tmp_path: Path, collector: Collector, upstreams: tuple[Upstream, Upstream]
) -> None:
    baseline, candidate = upstreams
    n = 200
    async with running(tmp_path, baseline.url, candidate.url, tracing=otlp(collector, 0.5)) as proxy:
        async with httpx.AsyncClient(base_url=proxy.data_url) as c:
            for _ in range(n):
                assert (await c.post("/v1/infer", json=VALID_BODY)).status_code == 200
    servers = collector.named("POST infer")
    # Binomial(200, 0.5): 100 +- 7.1; these bounds are 4.9 standard deviations out.
    assert 65 <= len(servers) <= 135, len(servers)
    logged = [line["trace_id"] for line in access_lines(tmp_path)]
    assert len(set(logged)) == n  # every request its own trace, sampled or not
    recorded = {s.trace_id for s in servers}
    assert recorded <= set(logged)
    # The upstream's traceparent carries each request's decision and trace id.
    flags = {t: f for t, _, f in (traceparent(seen["traceparent"]) for seen in baseline.seen)}
    assert {t for t, sampled in flags.items() if sampled} == recorded
    assert set(flags) == set(logged)


async def test_retries_are_separate_client_spans(tmp_path: Path, collector: Collector) -> None:
    flaky, candidate = Upstream("v1", fail_first=1), Upstream("v2")
    async with serving("/{tail:.*}", flaky.handle) as b, serving("/{tail:.*}", candidate.handle) as c:
        up = {"url": b, "version": "v1", "retries": {"attempts": 2, "backoff_base": "1ms"}}
        upstreams = {"baseline": up, "candidate": {"url": c, "version": "v2"}}
        async with running(tmp_path, b, c, upstreams=upstreams, tracing=otlp(collector)) as proxy:
            async with httpx.AsyncClient(base_url=proxy.data_url) as client:
                r = await client.get("/anything")
    assert r.status_code == 200
    server = collector.one("GET unmatched")
    assert server.attrs["rollguard.retries"] == 1
    first, second = sorted(
        collector.named("GET unmatched baseline"), key=lambda s: "http.request.resend_count" in s.attrs
    )
    assert first.status == STATUS_ERROR
    assert first.attrs["error.type"] == "http_5xx" and first.attrs["http.response.status_code"] == 503
    assert second.attrs["http.request.resend_count"] == 1 and second.status != STATUS_ERROR
    assert {first.parent, second.parent} == {server.span_id}
    # Each try carried its own span's id.
    assert [traceparent(s["traceparent"])[1] for s in flaky.seen] == [first.span_id, second.span_id]


async def test_a_fallback_shows_the_failed_candidate_and_the_baseline(
    tmp_path: Path, collector: Collector, upstreams: tuple[Upstream, Upstream]
) -> None:
    baseline, _ = upstreams
    async with running(tmp_path, baseline.url, refused_url(), tracing=otlp(collector)) as proxy:
        async with httpx.AsyncClient(base_url=proxy.data_url) as c:
            force = {"x-rollguard-force": "candidate", "x-rollguard-token": OPERATOR_TOKEN}
            r = await c.post("/v1/infer", json=VALID_BODY, headers=force)
    assert r.status_code == 200 and r.headers["x-rollguard-version"] == "v1"
    server = collector.one("POST infer")
    assert server.attrs["rollguard.fallback"] is True
    assert server.attrs["rollguard.fallback_reason"] == "connect"
    assert server.attrs["rollguard.role"] == "baseline"
    failed = collector.one("POST infer candidate")
    assert failed.status == STATUS_ERROR and failed.attrs["error.type"] == "connect"
    assert failed.attrs["rollguard.version"] == "v2" and "http.response.status_code" not in failed.attrs
    answered = collector.one("POST infer baseline")
    assert answered.attrs["http.response.status_code"] == 200
    assert failed.parent == answered.parent == server.span_id


async def test_an_upstream_error_marks_the_server_span(tmp_path: Path, collector: Collector) -> None:
    async with running(tmp_path, refused_url(), refused_url(), tracing=otlp(collector)) as proxy:
        async with httpx.AsyncClient(base_url=proxy.data_url) as c:
            r = await c.post("/v1/infer", json=VALID_BODY)
    assert r.status_code == 502
    server = collector.one("POST infer")
    assert server.status == STATUS_ERROR and server.attrs["http.response.status_code"] == 502


# -- shadow ---------------------------------------------------------------------------------------


async def test_a_mirror_is_its_own_trace_linked_to_the_server_span(
    tmp_path: Path, collector: Collector, upstreams: tuple[Upstream, Upstream]
) -> None:
    baseline, candidate = upstreams
    shadow = {"sample": 1.0, "noise_sample": 0.0}
    async with running(
        tmp_path, baseline.url, candidate.url, tracing=otlp(collector), shadow=shadow
    ) as proxy:
        async with httpx.AsyncClient(base_url=proxy.data_url) as c:
            r = await c.post("/v1/infer", json=VALID_BODY)
        await asyncio.wait_for(candidate.arrived.wait(), 5)
    assert r.status_code == 200
    server = collector.one("POST infer")
    assert server.attrs["rollguard.shadow"] == "sent"
    mirror = collector.one("POST infer shadow")
    assert mirror.kind == CLIENT and mirror.parent == ""
    assert mirror.trace_id != server.trace_id
    assert mirror.links == [(server.trace_id, server.span_id)]
    assert mirror.attrs["rollguard.role"] == "shadow" and mirror.attrs["rollguard.version"] == "v2"
    assert mirror.attrs["http.response.status_code"] == 200
    (seen,) = candidate.seen
    assert seen["x-rollguard-shadow"] == "1"
    assert traceparent(seen["traceparent"]) == (mirror.trace_id, mirror.span_id, True)


async def test_a_mirror_of_an_unsampled_request_records_nothing_but_propagates(
    tmp_path: Path, collector: Collector, upstreams: tuple[Upstream, Upstream]
) -> None:
    baseline, candidate = upstreams
    shadow = {"sample": 1.0, "noise_sample": 0.0}
    async with running(
        tmp_path, baseline.url, candidate.url, tracing=otlp(collector, 0.0), shadow=shadow
    ) as proxy:
        async with httpx.AsyncClient(base_url=proxy.data_url) as c:
            r = await c.post("/v1/infer", json=VALID_BODY)
        await asyncio.wait_for(candidate.arrived.wait(), 5)
    assert r.status_code == 200
    assert collector.spans == []
    assert traceparent(candidate.seen[0]["traceparent"])[2] is False


# -- off ------------------------------------------------------------------------------------------


async def test_tracing_off_passes_the_clients_traceparent_through_and_logs_no_trace_id(
    tmp_path: Path, upstreams: tuple[Upstream, Upstream]
) -> None:
    baseline, candidate = upstreams
    async with running(tmp_path, baseline.url, candidate.url) as proxy:
        async with httpx.AsyncClient(base_url=proxy.data_url) as c:
            client_tp = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
            await c.post("/v1/infer", json=VALID_BODY, headers={"traceparent": client_tp})
            await c.post("/v1/infer", json=VALID_BODY)
    assert baseline.seen[0]["traceparent"] == client_tp
    assert "traceparent" not in baseline.seen[1]
    lines = access_lines(tmp_path)
    assert len(lines) == 2, lines  # both exchanges were logged...
    assert all("trace_id" not in line for line in lines)  # ...and neither names a trace


# -- admin ----------------------------------------------------------------------------------------


async def test_the_admin_app_is_traced_except_scrapes_and_probes(
    tmp_path: Path, collector: Collector, upstreams: tuple[Upstream, Upstream]
) -> None:
    baseline, candidate = upstreams
    async with running(tmp_path, baseline.url, candidate.url, tracing=otlp(collector)) as proxy:
        async with proxy.admin_client(VIEWER_TOKEN) as admin:
            assert (await admin.get("/status")).status_code == 200
            assert (await admin.get("/metrics")).status_code == 200
            assert (await admin.get("/healthz")).status_code == 200
    admin_spans = [s for s in collector.spans if s.scope == "opentelemetry.instrumentation.asgi"]
    assert [s.name for s in admin_spans] == ["GET /status"]
    (status,) = admin_spans
    assert (
        status.kind == SERVER
        and status.attrs.get("http.status_code", status.attrs.get("http.response.status_code")) == 200
    )
    addresses = [v for k, v in status.attrs.items() if k in ("client.address", "net.peer.ip")]
    assert addresses and all(v != "127.0.0.1" and v.startswith("<ip:") for v in addresses)


# -- failure --------------------------------------------------------------------------------------


async def test_an_unreachable_collector_never_touches_traffic(
    tmp_path: Path, upstreams: tuple[Upstream, Upstream]
) -> None:
    baseline, candidate = upstreams
    tracing = {
        "exporter": "otlp",
        "endpoint": f"{refused_url()}/v1/traces",
        "sample_ratio": 1.0,
        "timeout": "1s",
    }
    started = asyncio.get_running_loop().time()
    async with running(tmp_path, baseline.url, candidate.url, tracing=tracing) as proxy:
        async with httpx.AsyncClient(base_url=proxy.data_url) as c:
            answers = await asyncio.gather(*(c.post("/v1/infer", json=VALID_BODY) for _ in range(30)))
    assert [a.status_code for a in answers] == [200] * 30
    lines = access_lines(tmp_path)
    assert len(lines) == 30 and all(len(line["trace_id"]) == 32 for line in lines)  # tracing was on
    # The shutdown's flush gives up within tracing.timeout instead of holding the exit.
    assert asyncio.get_running_loop().time() - started < 15


async def test_a_hung_collector_drops_spans_without_holding_requests(
    tmp_path: Path, upstreams: tuple[Upstream, Upstream], caplog: pytest.LogCaptureFixture
) -> None:
    baseline, candidate = upstreams

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # reads the export, never answers; returns when the exporter gives up

    async with raw_http_server(hang) as hung:
        tracing = {
            "exporter": "otlp",
            "endpoint": f"{hung}/v1/traces",
            "sample_ratio": 1.0,
            "timeout": "1s",
            "queue_size": 1,
        }
        async with running(tmp_path, baseline.url, candidate.url, tracing=tracing) as proxy:
            async with httpx.AsyncClient(base_url=proxy.data_url) as c:
                answers = [await c.post("/v1/infer", json=VALID_BODY) for _ in range(20)]
    assert [a.status_code for a in answers] == [200] * 20
    # 40 spans through a queue of 1 behind a stuck export: most are dropped, and the SDK says so at most
    # once per 20 s window of its own (two if the test straddles one), never once per span: a line per
    # request on stderr would itself load an overloaded proxy.
    drops = [r for r in caplog.records if r.getMessage().startswith("Queue full")]
    assert len(drops) <= 2


# -- config ---------------------------------------------------------------------------------------


def _doc(tmp_path: Path, tracing: Any) -> dict[str, Any]:
    doc = config_doc(tmp_path, "http://127.0.0.1:9001", "http://127.0.0.1:9002")
    doc["tracing"] = copy.deepcopy(tracing)
    return doc


@pytest.mark.parametrize(
    ("tracing", "path", "words"),
    [
        ({"exporter": "jaeger"}, "tracing.exporter", ["'jaeger'", "none", "otlp"]),
        ({"sample_ratio": 1.5}, "tracing.sample_ratio", ["1.5", "maximum of 1"]),
        ({"endpoint": "127.0.0.1:4318"}, "tracing.endpoint", ["'127.0.0.1:4318'", "http://"]),
        ({"timeout": "5 seconds"}, "tracing.timeout", ["duration"]),
        ({"queue_size": 0}, "tracing.queue_size", ["minimum of 1"]),
        ({"sample": 0.1}, "tracing", ["unknown key", "'sample'"]),
        ({"headers": {"authorization": "Bearer abc"}}, "tracing.headers.authorization", ["env:NAME"]),
        (
            {"headers": {"x-api-key": "env:RG_TEST_SURELY_NOT_SET"}},
            "tracing.headers.x-api-key",
            ["RG_TEST_SURELY_NOT_SET", "not set"],
        ),
    ],
)
def test_bad_tracing_config_names_the_key_path(
    tmp_path: Path, tracing: Any, path: str, words: list[str]
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, _doc(tmp_path, tracing)))
    assert info.value.path == path, str(info.value)
    for word in words:
        assert word in info.value.message, f"{word!r} not in {info.value.message!r}"


def test_tracing_config_defaults_and_secret_headers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_config(write_config(tmp_path, _doc(tmp_path, {}))).tracing.enabled is False
    monkeypatch.setenv("RG_TEST_OTLP_TOKEN", "Bearer s3cret-otlp")
    cfg = load_config(
        write_config(
            tmp_path,
            _doc(tmp_path, {"exporter": "otlp", "headers": {"Authorization": "env:RG_TEST_OTLP_TOKEN"}}),
        )
    ).tracing
    assert cfg.enabled and cfg.sample_ratio == 0.01 and cfg.timeout == 5.0
    assert cfg.endpoint == "http://127.0.0.1:4318/v1/traces" and cfg.service_name == "rollguard"
    assert cfg.headers == (("authorization", "Bearer s3cret-otlp"),)
    assert "s3cret" not in repr(cfg)
