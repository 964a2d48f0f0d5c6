"""Request-head limits below ASGI (proxy/edge/listener.py), over raw sockets against a real data plane.

Every case checks the whole contract: the status, an ``application/problem+json`` body with ``type``,
``title``, ``status``, ``detail`` and ``request_id``, whether the connection was closed, and that an
ordinary request on a fresh connection is served right after. The cases run on the test loop (asyncio)
and once more under uvloop, the loop ``rollguard serve`` uses.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
import uvicorn
import uvloop

from proxy.config.load import load_config
from proxy.config.model import LimitsConfig
from proxy.demo.sample_model import ModelBehavior, start_sample_model
from proxy.edge.listener import ListenerGuard, ListenerLimits
from proxy.errors import ConfigError
from tests.helpers.config import config_doc, write_config
from tests.helpers.faulty_upstream import Fault, FaultyUpstream
from tests.helpers.metrics import metric_samples, sample
from tests.helpers.models import Models
from tests.helpers.proxy_runner import start_proxy
from tests.helpers.traffic import VALID_BODY

SMALL_HEAD = "4KiB"
SMALL_HEAD_BYTES = 4096


# -- raw HTTP/1.1 over a socket ---------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def problem(self) -> dict[str, Any]:
        assert self.headers["content-type"] == "application/problem+json", self.headers
        doc: dict[str, Any] = orjson.loads(self.body)
        assert {"type", "title", "status", "detail", "request_id"} <= doc.keys(), doc
        assert doc["status"] == self.status
        assert doc["request_id"] and self.headers["x-request-id"] == doc["request_id"]
        return doc


class Conn:
    """One client connection speaking raw bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, url: str) -> Conn:
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self) -> Answer:
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head[:-4].decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return Answer(int(status_line.split(" ", 2)[1]), headers, body)

    async def closed(self) -> bool:
        """True once the server has closed its side with nothing more to say."""
        return await self.reader.read(1) == b""

    def close(self) -> None:
        self.writer.close()


async def refused_then_closed(url: str, data: bytes) -> Answer:
    """Send ``data``, read the one answer, and check the server closed the connection after it."""
    conn = await Conn.open(url)
    try:
        await conn.send(data)
        answer = await conn.answer()
        assert answer.headers.get("connection") == "close"
        assert await conn.closed()
        return answer
    finally:
        conn.close()


def post(path: str = "/v1/infer", extra: bytes = b"", body: bytes | None = None) -> bytes:
    body = orjson.dumps(VALID_BODY) if body is None else body
    return (
        b"POST %s HTTP/1.1\r\nHost: rollguard\r\nContent-Type: application/json\r\n%s"
        b"Content-Length: %d\r\n\r\n%s" % (path.encode(), extra, len(body), body)
    )


async def served(url: str) -> None:
    """An ordinary request on a fresh connection gets the model's answer."""
    async with httpx.AsyncClient(base_url=url, timeout=5) as c:
        r = await c.post("/v1/infer", json=VALID_BODY)
    assert r.status_code == 200, r.text


# -- the cases that answer and close, as data ------------------------------------------------------

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def big_header(size: int) -> bytes:
    return b"X-Padding: " + b"a" * size + b"\r\n"


