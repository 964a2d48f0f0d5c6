"""The open-loop load driver behind ``rollguard loadtest`` (and the pacing of the demo's traffic).

Open loop: requests go out on a schedule fixed before the run (:func:`proxy.reports.load_spec.arrivals`),
whether or not earlier ones were answered, the way wrk2 and k6's arrival-rate executors work, so a slow
server cannot slow the load it is offered. Each request's latency runs from its *scheduled* send time, so
a stall anywhere (the server, a full connection pool, the driver itself) shows in the figures instead of
silently spacing the requests out (coordinated omission).

Why this engine: aiohttp's client is already a dependency, and on this kind of machine it is the fastest
Python client measured (16,300 req/s alone against nginx, against 3,950 for httpx over an aiohttp transport
and 585 for httpx's default). Locust was the other candidate: its users are closed loops (each waits for
its answer, then for ``wait_time``), so a slow server lowers the offered rate, which is the very error an
SLO check must not make; it also brings gevent, which monkey-patches the standard library. k6 is AGPL and
not Python, and its results can be folded in from its JSON summary instead. The scheduler below is small:
sleep until the next request is due, then dispatch every request whose time has come (a late wake-up
catches up, never drifts), yielding to the loop now and then so answers keep being read during a burst.

Contract of :class:`LoadDriver`:

- At most ``concurrency`` requests are in flight, over at most that many keep-alive connections. A request
  due while all are busy is *dropped* and counted (never queued: a queue inside the driver would hide the
  target's slowness behind a quietly lower rate).
- Every request is a POST of the next body from ``bodies`` with its headers; outcomes go to the
  :class:`LoadTally`, and the answer's ``x-rollguard-version`` names the version that answered.
- The driver's own delay (dispatch time minus scheduled time) is recorded per request: a backlog at the
  end of the run means the driver, not the target, set the pace, and the rate check says so.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import aiohttp

from proxy._tasks import TaskSet
from proxy._version import __version__
from proxy.reports.load import LoadTally
from proxy.reports.load_spec import arrivals

VERSION_HEADER = "x-rollguard-version"
YIELD_EVERY = 64  # dispatches in a row without a sleep before the scheduler lets answers be read

BodySource = Callable[[], tuple[bytes, Mapping[str, str]]]
"""The next request: its body and the headers that go with it (``x-user-id`` for sticky routing)."""


async def pace(
    schedule: Iterable[tuple[float, int]],
    dispatch: Callable[[float, float, int], None],
    *,
    stop: asyncio.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> float:
    """Call ``dispatch(due, now, stage)`` for each ``(offset, stage)`` of ``schedule`` once ``clock()``
    reaches the start plus ``offset``; returns the start. Ends with the schedule or once ``stop`` is set
    (seen within a tenth of a second). ``dispatch`` must not block: it starts a request, never awaits one.
    """
    start = clock()
    burst = 0
    for offset, stage in schedule:
        due = start + offset
        while True:
            if stop is not None and stop.is_set():
                return start
            wait = due - clock()
            if wait <= 0:
                break
            burst = 0
            await asyncio.sleep(min(wait, 0.1))
        burst += 1
        if burst >= YIELD_EVERY:  # far behind: still let the loop read answers between dispatches
            burst = 0
            await asyncio.sleep(0)
        dispatch(due, clock(), stage)
    return start


@dataclass(frozen=True, slots=True)
class RunTimes:
    """When a run started, when its last request was dispatched, and when its last answer came back
    (``time.monotonic()`` values)."""

    started: float
    sent_until: float
    ended: float

    @property
    def send_span_s(self) -> float:
        return self.sent_until - self.started


class LoadDriver:
    """Open-loop POSTs to ``url`` on the schedule of ``tally.profile``; outcomes go to ``tally``."""

    def __init__(
        self,
        url: str,
        bodies: BodySource,
        tally: LoadTally,
        *,
        concurrency: int = 256,
        timeout_s: float = 10.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if concurrency < 1 or not timeout_s > 0:
            raise ValueError("concurrency must be at least 1 and the timeout above zero")
        self.url = url
        self.bodies = bodies
        self.tally = tally
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.headers = {
            "content-type": "application/json",
            "user-agent": f"rollguard-loadtest/{__version__}",
            **(headers or {}),
        }
        self._tasks = TaskSet("loadtest")

    async def run(self) -> RunTimes:
        """Send the whole schedule, then wait for the answers still due (each bounded by its timeout)."""
        connector = aiohttp.TCPConnector(limit=self.concurrency, limit_per_host=0, ttl_dns_cache=300)
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
        ) as session:

            def dispatch(due: float, now: float, stage: int) -> None:
                self._dispatch(session, due, now, stage)

            try:
                started = await pace(arrivals(self.tally.profile), dispatch)
                sent_until = time.monotonic()
            finally:
                await self._tasks.drain(self.timeout_s + 1.0)
        return RunTimes(started=started, sent_until=sent_until, ended=time.monotonic())

    def _dispatch(self, session: aiohttp.ClientSession, due: float, now: float, stage: int) -> None:
        tally = self.tally
        tally.due(now - due)
        if tally.in_flight >= self.concurrency:
            tally.dropped(stage)
            return
        body, extra = self.bodies()
        headers = {**self.headers, **extra} if extra else self.headers
        tally.started(stage)
        self._tasks.spawn(self._request(session, body, headers, due, stage), name="loadtest-request")

    async def _request(
        self, session: aiohttp.ClientSession, body: bytes, headers: Mapping[str, str], due: float, stage: int
    ) -> None:
        try:
            async with session.post(self.url, data=body, headers=headers) as resp:
                await resp.read()
                done = time.monotonic()
                status, version = resp.status, resp.headers.get(VERSION_HEADER)
        except (TimeoutError, aiohttp.ServerTimeoutError):
            self.tally.failed(stage, "timeout", time.monotonic() - due)
            return
        except aiohttp.ClientConnectorError:
            self.tally.failed(stage, "connect", None)
            return
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, ConnectionError):
            self.tally.failed(stage, "reset", None)
            return
        except (aiohttp.ClientError, OSError):  # a payload cut short, a malformed answer
            self.tally.failed(stage, "protocol", None)
            return
        self.tally.answered(stage, status, version, done - due)
