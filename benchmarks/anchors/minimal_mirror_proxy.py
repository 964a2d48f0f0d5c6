"""The naive Python mirror: the minimal raw-ASGI proxy, plus a fire-and-forget copy of every request.

Exactly `minimal_asgi_proxy.py` on the client's path; in addition every request is sent once more to the
mirror target from a bare `asyncio.create_task` (no reference kept, no bound on how many are in flight) on
a second aiohttp session of the same kind, with a 2 s total timeout, and its answer is read and dropped.
This is what most people write first for shadow traffic, and what benchmarks/README.md shows growing
memory against a hung shadow: every request parks a task, a socket and its buffers for the full timeout.
On shutdown it prints one JSON line of mirror counters on stdout (the harness keeps it in the row).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import Counter
from typing import Any

import aiohttp
import uvicorn
from minimal_asgi_proxy import REQUEST_SKIP, MinimalProxy


class MirroringProxy(MinimalProxy):
    def __init__(
        self, baseline: str, candidate: str, canary_weight: float, mirror: str, timeout_s: float
    ) -> None:
        super().__init__(baseline, candidate, canary_weight)
        self.mirror = mirror
        self.mirror_timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.shadow: aiohttp.ClientSession | None = None
        self.outcomes: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        data = bytes(body)
        url = self.mirror + scope["raw_path"].decode("latin-1")
        if scope["query_string"]:
            url += "?" + scope["query_string"].decode("latin-1")
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        headers = [(k, v) for k, v in headers if k not in REQUEST_SKIP]
        asyncio.create_task(self._mirror(scope["method"], url, headers, data))  # the naive part

        async def replay() -> dict[str, Any]:
            return {"type": "http.request", "body": data, "more_body": False}

        await super().__call__(scope, replay, send)

    async def _mirror(self, method: str, url: str, headers: list[tuple[str, str]], data: bytes) -> None:
        assert self.shadow is not None
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            async with self.shadow.request(
                method, url, headers=headers, data=data, timeout=self.mirror_timeout
            ) as resp:
                await resp.read()
            self.outcomes["answered"] += 1
        except Exception as exc:  # a mirror never reaches the client; count, do not log per request
            self.outcomes[type(exc).__name__] += 1
        finally:
            self.in_flight -= 1

    async def _lifespan(self, receive: Any, send: Any) -> None:
        async def send_(message: dict[str, Any]) -> None:
            if message["type"] == "lifespan.startup.complete":
                self.shadow = self._new_session()
            elif message["type"] == "lifespan.shutdown.complete" and self.shadow is not None:
                counters = {
                    "stats": "minimal_mirror",
                    "outcomes": dict(self.outcomes),
                    "in_flight_at_exit": self.in_flight,
                    "max_in_flight": self.max_in_flight,
                }
                print(json.dumps(counters), flush=True)
                await self.shadow.close()
            await send(message)

        await super()._lifespan(receive, send_)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--baseline", required=True, help="http://host:port")
    parser.add_argument("--candidate", required=True, help="http://host:port")
    parser.add_argument("--canary-weight", type=float, default=0.0, help="percent to the candidate")
    parser.add_argument("--mirror", required=True, help="http://host:port that gets a copy of every request")
    parser.add_argument("--mirror-timeout", type=float, default=2.0, help="seconds, total per mirror")
    args = parser.parse_args()
    app = MirroringProxy(args.baseline, args.candidate, args.canary_weight, args.mirror, args.mirror_timeout)
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
