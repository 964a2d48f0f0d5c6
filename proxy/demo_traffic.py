"""The demo's clients of the proxy: open-loop traffic through the data plane, tallied per version, and an
operator on the admin API (:class:`Operator`).

Contract:

- :meth:`TrafficGenerator.run` sends ``rps`` requests per second on a fixed schedule whether or not earlier
  answers have arrived (open loop), with at most ``concurrency`` in flight. A send that finds them all busy
  is *shed* and counted, never queued: a slow proxy shows up as shed load and latency, not as a quietly
  lower request rate.
- Each request carries ``x-user-id: u-<n>`` from a fixed pool of users, so the proxy's sticky routing
  keeps a user on one version. A share ``invalid_share`` of bodies breaks the route's contract (a negative
  amount); the proxy must answer those ``400 application/problem+json`` without forwarding them ("rejected
  by contract"). Any other answer to an invalid body is an error.
- A valid request answered 2xx with ``x-rollguard-version`` counts for that version; any other outcome
  (non-2xx, no version header, connection failure, timeout) is an error.
- Step attribution (:meth:`TrafficStats.begin_transition` before a weight change, :meth:`begin_step` once the
  admin API acknowledged it): a request counts towards a step only when it started *and* finished inside
  that step, so every request in a step's tally was routed under that step's weight and the observed share
  can be compared exactly with the weight (0% and 100% are exact, not "about").
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families
from rich.table import Table

from ._tasks import TaskSet
from .sample_model import features_generator

VERSION_HEADER = "x-rollguard-version"
_PROBLEM = "application/problem+json"


@dataclass(slots=True)
class StepTally:
    """What one rollout step saw, counting only requests routed under its weight (see module docstring)."""

    label: str
    weight: float  # the candidate weight in percent the admin API acknowledged
    by_version: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    rejected: int = 0

    @property
    def answered(self) -> int:
        return sum(self.by_version.values())

    def share(self, version: str) -> float | None:
        """Observed share of ``version`` in percent of the answered requests; None before any answer."""
        return 100.0 * self.by_version[version] / self.answered if self.answered else None


@dataclass(frozen=True, slots=True)
class WindowStats:
    """One version over the recent window: answered requests, share of all answered, latency in ms."""

    requests: int
    share: float | None
    p50: float | None
    p95: float | None
    p99: float | None


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def fmt_pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in (0, 1]) of already sorted values; None when there are none."""
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))]


