"""Tracing micro-benchmark: what tracing adds to one request on the event loop, in microseconds.

    .venv/bin/python benchmarks/bench_tracing.py [--out FILE]

One "request" is what the data path does when tracing is on: extract the client's traceparent, start the
SERVER span, write its trace id into the access-log entry, start one attempt's CLIENT span and build the
upstream headers with its traceparent, then end both spans with their attributes. Rows: sample ratio 0
(nothing recorded: the price every request pays once tracing is on), ratio 1 (recorded: span objects,
attributes, the batch queue), and an incoming sampled traceparent. Exporting happens in the SDK's
thread and is not in these numbers (the `tracing` rows of run.py measure it under load); the exporter
points at a closed port, so the queue fills and spans are dropped at the same per-span cost.
Each row: ``timeit`` with autorange, best of 5. Tracing off costs one ``is None`` check and is not a row.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from micro import best_us, finish  # noqa: E402 - benchmarks/micro.py, beside this script

from proxy.config.model import RouteConfig, TracingConfig, UpstreamConfig
from proxy.content.contracts import CompiledRoute
from proxy.observe.exchange import Exchange
from proxy.observe.tracing import Tracing
from proxy.upstream.attempt import Attempt
from proxy.upstream.pool import UpstreamPool

ROUTE = CompiledRoute.build(RouteConfig(name="infer", path="/v1/infer"), 65536)
ASGI_HEADERS = [
    (b"host", b"api.example.com"),
    (b"content-type", b"application/json"),
    (b"content-length", b"160"),
    (b"x-user-id", b"u-20394"),
]
UPSTREAM_HEADERS = [(k.decode(), v.decode()) for k, v in ASGI_HEADERS] + [("x-request-id", "0" * 32)]
SAMPLED_PARENT = (b"traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def one_request(
    tracing: Tracing, pool: UpstreamPool, headers: list[tuple[bytes, bytes]]
) -> Callable[[], None]:
    """What tracing does for one request with one attempt: open the spans, stamp the attempt, end all."""

    def run() -> None:
        ex = Exchange(
            request_id="a25ded7a6e30326d4d854e408656cc41",
            method="POST",
            path="/v1/infer",
            route_name="infer",
            route=ROUTE,
            scope={"headers": headers},
        )
        tracing.begin(ex)
        assert ex.trace is not None
        ex.trace.stamp(0, pool, UPSTREAM_HEADERS)
        ex.answered = Attempt(pool=pool, started=ex.started)
        ex.attempts.append(ex.answered)
        ex.status = 200
        tracing.on_exchange(ex)

    return run


async def measure() -> list[dict[str, Any]]:
    endpoint = f"http://127.0.0.1:{closed_port()}/v1/traces"
    pool = UpstreamPool(UpstreamConfig(role="baseline", url="http://127.0.0.1:9", version="v1"))
    rows = [
        ("sample_ratio 0, no traceparent", 0.0, ASGI_HEADERS),
        ("sample_ratio 0.01, no traceparent", 0.01, ASGI_HEADERS),
        ("sample_ratio 1, no traceparent", 1.0, ASGI_HEADERS),
        ("sample_ratio 0, sampled traceparent", 0.0, [*ASGI_HEADERS, SAMPLED_PARENT]),
    ]
    results = []
    for name, ratio, headers in rows:
        tracing = Tracing(TracingConfig(exporter="otlp", endpoint=endpoint, sample_ratio=ratio, timeout=0.5))
        try:
            us, number = best_us(one_request(tracing, pool, headers))
        finally:
            await tracing.close()
        results.append({"what": name, "us_per_request": round(us, 2), "loops": number})
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    results = asyncio.run(measure())
    print(f"{'what':<40} {'µs/request':>11} {'loops':>8}")
    print("-" * 61)
    for r in results:
        print(f"{r['what']:<40} {r['us_per_request']:>11.2f} {r['loops']:>8}")
    finish(args.out, REPO, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
