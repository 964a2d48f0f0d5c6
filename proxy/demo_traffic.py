"""The demo's clients of the proxy: open-loop traffic through the data plane, tallied per version, and an
operator on the admin API (:class:`Operator`: weights, shadow sample, reports, metrics) and on the command
line (:func:`rollguard_report`).

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
import contextlib
import math
import os
import random
import sys
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

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


@dataclass(frozen=True, slots=True)
class ShadowSnapshot:
    """One look at the shadow of a route, from the admin API (see :meth:`Operator.shadow_snapshot`)."""

    evaluation: dict[str, Any]  # routes[route] of shadow_eval.json; {} until the first mirrored pair
    requests: dict[str, float]  # rollguard_shadow_requests_total by outcome: sent, failed, dropped, skipped
    comparisons: dict[str, float]  # rollguard_shadow_comparisons_total by outcome: match, mismatch


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

    async def set_shadow(self, sample: float, reason: str) -> dict[str, Any]:
        """``PUT /shadow``: the share (0..1) of baseline-answered requests mirrored to the candidate."""
        body = {"sample": sample, "reason": reason}
        doc: dict[str, Any] = (await self._call("PUT", "/shadow", body)).json()
        return doc

    async def report(self, name: str) -> dict[str, Any]:
        """``GET /reports/<name>`` of a JSON artifact (``shadow_eval.json``)."""
        doc: dict[str, Any] = (await self._call("GET", f"/reports/{name}")).json()
        return doc

    async def counters(self, by: Mapping[str, str], **match: str) -> dict[str, dict[str, float]]:
        """From one ``GET /metrics``: for each sample name in ``by`` (``rollguard_requests_total``), its
        values summed per value of the label ``by[name]`` (``version``), over the samples whose labels
        include every ``match`` item; a name without samples maps to ``{}``."""
        totals: dict[str, dict[str, float]] = {name: {} for name in by}
        for family in text_string_to_metric_families((await self._call("GET", "/metrics")).text):
            for sample in family.samples:
                label = by.get(sample.name)
                if label is None or any(sample.labels.get(k) != v for k, v in match.items()):
                    continue
                key = sample.labels.get(label, "?")
                per = totals[sample.name]
                per[key] = per.get(key, 0.0) + sample.value
        return totals

    async def shadow_snapshot(self, route: str) -> ShadowSnapshot:
        """The route's part of ``shadow_eval.json`` and the mirror's counters: the shadow panel's data."""
        evaluation = (await self.report("shadow_eval.json")).get("routes", {}).get(route, {})
        counts = await self.counters(
            {"rollguard_shadow_requests_total": "outcome", "rollguard_shadow_comparisons_total": "outcome"},
            route=route,
        )
        return ShadowSnapshot(
            evaluation=evaluation,
            requests=counts["rollguard_shadow_requests_total"],
            comparisons=counts["rollguard_shadow_comparisons_total"],
        )

    async def aclose(self) -> None:
        await self.http.aclose()


# `python -m proxy` started here imports this very package, whether installed, editable or a checkout.
_PACKAGE_ROOT = Path(__file__).resolve().parent.parent


async def rollguard_report(admin_url: str, token: str, out: Path) -> None:
    """Run ``rollguard report --out <out>`` (an absolute path) against ``admin_url`` as an operator would,
    with the token in its environment: the demo's artifacts are what that command writes, not a copy.

    Raises RuntimeError with the tail of its stderr when it fails; kills it after a minute or on Ctrl-C.
    """
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "proxy", "report", "--admin", admin_url, "--out", str(out)),
        cwd=_PACKAGE_ROOT,
        env={**os.environ, "ROLLGUARD_TOKEN": token},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(60):
            _, err = await proc.communicate()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):  # it may have ended by itself meanwhile
            proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"rollguard report exited {proc.returncode}: {err.decode()[-300:].strip()}")
