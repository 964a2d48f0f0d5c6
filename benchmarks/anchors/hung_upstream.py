"""A hung model server: accepts every connection, reads every request, never answers.

The shadow candidate of the `*_hung` rows (benchmarks/README.md): the worst a shadow can do to a proxy
that mirrors to it, because the proxy's connections, tasks and buffers stay held until its own timeout
fires. Connections stay open until the peer closes them. On SIGTERM/SIGINT it prints one JSON line of
counters on stdout (the harness keeps it in the row's result) and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import signal
import sys


class Stats:
    def __init__(self) -> None:
        self.connections = 0  # accepted, ever
        self.open = 0
        self.max_open = 0
        self.heads = 0  # request heads seen (end-of-head markers; close enough for a counter)
        self.bytes = 0

    def to_json(self) -> str:
        return json.dumps({"stats": "hung_upstream", **vars(self)})


class Hung(asyncio.Protocol):
    """Reads and discards; never writes. The transport is referenced by the loop until the peer goes."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.stats.connections += 1
        self.stats.open += 1
        self.stats.max_open = max(self.stats.max_open, self.stats.open)

    def data_received(self, data: bytes) -> None:
        self.stats.bytes += len(data)
        chunk = self.tail + data
        self.stats.heads += chunk.count(b"\r\n\r\n")
        self.tail = chunk[-3:]

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.open -= 1


async def serve(host: str, port: int) -> None:
    stats = Stats()
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    server = await loop.create_server(lambda: Hung(stats), host, port, backlog=4096, reuse_address=True)
    await stop
    # Counters first: closing may wait on the connections it holds, and the harness stops waiting.
    print(stats.to_json(), flush=True)
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    # A naive mirror opens one connection per request and holds it until its timeout: thousands at once.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.host, args.port))
    else:
        uvloop.run(serve(args.host, args.port))
    sys.exit(0)


if __name__ == "__main__":
    main()
