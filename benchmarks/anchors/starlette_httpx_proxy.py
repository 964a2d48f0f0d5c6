"""What most people write first: a Starlette catch-all route proxying through a shared httpx.AsyncClient.

Same server (uvicorn + uvloop + httptools) and the same 90/10 random split as the minimal anchor, so the
gap between the two rows is the framework route plus httpx's default transport.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}
)
# httpx sets host and content-length itself, and `.content` is already decoded, so its encoding headers go.
REQUEST_SKIP = HOP_BY_HOP | {"host", "content-length"}
RESPONSE_SKIP = HOP_BY_HOP | {"content-length", "content-encoding"}
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


def build_app(baseline: str, candidate: str, canary_weight: float) -> Starlette:
    weight = canary_weight / 100.0
    # The default client, the way tutorials show it: one shared instance, default pool and timeouts.
    client: httpx.AsyncClient | None = None

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        nonlocal client
        async with httpx.AsyncClient() as client:
            yield

    async def proxy(request: Request) -> Response:
        assert client is not None
        upstream = candidate if random.random() < weight else baseline
        url = upstream + request.url.path
        if request.url.query:
            url += "?" + request.url.query
        headers = [(k, v) for k, v in request.headers.items() if k not in REQUEST_SKIP]
        resp = await client.request(request.method, url, headers=headers, content=await request.body())
        out = {k: v for k, v in resp.headers.items() if k.lower() not in RESPONSE_SKIP}
        return Response(content=resp.content, status_code=resp.status_code, headers=out)

    return Starlette(routes=[Route("/{path:path}", proxy, methods=METHODS)], lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--baseline", required=True, help="http://host:port")
    parser.add_argument("--candidate", required=True, help="http://host:port")
    parser.add_argument("--canary-weight", type=float, default=10.0, help="percent to the candidate")
    args = parser.parse_args()
    app = build_app(args.baseline, args.candidate, args.canary_weight)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