class TrafficStats:
    """Counters since the start, per-step tallies and a recent window, fed by :class:`TrafficGenerator`.

    Single-threaded by design: only the event loop that runs the generator reads or writes it.
    """

    def __init__(self, versions: Sequence[str], *, window_s: float = 5.0, max_window: int = 200_000) -> None:
        self.versions = tuple(versions)
        self.window_s = window_s
        self.sent = 0
        self.shed = 0
        self.rejected = 0
        self.by_version: Counter[str] = Counter()
        self.errors_by_version: Counter[str] = Counter()  # "" for errors no version answered
        self.error_samples: deque[str] = deque(maxlen=5)
        self.steps: list[StepTally] = []
        self._current: StepTally | None = None
        self._epoch = 0
        # (finish time, version, latency ms); the bound only matters if the rate is far above the demo's.
        self._recent: deque[tuple[float, str, float]] = deque(maxlen=max_window)

    @property
    def epoch(self) -> int:
        """Changes at every transition and step start; a request compares it at start and at finish."""
        return self._epoch

    @property
    def errors(self) -> int:
        return sum(self.errors_by_version.values())

    @property
    def answered(self) -> int:
        return sum(self.by_version.values())

    def begin_transition(self) -> None:
        """A weight change is about to be requested: nothing in flight from now on belongs to a step."""
        self._epoch += 1
        self._current = None

    def begin_step(self, label: str, weight: float) -> StepTally:
        """The weight change was acknowledged: requests started from now on count towards this step."""
        self._epoch += 1
        self._current = StepTally(label=label, weight=weight)
        self.steps.append(self._current)
        return self._current

    def _step(self, epoch: int) -> StepTally | None:
        return self._current if epoch == self._epoch else None

    def answered_ok(self, epoch: int, version: str, latency_ms: float) -> None:
        self.by_version[version] += 1
        self._recent.append((time.monotonic(), version, latency_ms))
        if (step := self._step(epoch)) is not None:
            step.by_version[version] += 1

    def rejected_by_contract(self, epoch: int) -> None:
        self.rejected += 1
        if (step := self._step(epoch)) is not None:
            step.rejected += 1

    def error(self, epoch: int, version: str | None, why: str) -> None:
        self.errors_by_version[version or ""] += 1
        self.error_samples.append(why)
        if (step := self._step(epoch)) is not None:
            step.errors += 1

    def window(self, now: float | None = None) -> dict[str, WindowStats]:
        """Per version over the last ``window_s`` seconds (of ``time.monotonic``)."""
        now = time.monotonic() if now is None else now
        while self._recent and self._recent[0][0] < now - self.window_s:
            self._recent.popleft()
        latencies: dict[str, list[float]] = {v: [] for v in self.versions}
        for _, version, ms in self._recent:
            latencies.setdefault(version, []).append(ms)
        total = len(self._recent)
        out: dict[str, WindowStats] = {}
        for version, values in latencies.items():
            values.sort()
            out[version] = WindowStats(
                requests=len(values),
                share=100.0 * len(values) / total if total else None,
                p50=percentile(values, 0.50),
                p95=percentile(values, 0.95),
                p99=percentile(values, 0.99),
            )
        return out

    def report(self) -> list[str]:
        """The summary's traffic part: totals, requests per version, observed candidate share per step."""
        baseline, candidate = self.versions
        lines = [
            f"traffic: {self.sent} requests sent: {self.answered} answered by a model, {self.rejected} "
            f"rejected by contract (400 problem+json), {self.errors} errors, {self.shed} shed",
            f"  baseline {baseline}: {self.by_version[baseline]} requests",
            f"  candidate {candidate}: {self.by_version[candidate]} requests",
            "observed candidate share per step (requests routed entirely under that step's weight):",
        ]
        lines += [
            f"  {st.label}  weight {st.weight:g}%  candidate share {fmt_pct(st.share(candidate))} "
            f"of {st.answered} requests  errors {st.errors}  rejected {st.rejected}"
            for st in self.steps
        ]
        return lines + [f"error: {why}" for why in self.error_samples]

    def to_json(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "answered": dict(self.by_version),
            "rejected_by_contract": self.rejected,
            "errors": self.errors,
            "error_samples": list(self.error_samples),
            "shed": self.shed,
            "steps": [
                {
                    "label": st.label,
                    "weight": st.weight,
                    "answered": dict(st.by_version),
                    "candidate_share": st.share(self.versions[1]),
                    "errors": st.errors,
                    "rejected": st.rejected,
                }
                for st in self.steps
            ],
        }


def window_table(stats: TrafficStats, candidate_weight: float | None) -> Table:
    """Baseline and candidate over the recent window, each beside the weight configured for it."""
    window = stats.window()
    table = Table(title=f"last {stats.window_s:g}s (latency in ms)", title_justify="left")
    for col in ("", "requests", "share", "weight", "errors", "p50", "p95", "p99"):
        table.add_column(col, justify="right" if col else "left", no_wrap=True)
    w = candidate_weight
    for role, version, weight in zip(
        ("baseline", "candidate"), stats.versions, (None if w is None else 100 - w, w), strict=True
    ):
        ws = window[version]
        table.add_row(
            f"{role} {version}",
            str(stats.by_version[version]),
            fmt_pct(ws.share),
            "-" if weight is None else f"{weight:g}%",
            str(stats.errors_by_version[version]),
            fmt_ms(ws.p50),
            fmt_ms(ws.p95),
            fmt_ms(ws.p99),
        )
    return table


def status_line(stats: TrafficStats) -> str:
    """One plain line: per version count, window share and p95; then errors, rejections, shed."""
    window = stats.window()
    parts = [
        f"{v} n={stats.by_version[v]} share{stats.window_s:g}s={fmt_pct(window[v].share)} "
        f"p95={fmt_ms(window[v].p95)}ms"
        for v in stats.versions
    ]
    parts.append(f"errors={stats.errors} rejected={stats.rejected} shed={stats.shed}")
    return " | ".join(parts)


