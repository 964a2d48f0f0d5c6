"""Reading a client's request body from ASGI: held whole up to a cap, streamed beyond it.

A held body can be replayed (fallback to the baseline, mirrors, ``json:`` sticky keys, contracts). A
larger one streams to a single upstream without being held; its size limit is still enforced while it
streams, and why it failed is kept on the :class:`Body` because aiohttp reports whatever the body
iterator raises as a generic client error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from proxy.errors import BadRequest, BodyTooLarge, ClientGone

Receive = Callable[[], Awaitable[dict[str, Any]]]
# How much of a refused request's body (401, 403, 413, 429) the server may read and discard to keep the
# connection; above it, or when the size is unknown, the answer says ``connection: close``. One number for
# every refusal: the client may be unauthenticated, so it must not make us take in more than this.
DRAIN_ALLOWANCE = 64 * 1024


@dataclass(slots=True)
class Body:
    """A client body: held whole (``data``), or a held prefix plus a stream of the rest."""

    data: bytes
    rest: AsyncIterator[bytes] | None = None
    length: int | None = None  # the declared Content-Length, when there was one
    failure: Exception | None = None  # the client-side cause of a streamed body's failure

    @property
    def held(self) -> bool:
        return self.rest is None

    def outgoing_length(self) -> int | None:
        """Content-Length to send: the held size, the client's declared one, or none (chunked / no body)."""
        if self.held:
            return len(self.data) if self.data or self.length is not None else None
        return self.length

    def payload(self) -> bytes | AsyncIterator[bytes] | None:
        """What to hand aiohttp: bytes when held (None for an absent body), else a one-shot stream."""
        if self.held:
            return self.data if self.data or self.length is not None else None
        return _chain(self.data, self.rest)


def declared_length(headers: list[tuple[bytes, bytes]], limit: int) -> int | None:
    """The request's Content-Length, checked against ``limit`` before a byte of the body is read."""
    for k, v in headers:
        if k == b"content-length":
            try:
                declared = int(v)
            except ValueError as exc:
                raise BadRequest("Content-Length is not a number") from exc
            if declared > limit:
                raise BodyTooLarge(f"body of {declared} bytes is over the limit of {limit}", unread=declared)
            return declared
    return None


async def read_request_body(
    receive: Receive, *, declared: int | None, max_bytes: int, hold_bytes: int
) -> Body:
    """Read the body: whole when it ends within ``hold_bytes``, else a held prefix and a stream."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise BodyTooLarge(f"body is over the limit of {max_bytes} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return Body(data=b"".join(chunks), length=declared)
        if size > hold_bytes:
            body = Body(data=b"".join(chunks), length=declared)
            body.rest = _stream_rest(receive, size, max_bytes, body)
            return body


async def _stream_rest(receive: Receive, already: int, limit: int, body: Body) -> AsyncIterator[bytes]:
    size = already
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            body.failure = ClientGone()
            raise body.failure
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            body.failure = BodyTooLarge(f"body is over the limit of {limit} bytes")
            raise body.failure
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


async def _chain(first: bytes, rest: AsyncIterator[bytes] | None) -> AsyncIterator[bytes]:
    if first:
        yield first
    if rest is not None:
        async for chunk in rest:
            yield chunk
