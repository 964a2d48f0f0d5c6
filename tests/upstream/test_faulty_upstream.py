"""Each fault of the faulty upstream, as seen by aiohttp (the proxy's upstream client) and by raw sockets."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
from collections.abc import AsyncIterator, Iterator

import aiohttp
import jsonschema
import pytest

from tests.helpers.faulty_upstream import OK_BODY, Fault, FaultyUpstream, refused_url
from tests.helpers.paths import SCHEMAS

RESPONSE_SCHEMA = json.loads((SCHEMAS / "infer_response.json").read_text())
SHORT_READ = aiohttp.ClientTimeout(total=None, sock_read=0.2)


@pytest.fixture(autouse=True)
def no_asyncio_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """A handler that dies with an exception is logged by asyncio, not raised: fail the test on it."""
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        yield
    records = [r for when in ("setup", "call") for r in caplog.get_records(when) if r.name == "asyncio"]
    assert not records, [r.getMessage() for r in records]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    # One connection, so keep-alive reuse is observable through connections_accepted.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as s:
        yield s


async def raw_exchange(upstream: FaultyUpstream, request: bytes) -> bytes:
    """Send raw bytes, return everything the server sends until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", upstream.port)
    try:
        writer.write(request)
        await writer.drain()
        return await reader.read()
    finally:
        writer.close()


async def test_ok_answers_the_contract_body_with_keep_alive(session: aiohttp.ClientSession) -> None:
    async with FaultyUpstream() as up:
        for _ in range(3):
            async with session.post(f"{up.url}/v1/infer", json={"features": {}}) as r:
                assert r.status == 200 and r.headers["content-type"] == "application/json"
                assert await r.read() == OK_BODY
        assert (up.requests_seen, up.connections_accepted) == (3, 1)
    jsonschema.validate(json.loads(OK_BODY), RESPONSE_SCHEMA)
    assert up.open_connections == 0


@pytest.mark.parametrize(("fault", "status"), [(Fault.STATUS_500, 500), (Fault.STATUS_503, 503)])
async def test_status_faults_answer_json_errors_on_a_kept_alive_connection(
    session: aiohttp.ClientSession, fault: Fault, status: int
) -> None:
    async with FaultyUpstream(fault) as up:
        for _ in range(2):
            async with session.get(up.url) as r:
                assert r.status == status
                assert (await r.json())["error"] == f"injected {status}"
                assert r.headers.get("retry-after") == ("1" if status == 503 else None)
        assert up.connections_accepted == 1


async def test_fault_switches_at_run_time_on_the_same_connection(session: aiohttp.ClientSession) -> None:
    async with FaultyUpstream() as up:
        statuses = []
        for fault in (Fault.OK, Fault.STATUS_503, Fault.STATUS_500, Fault.OK):
            up.fault = fault
            async with session.get(up.url) as r:
                statuses.append(r.status)
                await r.read()
        assert statuses == [200, 503, 500, 200]
        assert up.connections_accepted == 1


async def test_reset_before_headers_is_a_connection_reset(session: aiohttp.ClientSession) -> None:
    async with FaultyUpstream(Fault.RESET_BEFORE_HEADERS) as up:
        with pytest.raises(aiohttp.ClientOSError) as caught:
            await session.post(up.url, data=b"x" * 100)
        assert caught.value.errno == errno.ECONNRESET
        assert up.requests_seen == 1
        assert up.requests[-1].body is None  # reset right after the head, body never read


async def test_reset_mid_body_fails_the_payload_after_the_head(session: aiohttp.ClientSession) -> None:
    async with FaultyUpstream(Fault.RESET_MID_BODY, partial_body_bytes=5000) as up:
        async with session.get(up.url) as r:
            assert r.status == 200 and r.headers["content-length"] == "100000"
            with pytest.raises(aiohttp.ClientPayloadError):
                await r.read()


async def test_hang_before_headers_times_out_the_client() -> None:
    async with (
        FaultyUpstream(Fault.HANG_BEFORE_HEADERS) as up,
        aiohttp.ClientSession(timeout=SHORT_READ) as s,
    ):
        with pytest.raises(asyncio.TimeoutError):
            await s.get(up.url)
        assert up.requests_seen == 1


async def test_hang_mid_body_times_out_the_body_read() -> None:
    async with FaultyUpstream(Fault.HANG_MID_BODY) as up, aiohttp.ClientSession(timeout=SHORT_READ) as s:
        async with s.get(up.url) as r:
            assert r.status == 200
            with pytest.raises(asyncio.TimeoutError):
                await r.read()


