"""The Python floor: the least a raw-ASGI proxy must do, on the stack rollguard uses.

uvicorn (uvloop + httptools) in front, one aiohttp ClientSession behind, 90/10 random split. Nothing else:
no validation, no metrics, no logging. rollguard's data path is judged against this number.
"""

from __future__ import annotations

import argparse
import random
from typing import Any

import aiohttp
import uvicorn

# RFC 9110 §7.6.1: connection-scoped, never forwarded. content-length is recomputed by aiohttp for the
# request (the body is read whole) and kept on the response (the bytes are passed through unchanged).
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}
)
REQUEST_SKIP = HOP_BY_HOP | {"host", "content-length"}


class MinimalProxy:
    def __init__(self, baseline: str, candidate: str, canary_weight: float) -> None:
        self.baseline, self.candidate, self.weight = baseline, candidate, canary_weight / 100.0
        self.session: aiohttp.ClientSession | None = None

    def _new_session(self) -> aiohttp.ClientSession:
        # Created inside the server's loop; limit 0 = unbounded pool, so 50 clients never queue here.
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=0),
            auto_decompress=False,  # pass bytes through; a proxy must not re-encode
            skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
        )

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        upstream = self.candidate if random.random() < self.weight else self.baseline
        url = upstream + scope["raw_path"].decode("latin-1")
        if scope["query_string"]:
            url += "?" + scope["query_string"].decode("latin-1")
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        headers = [(k, v) for k, v in headers if k not in REQUEST_SKIP]
        assert self.session is not None
        async with self.session.request(scope["method"], url, headers=headers, data=bytes(body)) as resp:
            out = [(k, v) for k, v in resp.raw_headers if k.decode("latin-1").lower() not in HOP_BY_HOP]
            await send({"type": "http.response.start", "status": resp.status, "headers": out})
            async for chunk in resp.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.session = self._new_session()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.session is not None:
                    await self.session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--baseline", required=True, help="http://host:port")
    parser.add_argument("--candidate", required=True, help="http://host:port")
    parser.add_argument("--canary-weight", type=float, default=10.0, help="percent to the candidate")
    args = parser.parse_args()
    app = MinimalProxy(args.baseline, args.candidate, args.canary_weight)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
