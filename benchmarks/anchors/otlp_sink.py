"""A loopback OTLP/HTTP traces endpoint that accepts every export, counts it and throws it away.

The collector of the tracing rows: it decodes each POST /v1/traces (ExportTraceServiceRequest, protobuf)
only to count the spans, answers 200 with an empty ExportTraceServiceResponse, and serves its counters
as JSON on GET /stats so the harness can tell exported spans from dropped ones.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

STATS = {"exports": 0, "spans": 0, "bytes": 0, "bad": 0}


async def traces(request: web.Request) -> web.Response:
    body = await request.read()
    STATS["exports"] += 1
    STATS["bytes"] += len(body)
    try:
        msg = ExportTraceServiceRequest.FromString(body)
    except Exception:  # a malformed export is counted, never fatal
        STATS["bad"] += 1
        return web.Response(status=400)
    STATS["spans"] += sum(len(ss.spans) for rs in msg.resource_spans for ss in rs.scope_spans)
    return web.Response(body=b"", content_type="application/x-protobuf")


async def stats(request: web.Request) -> web.Response:
    return web.Response(text=json.dumps(STATS), content_type="application/json")


async def main(port: int) -> None:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/traces", traces)
    app.router.add_get("/stats", stats)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    print(json.dumps({"stats": "otlp_sink", **STATS}), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(main(parser.parse_args().port))