@pytest.mark.parametrize("fault", [Fault.HANG_BEFORE_HEADERS, Fault.HANG_MID_BODY])
async def test_hung_sockets_stay_open_until_close(fault: Fault) -> None:
    up = await FaultyUpstream(fault).start()
    streams = [await asyncio.open_connection("127.0.0.1", up.port) for _ in range(3)]
    for _, writer in streams:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    async with asyncio.timeout(5):
        await up.wait_for_requests(3)
    assert up.open_connections == 3
    pending = [asyncio.ensure_future(reader.read()) for reader, _ in streams]
    await asyncio.sleep(0)  # let the reads start: none may complete while the server hangs
    assert not any(task.done() for task in pending)

    await up.close()
    assert up.open_connections == 0
    async with asyncio.timeout(5):
        results = await asyncio.gather(*pending, return_exceptions=True)
    for result in results:  # every client sees its socket end: EOF after what was sent, or a reset
        assert isinstance(result, bytes | ConnectionResetError)
        if isinstance(result, bytes) and fault is Fault.HANG_BEFORE_HEADERS:
            assert result == b""
    for _, writer in streams:
        writer.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", up.port)


async def test_hang_ends_when_the_client_goes_away() -> None:
    async with FaultyUpstream(Fault.HANG_BEFORE_HEADERS) as up:
        reader, writer = await asyncio.open_connection("127.0.0.1", up.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(5):
            await up.wait_for_requests(1)
        writer.close()
        await writer.wait_closed()
        async with asyncio.timeout(5):
            await up.wait_for_open_connections(0)


async def test_garbage_is_a_response_parse_error(session: aiohttp.ClientSession) -> None:
    async with FaultyUpstream(Fault.GARBAGE) as up:
        with pytest.raises(aiohttp.ClientResponseError, match="Bad status line"):
            await session.get(up.url)
        raw = await raw_exchange(up, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert raw and not raw.startswith(b"HTTP/")


async def test_duplicate_content_length_is_rejected(session: aiohttp.ClientSession) -> None:
    async with FaultyUpstream(Fault.DUPLICATE_CONTENT_LENGTH) as up:
        with pytest.raises(aiohttp.ClientResponseError, match="Content-Length"):
            await session.get(up.url)
        raw = await raw_exchange(up, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    lengths = {line for line in raw.split(b"\r\n") if line.lower().startswith(b"content-length:")}
    assert len(lengths) == 2


async def test_huge_body_declares_and_sends_the_configured_size(session: aiohttp.ClientSession) -> None:
    size = 4 * 1024 * 1024 + 17
    async with FaultyUpstream(Fault.HUGE_BODY, huge_body_bytes=size) as up:
        async with session.get(up.url) as r:
            assert r.headers["content-length"] == str(size)
            body = await r.read()
        async with session.get(up.url) as r:  # the connection stays usable after a huge body
            assert len(await r.read()) == size
        assert up.connections_accepted == 1
    assert len(body) == size
    doc = json.loads(body)
    assert doc["score"] == 0.7 and set(doc["pad"]) == {"x"}


async def test_slow_drip_delivers_everything_eventually() -> None:
    async with FaultyUpstream(Fault.SLOW_DRIP, drip_interval=0) as up, aiohttp.ClientSession() as s:
        async with s.get(up.url) as r:
            assert r.status == 200 and await r.read() == OK_BODY


async def test_slow_drip_beats_a_read_timeout_but_not_a_total_deadline() -> None:
    # Every byte arrives well within sock_read; only a deadline on the whole exchange catches a drip.
    timeout = aiohttp.ClientTimeout(total=0.2, sock_read=1.0)
    async with (
        FaultyUpstream(Fault.SLOW_DRIP, drip_interval=0.01) as up,
        aiohttp.ClientSession(timeout=timeout) as s,
    ):
        with pytest.raises(asyncio.TimeoutError):
            async with s.get(up.url) as r:
                await r.read()


async def test_request_heads_and_bodies_are_recorded(session: aiohttp.ClientSession) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for part in (b"hello ", b"chunked ", b"world"):
            yield part

    async with FaultyUpstream() as up:
        async with session.post(f"{up.url}/p?q=1", data=chunks(), headers={"X-Trace": "abc"}) as r:
            assert r.status == 200
        async with session.put(up.url, data=b"0123456789", expect100=True) as r:
            assert r.status == 200
        first, second = up.requests
    assert (first.method, first.target, first.version) == ("POST", "/p?q=1", "HTTP/1.1")
    assert first.header("transfer-encoding") == "chunked" and first.header("x-trace") == "abc"
    assert first.body == b"hello chunked world"
    assert (second.method, second.body, second.header("expect")) == ("PUT", b"0123456789", "100-continue")


@pytest.mark.parametrize(
    "request_bytes",
    [b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"GET / HTTP/1.0\r\n\r\n"],
)
async def test_non_persistent_requests_get_one_answer_then_eof(request_bytes: bytes) -> None:
    async with FaultyUpstream() as up:
        raw = await raw_exchange(up, request_bytes + request_bytes)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in head
    assert body == OK_BODY
    assert up.requests_seen == 1


async def test_refused_url_refuses(session: aiohttp.ClientSession) -> None:
    with pytest.raises(aiohttp.ClientConnectorError):
        await session.get(refused_url())