CLOSING_CASES: list[tuple[str, bytes, int, str]] = [
    # (id, bytes sent, status, a word the detail must contain)
    ("head-over-limit", post(extra=big_header(2 * SMALL_HEAD_BYTES)), 431, "max_header_bytes"),
    (
        "long-target",
        b"GET /" + b"a" * (2 * SMALL_HEAD_BYTES) + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        431,
        "max_header",
    ),
    # The head never ends: the answer cannot wait for it.
    (
        "unterminated-header",
        b"GET / HTTP/1.1\r\nX-Padding: " + b"a" * (2 * SMALL_HEAD_BYTES),
        431,
        "max_header",
    ),
    ("many-headers", post(extra=b"X-A: b\r\n" * 1000), 431, "max_header_bytes"),
    (
        "garbage",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n",
        400,
        "invalid HTTP request",
    ),
    ("words", b"hello there\r\n\r\n", 400, "invalid HTTP request"),
    ("bare-lf", b"GET / HTTP/1.1\nHost: x\n\n", 400, "invalid HTTP request"),
    ("cl-and-te", post(extra=b"Transfer-Encoding: chunked\r\n"), 400, "Transfer-Encoding"),
    (
        "te-and-cl",
        b"POST /v1/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n"
        b"\r\n0\r\n\r\n",
        400,
        "Content-Length",
    ),
    ("duplicate-different-cl", post(extra=b"Content-Length: 7\r\n"), 400, "Content-Length"),
    (
        "duplicate-same-cl",
        post(extra=b"Content-Length: %d\r\n" % len(orjson.dumps(VALID_BODY))),
        400,
        "Content",
    ),
    (
        "cl-list",
        b"POST /v1/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhello",
        400,
        "Content-Length",
    ),
    ("te-http10", b"POST /v1/infer HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "HTTP/1.0"),
    (
        "te-gzip",
        b"POST /v1/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
        400,
        "Transfer-Encoding",
    ),
    (
        "te-gzip-chunked",
        b"POST /v1/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        501,
        "chunked",
    ),
    ("h2-preface", H2_PREFACE + H2_SETTINGS, 505, "HTTP/2"),
    # What a prior-knowledge client may send first and then wait on: answered at once, not at the deadline.
    ("h2-preface-partial", b"PRI * HTTP/2.0\r\n\r\n", 505, "HTTP/2"),
    ("http2-request-line", b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505, "HTTP/2"),
    ("http09", b"GET /\r\n\r\n", 505, "HTTP/0.9"),
]
STATUS_SLUG = {400: "bad-request", 431: "header-too-large", 501: "not-implemented", 505: "http-version"}


async def check_closing_case(url: str, data: bytes, status: int, word: str) -> None:
    answer = await refused_then_closed(url, data)
    assert answer.status == status, answer
    doc = answer.problem()
    assert doc["type"].endswith("/" + STATUS_SLUG[status])
    assert word in doc["detail"], doc


# -- the data plane under test ---------------------------------------------------------------------

# Long enough that no case but the deadline ones could ever meet it by accident.
LIMITS = {"max_header_bytes": SMALL_HEAD, "head_timeout": "30s"}


@pytest.mark.parametrize(
    ("data", "status", "word"), [c[1:] for c in CLOSING_CASES], ids=[c[0] for c in CLOSING_CASES]
)
async def test_refused_heads_get_problem_json_and_close(
    proxy_factory: Any, data: bytes, status: int, word: str
) -> None:
    proxy = await proxy_factory(limits=LIMITS)
    async with asyncio.timeout(10):
        await check_closing_case(proxy.data_url, data, status, word)
        await served(proxy.data_url)
    samples = await metric_samples(proxy.admin_url)
    assert sample(samples, "rollguard_listener_rejections_total", listener="data", code=str(status)) == 1
    assert sample(samples, "rollguard_requests_total", code=str(status)) == 0  # never charged to a version


async def test_head_limit_counts_the_head_not_the_body_and_resets_per_request(proxy_factory: Any) -> None:
    proxy = await proxy_factory(limits=LIMITS)
    just_under = big_header(SMALL_HEAD_BYTES - 200)
    async with asyncio.timeout(10):
        conn = await Conn.open(proxy.data_url)
        try:
            # Two heads near the limit on one kept-alive connection, each body larger than the limit and
            # in the same write as its head: both are served.
            padded = orjson.dumps({**VALID_BODY, "note": "x" * (4 * SMALL_HEAD_BYTES)})
            for _ in range(2):
                await conn.send(post(extra=just_under, body=padded))
                assert (await conn.answer()).status == 200
            # Pipelined in one write: the second head starts mid-read, after a large body.
            await conn.send(post(body=padded) + post(extra=just_under))
            assert [(await conn.answer()).status for _ in range(2)] == [200, 200]
            # The limit applies per request on the kept-alive connection.
            await conn.send(post(extra=big_header(SMALL_HEAD_BYTES)))
            answer = await conn.answer()
            assert answer.status == 431 and answer.problem()["status"] == 431
            assert await conn.closed()
        finally:
            conn.close()


async def test_pipelined_refusal_comes_after_the_answer_ahead_of_it(proxy_factory: Any) -> None:
    proxy = await proxy_factory(limits=LIMITS)
    async with asyncio.timeout(10):
        conn = await Conn.open(proxy.data_url)
        try:
            await conn.send(post() + b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
            first, second = await conn.answer(), await conn.answer()
            assert first.status == 200 and first.headers["content-type"] == "application/json"
            assert second.status == 400 and "Content-Length" in second.problem()["detail"]
            assert await conn.closed()
        finally:
            conn.close()
        await served(proxy.data_url)


async def test_websocket_upgrade_still_reaches_the_app_for_its_501(proxy_factory: Any) -> None:
    proxy = await proxy_factory(limits=LIMITS)
    async with asyncio.timeout(10):
        conn = await Conn.open(proxy.data_url)
        try:
            await conn.send(
                b"GET /v1/infer HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            )
            answer = await conn.answer()
            assert answer.status == 501 and answer.problem()["type"].endswith("/not-implemented")
        finally:
            conn.close()
        await served(proxy.data_url)


async def test_admin_listener_has_the_same_head_limits(proxy_factory: Any) -> None:
    proxy = await proxy_factory(limits=LIMITS)
    async with asyncio.timeout(10):
        req = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + big_header(2 * SMALL_HEAD_BYTES) + b"\r\n"
        assert (await refused_then_closed(proxy.admin_url, req)).status == 431
        async with httpx.AsyncClient(base_url=proxy.admin_url) as c:
            assert (await c.get("/healthz")).status_code == 200


# -- the head deadline -----------------------------------------------------------------------------

HEAD_TIMEOUT = 0.5
TIMER_SLACK = 0.05  # libuv timers have millisecond resolution and a per-iteration clock


async def drip(conn: Conn, head: bytes, every: float) -> None:
    """Send ``head`` a byte at a time, ``every`` seconds apart, until the server stops reading."""
    for i in range(len(head)):
        try:
            await conn.send(head[i : i + 1])
        except ConnectionError:
            return
        await asyncio.sleep(every)  # the client's pacing is the point of this test


async def check_dripped_head_is_408(url: str) -> None:
    conn = await Conn.open(url)
    started = time.monotonic()
    # Each byte arrives well inside the deadline; only the whole head's deadline can stop this.
    dripper = asyncio.create_task(drip(conn, post(extra=big_header(200)), HEAD_TIMEOUT / 5))
    try:
        answer = await conn.answer()
        elapsed = time.monotonic() - started
        assert answer.status == 408, answer
        assert answer.problem()["type"].endswith("/request-timeout")
        assert answer.headers["connection"] == "close"
        assert await conn.closed()
        assert HEAD_TIMEOUT - TIMER_SLACK <= elapsed < HEAD_TIMEOUT + 2.0, elapsed
    finally:
        dripper.cancel()
        conn.close()


async def check_kept_alive_head_is_408(url: str) -> None:
    conn = await Conn.open(url)
    try:
        await conn.send(post())
        assert (await conn.answer()).status == 200
        await conn.send(b"POST /v1/infer HTTP/1.1\r\nHost: x\r\n")  # and then nothing
        answer = await conn.answer()
        assert answer.status == 408 and answer.problem()["status"] == 408
        assert await conn.closed()
    finally:
        conn.close()


async def check_silent_connection_is_closed(url: str) -> None:
    """Nothing was asked, so nothing is answered: the connection is just closed."""
    conn = await Conn.open(url)
    try:
        started = time.monotonic()
        assert await conn.reader.read() == b""
        assert HEAD_TIMEOUT - TIMER_SLACK <= time.monotonic() - started < HEAD_TIMEOUT + 2.0
    finally:
        conn.close()


DEADLINE_CASES: dict[str, Callable[[str], Awaitable[None]]] = {
    "dripped": check_dripped_head_is_408,
    "kept-alive": check_kept_alive_head_is_408,
    "silent": check_silent_connection_is_closed,
}


@pytest.mark.parametrize("case", DEADLINE_CASES)
async def test_head_deadline(proxy_factory: Any, case: str) -> None:
    proxy = await proxy_factory(limits={"head_timeout": f"{int(HEAD_TIMEOUT * 1000)}ms"})
    async with asyncio.timeout(10):
        await DEADLINE_CASES[case](proxy.data_url)
        await served(proxy.data_url)


async def test_a_head_in_pieces_within_the_deadline_is_served_and_disarms_it(proxy_factory: Any) -> None:
    proxy = await proxy_factory(limits={"head_timeout": f"{int(HEAD_TIMEOUT * 1000)}ms"})
    async with asyncio.timeout(10):
        conn = await Conn.open(proxy.data_url)
        try:
            request = post()
            await conn.send(request[:20])
            await asyncio.sleep(HEAD_TIMEOUT / 5)  # client pacing: the head arrives in two reads
            await conn.send(request[20:])
            assert (await conn.answer()).status == 200
            # Proving that no deadline is left armed takes letting it pass: there is no event for "nothing".
            await asyncio.sleep(HEAD_TIMEOUT * 1.5)
            await conn.send(post())
            assert (await conn.answer()).status == 200
        finally:
            conn.close()


def test_limits_config_keys(tmp_path: Path) -> None:
    def limits_of(limits: dict[str, Any] | None) -> Any:
        doc = config_doc(tmp_path, "http://127.0.0.1:1", "http://127.0.0.1:2")
        if limits is not None:
            doc["limits"] = limits
        return load_config(write_config(tmp_path, doc)).limits

    defaults = limits_of(None)
    assert (defaults.max_header_bytes, defaults.head_timeout, defaults.max_concurrency) == (
        64 * 1024,
        10.0,
        1024,
    )
    custom = limits_of({"max_header_bytes": "16KiB", "head_timeout": "750ms", "max_concurrency": 8})
    assert (custom.max_header_bytes, custom.head_timeout, custom.max_concurrency) == (16 * 1024, 0.75, 8)
    assert custom.max_body_bytes == defaults.max_body_bytes  # the other keys keep their defaults
    for bad, path in (
        ({"max_header_bytes": 100}, "limits.max_header_bytes"),
        ({"head_timeout": "soon"}, "limits.head_timeout"),
        ({"max_concurrency": 0}, "limits.max_concurrency"),
    ):
        with pytest.raises(ConfigError) as err:
            limits_of(bad)
        assert err.value.path == path, err.value


# -- concurrency per listener ----------------------------------------------------------------------


@asynccontextmanager
async def hung_baseline_proxy(tmp_path: Path, models: Models) -> AsyncIterator[tuple[Any, FaultyUpstream]]:
    async with FaultyUpstream(Fault.HANG_BEFORE_HEADERS) as faulty:
        doc = config_doc(
            tmp_path,
            faulty.url,
            models.candidate.url,
            limits={"max_concurrency": 2},
            upstreams={
                "baseline": {"url": faulty.url, "version": "v1", "timeout": "60s"},
                "candidate": {"url": models.candidate.url, "version": "v2", "timeout": "2s"},
            },
        )
        proxy, stop, task = await start_proxy(load_config(write_config(tmp_path, doc)))
        try:
            yield proxy, faulty
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)


async def check_overload(proxy: Any, faulty: FaultyUpstream) -> None:
    held = [await Conn.open(proxy.data_url) for _ in range(2)]
    extra = await Conn.open(proxy.data_url)
    try:
        for conn in held:
            await conn.send(post())
        await faulty.wait_for_requests(2)  # both are in flight, waiting on the hung baseline

        await extra.send(post(extra=b"X-Request-Id: client-chosen-7\r\n"))
        answer = await extra.answer()
        assert answer.status == 503, answer
        assert answer.headers["retry-after"] == "1"
        doc = answer.problem()
        assert doc["type"].endswith("/overloaded") and doc["request_id"] == "client-chosen-7"
        assert "connection" not in answer.headers  # kept alive: the client may retry on it
        assert faulty.requests_seen == 2  # never reached the app, let alone an upstream

        # Once the held requests end, the same kept-alive connection is served again.
        faulty.fault = Fault.OK
        for conn in held:
            conn.close()
        await faulty.wait_for_open_connections(0)
        while True:  # the held requests' tasks end a moment after their upstream sockets
            await extra.send(post())
            answer = await extra.answer()
            if answer.status != 503:
                break
        assert answer.status == 200, answer
    finally:
        for conn in (*held, extra):
            conn.close()
    await served(proxy.data_url)
    # Local-origin: the 503 was counted against no route, role or model version.
    samples = await metric_samples(proxy.admin_url)
    codes = {dict(labels).get("code") for (name, labels) in samples if name == "rollguard_requests_total"}
    assert "503" not in codes, codes


async def test_concurrency_limit_answers_503_without_calling_the_app(tmp_path: Path, models: Models) -> None:
    async with asyncio.timeout(20), hung_baseline_proxy(tmp_path, models) as (proxy, faulty):
        await check_overload(proxy, faulty)


# -- the protocol on its own: on_reject and the in-flight count -----------------------------------


@asynccontextmanager
async def guarded_server(guard: ListenerGuard, app: Any) -> AsyncIterator[str]:
    config = uvicorn.Config(app, http=guard.protocol, lifespan="off", log_config=None, access_log=False)
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)  # what Server.serve() would set up
    sock = socket.create_server(("127.0.0.1", 0))
    sock.setblocking(False)
    await server.startup(sockets=[sock])
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await server.shutdown(sockets=[sock])


async def test_on_reject_reports_each_local_answer_and_in_flight_returns_to_zero() -> None:
    rejected: list[tuple[int, str]] = []
    guard = ListenerGuard(
        ListenerLimits.from_config(
            LimitsConfig(), max_header_bytes=2048, head_timeout=0.3, max_concurrency=1
        ),
        on_reject=lambda status, reason: rejected.append((status, reason)),
    )
    entered, release = asyncio.Event(), asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/hold":
            entered.set()
            await release.wait()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async with asyncio.timeout(10), guarded_server(guard, app) as url:
        for data in (
            b"GET / HTTP/1.1\r\n" + big_header(4096) + b"\r\n",
            b"nonsense\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            H2_PREFACE,
            b"GET / HTTP/1.1\r\n",  # then nothing, past the deadline
        ):
            await refused_then_closed(url, data)
        held = await Conn.open(url)
        await held.send(b"GET /hold HTTP/1.1\r\n\r\n")
        await entered.wait()
        assert guard.in_flight == 1
        async with httpx.AsyncClient(base_url=url) as c:
            assert (await c.get("/")).status_code == 503
        release.set()
        assert (await held.answer()).status == 204
        held.close()
        async with httpx.AsyncClient(base_url=url) as c:
            assert (await c.get("/")).status_code == 204
        assert guard.in_flight == 0
    assert rejected == [
        (431, "headers_too_large"),
        (400, "parse_error"),
        (400, "framing"),
        (501, "transfer_coding"),
        (505, "http_version"),
        (408, "head_timeout"),
        (503, "overloaded"),
    ]


async def test_a_failing_on_reject_hook_never_breaks_the_answer() -> None:
    def broken(status: int, reason: str) -> None:
        raise RuntimeError("metrics backend down")

    guard = ListenerGuard(ListenerLimits.from_config(LimitsConfig()), on_reject=broken)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("never called")

    async with asyncio.timeout(10), guarded_server(guard, app) as url:
        for _ in range(2):
            assert (await refused_then_closed(url, b"nonsense\r\n\r\n")).status == 400


# -- the same under uvloop, the loop rollguard serve runs on ---------------------------------------


def test_everything_under_uvloop(tmp_path: Path) -> None:
    async def scenario() -> None:
        baseline = await start_sample_model(ModelBehavior(version="v1"))
        candidate = await start_sample_model(ModelBehavior(version="v2"))
        models = Models(baseline=baseline, candidate=candidate)
        try:
            assert "uvloop" in type(asyncio.get_running_loop()).__module__
            doc = config_doc(
                tmp_path,
                baseline.url,
                candidate.url,
                limits={"max_header_bytes": SMALL_HEAD, "head_timeout": f"{int(HEAD_TIMEOUT * 1000)}ms"},
            )
            proxy, stop, task = await start_proxy(load_config(write_config(tmp_path, doc)))
            try:
                for _, data, status, word in CLOSING_CASES:
                    await check_closing_case(proxy.data_url, data, status, word)
                for check in DEADLINE_CASES.values():
                    await check(proxy.data_url)
                await served(proxy.data_url)
            finally:
                stop.set()
                await asyncio.wait_for(task, 20)
            (tmp_path / "overload").mkdir()
            async with hung_baseline_proxy(tmp_path / "overload", models) as (proxy, faulty):
                await check_overload(proxy, faulty)
        finally:
            await baseline.close()
            await candidate.close()

    async def bounded() -> None:
        async with asyncio.timeout(60):
            await scenario()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(bounded())