class TrafficGenerator:
    """Paced POSTs of :func:`features_generator` bodies to ``url``; outcomes go to ``stats``."""

    def __init__(
        self,
        url: str,
        stats: TrafficStats,
        *,
        rps: float,
        users: int = 3000,
        invalid_share: float = 0.02,
        concurrency: int = 64,
        timeout_s: float = 5.0,
        seed: int | None = 7,
    ) -> None:
        if rps <= 0 or concurrency < 1 or users < 1 or not 0 <= invalid_share <= 1:
            raise ValueError("rps and concurrency must be positive, users >= 1, invalid_share in [0, 1]")
        self.url = url
        self.stats = stats
        self.rps = rps
        self.users = users
        self.invalid_share = invalid_share
        self.concurrency = concurrency
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._rng = random.Random(seed)
        self._tasks = TaskSet("demo-traffic")
        self.in_flight = 0

    async def run(self, stop: asyncio.Event, *, drain_s: float = 5.0) -> None:
        """Send on schedule until ``stop`` is set, then give in-flight requests ``drain_s`` to finish."""
        connector = aiohttp.TCPConnector(limit=self.concurrency)
        async with aiohttp.ClientSession(connector=connector, timeout=self.timeout) as session:
            try:
                await self._pace(session, stop)
            finally:
                # Stragglers past the drain are cancelled: the summary must not wait on a hung request.
                await self._tasks.drain(drain_s)

    async def _pace(self, session: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        interval = 1.0 / self.rps
        start = time.monotonic()
        due = 0  # requests due so far; the schedule never drifts with sleep overshoot or slow answers
        while not stop.is_set():
            elapsed = time.monotonic() - start
            for _ in range(int(elapsed / interval) + 1 - due):
                due += 1
                self._send_one(session)
            wait = start + due * interval - time.monotonic()
            if wait > 0:
                try:
                    await asyncio.wait_for(stop.wait(), wait)
                except TimeoutError:
                    pass

    def _send_one(self, session: aiohttp.ClientSession) -> None:
        if self.in_flight >= self.concurrency:
            self.stats.shed += 1
            return
        doc = features_generator(self._rng)
        user = f"u-{self._rng.randrange(1, self.users + 1)}"
        doc["user_id"] = user
        invalid = self._rng.random() < self.invalid_share
        if invalid:
            doc["features"]["amount"] = -abs(doc["features"]["amount"]) - 1.0
        self.stats.sent += 1
        self.in_flight += 1
        self._tasks.spawn(self._request(session, orjson.dumps(doc), user, invalid), name="demo-request")

    async def _request(self, session: aiohttp.ClientSession, body: bytes, user: str, invalid: bool) -> None:
        epoch = self.stats.epoch
        started = time.perf_counter()
        headers = {"content-type": "application/json", "x-user-id": user}
        try:
            async with session.post(self.url, data=body, headers=headers) as resp:
                await resp.read()
                status, version = resp.status, resp.headers.get(VERSION_HEADER)
                content_type = resp.headers.get("content-type", "")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.stats.error(epoch, None, f"{type(exc).__name__}: {str(exc) or 'no detail'}")
            return
        finally:
            self.in_flight -= 1
        latency_ms = (time.perf_counter() - started) * 1000
        if invalid:
            if status == 400 and content_type.startswith(_PROBLEM):
                self.stats.rejected_by_contract(epoch)
            else:
                self.stats.error(epoch, version, f"invalid body answered {status} {content_type}")
        elif 200 <= status < 300 and version:
            self.stats.answered_ok(epoch, version, latency_ms)
        else:
            self.stats.error(epoch, version, f"valid body answered {status} by {version or 'no version'}")


class Operator:
    """The admin API as an operator uses it: HTTP, bearer token, JSON; failures raise with the detail."""

    def __init__(self, admin_url: str, token: str) -> None:
        self.http = httpx.AsyncClient(
            base_url=admin_url, headers={"authorization": f"Bearer {token}"}, timeout=10.0
        )

    async def _call(self, method: str, path: str, body: Any = None) -> httpx.Response:
        content = orjson.dumps(body) if body is not None else None
        headers = {"content-type": "application/json"} if content is not None else None
        resp = await self.http.request(method, path, content=content, headers=headers)
        if resp.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {resp.status_code} {resp.text[:300]}")
        return resp

    async def set_weight(self, canary: float, reason: str) -> dict[str, Any]:
        doc: dict[str, Any] = (
            await self._call("PUT", "/weights", {"canary": canary, "reason": reason})
        ).json()
        return doc

    async def status(self) -> dict[str, Any]:
        doc: dict[str, Any] = (await self._call("GET", "/status")).json()
        return doc

    async def requests_by_version(self) -> dict[str, float]:
        """``rollguard_requests_total`` summed per ``version`` label, from the Prometheus text."""
        totals: dict[str, float] = {}
        for family in text_string_to_metric_families((await self._call("GET", "/metrics")).text):
            for sample in family.samples:
                if sample.name == "rollguard_requests_total":
                    version = sample.labels.get("version", "?")
                    totals[version] = totals.get(version, 0.0) + sample.value
        return totals

    async def aclose(self) -> None:
        await self.http.aclose()
