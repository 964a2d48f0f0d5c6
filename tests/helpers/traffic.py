"""Traffic for end-to-end tests: a valid body, a raw-socket server, open-loop load, waiting for a phase."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import httpx

VALID_BODY = {"features": {"amount": 12.5, "tenure_months": 7, "txn_24h": 2, "region": "br-se"}}


@contextlib.asynccontextmanager
async def raw_http_server(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], object],
) -> AsyncIterator[str]:
    """A throwaway raw-socket HTTP server on loopback; yields its URL."""

    async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)  # type: ignore[misc]
        finally:
            writer.close()

    server = await asyncio.start_server(wrapped, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


async def drive_traffic(
    data_url: str, stop: asyncio.Event, rps: float = 300.0, seed: int = 3
) -> dict[str, int]:
    """Open-loop traffic of valid bodies with sticky user ids until ``stop``; counts answers by status."""
    import random

    import aiohttp

    from proxy.demo.sample_model import features_generator

    rng = random.Random(seed)
    counts: dict[str, int] = {}
    pending: set[asyncio.Task[None]] = set()
    sem = asyncio.Semaphore(48)
    async with aiohttp.ClientSession(data_url) as session:

        async def one(body: dict[str, object]) -> None:
            async with sem:
                try:
                    async with session.post(
                        "/v1/infer", json=body, headers={"x-user-id": str(body["user_id"])}
                    ) as r:
                        await r.read()
                        key = f"{r.status} {r.headers.get('x-rollguard-version', '-')}"
                except aiohttp.ClientError as exc:
                    key = type(exc).__name__
                counts[key] = counts.get(key, 0) + 1

        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while not stop.is_set():
            task = asyncio.create_task(one(features_generator(rng)))
            pending.add(task)
            task.add_done_callback(pending.discard)
            next_at += 1.0 / rps
            await asyncio.sleep(max(0.0, next_at - loop.time()))
        await asyncio.gather(*pending)
    return counts


async def wait_for_phase(admin: httpx.AsyncClient, phases: set[str], within: float) -> dict[str, object]:
    """Poll /status until the rollout is in one of ``phases``; returns the rollout object."""
    async with asyncio.timeout(within):
        while True:
            rollout: dict[str, object] = (await admin.get("/status")).json()["rollout"]
            if rollout["phase"] in phases:
                return rollout
            await asyncio.sleep(0.1)
