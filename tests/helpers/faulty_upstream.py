"""A fault-injecting HTTP/1.1 upstream on raw asyncio streams, for tests of failure handling.

It speaks just enough HTTP/1.1 to be a real upstream (request heads, Content-Length and chunked request
bodies, keep-alive, ``Expect: 100-continue``) and misbehaves at the byte level on demand. The fault is read
once per request, when its head has arrived, so ``upstream.fault = Fault.X`` applies from the next request
on, kept-alive connections included.

What an aiohttp client sees for each fault (checked in ``tests/test_faulty_upstream.py``):

============================  ================================================================================
``OK``                        200 with :data:`OK_BODY`, keep-alive
``STATUS_500``, ``_503``      that status, small JSON body (503 with ``Retry-After: 1``), keep-alive
``RESET_BEFORE_HEADERS``      ``ClientOSError`` with errno ECONNRESET, no response
``RESET_MID_BODY``            200 head (Content-Length 100000), then ``ClientPayloadError`` reading the body
``HANG_BEFORE_HEADERS``       nothing: the client's own timeout fires (``asyncio.TimeoutError``)
``HANG_MID_BODY``             200 head, then the client's read timeout fires while reading the body
``GARBAGE``                   ``ClientResponseError`` ("Bad status line"), then the socket closes
``DUPLICATE_CONTENT_LENGTH``  ``ClientResponseError`` ("Duplicate Content-Length"), then the socket closes
``HUGE_BODY``                 200, a valid JSON body of exactly ``huge_body_bytes``, Content-Length declared
``SLOW_DRIP``                 the ``OK`` answer, a byte per ``drip_interval``; only a deadline catches it
:func:`refused_url`           ``ClientConnectorError`` (connection refused)
============================  ================================================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
import ssl
import struct
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType

__all__ = ["OK_BODY", "Fault", "FaultyUpstream", "SeenRequest", "refused_url"]

OK_BODY = (
    b'{"score":0.7,"decision":true,"model_version":"faulty","prediction_id":"x",'
    b'"served_at":"2026-01-01T00:00:00Z"}'
)
_MAX_HEAD = 256 * 1024
_DECLARED_MID_BODY = 100_000
_REASONS = {200: "OK", 500: "Internal Server Error", 503: "Service Unavailable"}


class Fault(enum.Enum):
    OK = "ok"
    RESET_BEFORE_HEADERS = "reset_before_headers"
    RESET_MID_BODY = "reset_mid_body"
    HANG_BEFORE_HEADERS = "hang_before_headers"
    HANG_MID_BODY = "hang_mid_body"
    GARBAGE = "garbage"
    DUPLICATE_CONTENT_LENGTH = "duplicate_content_length"
    HUGE_BODY = "huge_body"
    SLOW_DRIP = "slow_drip"
    STATUS_500 = "status_500"
    STATUS_503 = "status_503"


@dataclass
class SeenRequest:
    """One request head as it arrived; ``body`` is None when the fault answered before reading it."""

    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes | None = None

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)


@dataclass(eq=False)  # hashed by identity, to live in a set
class _Conn:
    writer: asyncio.StreamWriter
    task: asyncio.Task[None] | None = field(default=None)


class _Reset(Exception):
    """Raised inside a handler to end its connection with a TCP reset."""


class FaultyUpstream:
    """An HTTP/1.1 server on 127.0.0.1 that fails in the way ``fault`` says.

    ``requests_seen`` counts request heads read; ``requests`` keeps the last 100 of them; ``open_connections``
    is the number of client sockets currently open. ``close()`` aborts every client socket and cancels every
    handler, so nothing outlives the test.
    """

    def __init__(
        self,
        fault: Fault = Fault.OK,
        *,
        huge_body_bytes: int = 8 * 1024 * 1024,
        partial_body_bytes: int = 1000,
        drip_interval: float = 0.05,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.fault = fault
        self.ssl_context = ssl_context  # serve HTTPS with it; handlers run only after a good handshake
        self.huge_body_bytes = huge_body_bytes
        self.partial_body_bytes = partial_body_bytes
        self.drip_interval = drip_interval
        self.connections_accepted = 0
        self.requests_seen = 0
        self.requests: deque[SeenRequest] = deque(maxlen=100)
        self._server: asyncio.Server | None = None
        self._conns: set[_Conn] = set()
        # Set and replaced on every change of requests_seen or open_connections, for the wait_* methods.
        self._changed = asyncio.Event()
        self.port = 0

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.port}"

    @property
    def open_connections(self) -> int:
        return len(self._conns)

    async def start(self) -> FaultyUpstream:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", 0, limit=_MAX_HEAD, ssl=self.ssl_context
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        conns, self._conns = list(self._conns), set()
        for conn in conns:
            conn.writer.transport.abort()
            if conn.task is not None:
                conn.task.cancel()
        await asyncio.gather(*(c.task for c in conns if c.task is not None), return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> FaultyUpstream:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def wait_for_requests(self, n: int) -> None:
        """Wait until at least ``n`` request heads have been read in total (bound it with asyncio.timeout)."""
        while self.requests_seen < n:
            await self._changed.wait()

    async def wait_for_open_connections(self, n: int) -> None:
        """Wait until exactly ``n`` client sockets are open, e.g. 0 once a client gave up a hung exchange."""
        while self.open_connections != n:
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Conn(writer, asyncio.current_task())
        self._conns.add(conn)
        self.connections_accepted += 1
        self._notify()
        try:
            while await self._serve_one(reader, writer):
                pass
            # The abort() below would drop anything still buffered in the transport.
            await _flush(writer)
        except _Reset:
            _reset(writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass  # the client went away or sent something this small parser does not take
        except asyncio.CancelledError:
            # Only close() cancels a handler. Ending normally matters: on Python 3.11 start_server's done
            # callback calls task.exception() on a cancelled task and logs the CancelledError it raises.
            pass
        finally:
            self._conns.discard(conn)
            writer.transport.abort()
            self._notify()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection is to end without error."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False  # clean EOF between requests
        request_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
        method, target, version = request_line.split(" ", 2)
        headers = [(k.strip(), v.strip()) for k, v in (line.split(":", 1) for line in header_lines)]
        seen = SeenRequest(method, target, version, headers)
        self.requests.append(seen)
        self.requests_seen += 1
        self._notify()
        fault = self.fault
        if fault is Fault.RESET_BEFORE_HEADERS:
            raise _Reset
        if (seen.header("expect") or "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        seen.body = await _read_body(reader, seen)
        connection = (seen.header("connection") or "").lower()
        keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"

        if fault is Fault.OK:
            await _respond(writer, 200, OK_BODY, keep_alive)
        elif fault in (Fault.STATUS_500, Fault.STATUS_503):
            status = 500 if fault is Fault.STATUS_500 else 503
            extra = [("Retry-After", "1")] if status == 503 else []
            await _respond(writer, status, b'{"error":"injected %d"}' % status, keep_alive, extra)
        elif fault in (Fault.RESET_MID_BODY, Fault.HANG_MID_BODY):
            writer.write(_head(200, _DECLARED_MID_BODY, keep_alive=True))
            writer.write(b" " * min(self.partial_body_bytes, _DECLARED_MID_BODY - 1))
            await _flush(writer)
            if fault is Fault.RESET_MID_BODY:
                raise _Reset
            await _until_eof(reader)
            return False
        elif fault is Fault.HANG_BEFORE_HEADERS:
            await _until_eof(reader)
            return False
        elif fault is Fault.GARBAGE:
            writer.write(b"\x16\x03\x01\x02\x00SSH-2.0-not-http \xff\xfe\x00\r\n\r\n")
            await _flush(writer)
            return False
        elif fault is Fault.DUPLICATE_CONTENT_LENGTH:
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\nContent-Length: %d\r\n\r\n%s"
                % (len(OK_BODY), len(OK_BODY) + 7, OK_BODY)
            )
            await _flush(writer)
            return False
        elif fault is Fault.HUGE_BODY:
            await self._send_huge(writer, keep_alive)
        elif fault is Fault.SLOW_DRIP:
            answer = _head(200, len(OK_BODY), keep_alive) + OK_BODY
            for i in range(len(answer)):
                if i:
                    await asyncio.sleep(self.drip_interval)
                writer.write(answer[i : i + 1])
                await writer.drain()
        return keep_alive

    async def _send_huge(self, writer: asyncio.StreamWriter, keep_alive: bool) -> None:
        # A valid JSON document padded to the exact size, so a client that does parse it can.
        prefix, suffix = OK_BODY[:-1] + b',"pad":"', b'"}'
        pad = self.huge_body_bytes - len(prefix) - len(suffix)
        if pad < 0:
            raise ValueError(f"huge_body_bytes must be at least {len(prefix) + len(suffix)}")
        writer.write(_head(200, self.huge_body_bytes, keep_alive) + prefix)
        block = b"x" * 65536
        while pad > 0:
            writer.write(block[: min(pad, len(block))])
            pad -= len(block)
            await writer.drain()
        writer.write(suffix)
        await writer.drain()


def _head(status: int, length: int, keep_alive: bool, extra: list[tuple[str, str]] | None = None) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {_REASONS[status]}",
        "Content-Type: application/json",
        f"Content-Length: {length}",
        f"Connection: {'keep-alive' if keep_alive else 'close'}",
        *(f"{k}: {v}" for k, v in extra or ()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _respond(
    writer: asyncio.StreamWriter,
    status: int,
    body: bytes,
    keep_alive: bool,
    extra: list[tuple[str, str]] | None = None,
) -> None:
    writer.write(_head(status, len(body), keep_alive, extra) + body)
    await writer.drain()


async def _read_body(reader: asyncio.StreamReader, seen: SeenRequest) -> bytes:
    if "chunked" in (seen.header("transfer-encoding") or "").lower():
        parts: list[bytes] = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass  # trailers
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
    length = int(seen.header("content-length") or 0)
    return await reader.readexactly(length) if length else b""


async def _flush(writer: asyncio.StreamWriter) -> None:
    # drain() only waits for the buffer to fall under the high-water mark; with a mark of 0 it waits until
    # everything is handed to the kernel, which must happen before a reset discards the rest.
    writer.transport.set_write_buffer_limits(high=0)
    await writer.drain()


async def _until_eof(reader: asyncio.StreamReader) -> None:
    """Hang: hold the socket open, discarding input, until the client closes it (or close() cancels us)."""
    while await reader.read(65536):
        pass


def _reset(writer: asyncio.StreamWriter) -> None:
    # SO_LINGER with a zero timeout makes close() send RST instead of FIN: the peer sees ECONNRESET.
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def refused_url() -> str:
    """A ``http://127.0.0.1:PORT`` URL where nothing listens: the port was free a moment ago.

    Another process could take the port in between; on a test machine that is rare enough to accept.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
