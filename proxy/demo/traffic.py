"""The demo's side of the proxy: the config and files it runs with (:class:`DemoFiles`), the real proxy
in-process (:func:`start_proxy`), open-loop traffic through its data plane, tallied per version, and an
operator on its admin API (:class:`Operator`: rollout moves, status, decisions, reports, metrics) and on
the command line (:func:`rollguard_report`).

Contract:

- :meth:`TrafficGenerator.run` sends ``rps`` requests per second on a fixed schedule whether or not earlier
  answers have arrived (open loop), with at most ``concurrency`` in flight. A send that finds them all busy
  is *shed* and counted, never queued: a slow proxy shows up as shed load, not as a quietly lower rate.
- Each request carries ``x-user-id: u-<n>`` from a fixed pool of users, so the proxy's sticky routing
  keeps a user on one version. A share ``invalid_share`` of bodies breaks the route's contract (a negative
  amount); the proxy must answer those ``400 application/problem+json`` without forwarding them ("rejected
  by contract"). Any other answer to an invalid body is an error.
- A valid request answered 2xx with ``x-rollguard-version`` counts for that version; any other outcome
  (non-2xx, no version header, connection failure, timeout) is an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import sys
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson
import yaml
from prometheus_client.parser import text_string_to_metric_families

from proxy._tasks import TaskSet
from proxy.app.loaddriver import pace
from proxy.app.serve import serve
from proxy.config.model import Config, Listen
from proxy.demo.sample_model import RunningModel, features_generator
from proxy.demo.scenarios import DEMO_CANARY
from proxy.reports.artifacts import ARTIFACTS, SHADOW_EVAL
from proxy.reports.load_spec import forever

VERSION_HEADER = "x-rollguard-version"
_PROBLEM = "application/problem+json"


class TrafficStats:
    """Counters since the start, fed by :class:`TrafficGenerator`.

    Single-threaded by design: only the event loop that runs the generator reads or writes it.
    """

    def __init__(self, versions: Sequence[str]) -> None:
        self.versions = tuple(versions)
        self.sent = 0
        self.shed = 0
        self.rejected = 0
        self.by_version: Counter[str] = Counter()
        self.errors_by_version: Counter[str] = Counter()  # "" for errors no version answered
        self.error_samples: deque[str] = deque(maxlen=5)

    @property
    def errors(self) -> int:
        return sum(self.errors_by_version.values())

    @property
    def answered(self) -> int:
        return sum(self.by_version.values())

    def answered_ok(self, version: str) -> None:
        self.by_version[version] += 1

    def rejected_by_contract(self) -> None:
        self.rejected += 1

    def error(self, version: str | None, why: str) -> None:
        self.errors_by_version[version or ""] += 1
        self.error_samples.append(why)

    def summary_lines(self) -> list[str]:
        """What the clients saw, for the demo's summary: totals, requests per version, errors."""
        baseline, candidate = self.versions
        return [
            f"traffic: {self.sent} requests sent: {self.answered} answered by a model, {self.rejected} "
            f"rejected by contract (400 problem+json), {self.errors} errors, {self.shed} shed",
            f"  baseline {baseline}: {self.by_version[baseline]} requests",
            f"  candidate {candidate}: {self.by_version[candidate]} requests",
            f"  client errors: {self.errors}",
            *(f"  error: {why}" for why in self.error_samples),
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "answered": dict(self.by_version),
            "rejected_by_contract": self.rejected,
            "errors": self.errors,
            "error_samples": list(self.error_samples),
            "shed": self.shed,
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
        # The load test's scheduler: it never drifts with sleep overshoot or slow answers.
        schedule = ((offset, 0) for offset in forever(self.rps))
        await pace(schedule, lambda _due, _now, _stage: self._send_one(session), stop=stop)

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
        headers = {"content-type": "application/json", "x-user-id": user}
        try:
            async with session.post(self.url, data=body, headers=headers) as resp:
                await resp.read()
                status, version = resp.status, resp.headers.get(VERSION_HEADER)
                content_type = resp.headers.get("content-type", "")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.stats.error(None, f"{type(exc).__name__}: {str(exc) or 'no detail'}")
            return
        finally:
            self.in_flight -= 1
        if invalid:
            if status == 400 and content_type.startswith(_PROBLEM):
                self.stats.rejected_by_contract()
            else:
                self.stats.error(version, f"invalid body answered {status} {content_type}")
        elif 200 <= status < 300 and version:
            self.stats.answered_ok(version)
        else:
            self.stats.error(version, f"valid body answered {status} by {version or 'no version'}")


class DemoFiles:
    """Where the demo writes: everything under ``out``, so one folder holds the whole run."""

    def __init__(self, out: Path) -> None:
        self.out, self.config, self.token = out, out / "rollguard.yaml", out / "demo-token"
        self.state = out / "state" / "rollguard-state.json"
        self.decisions = self.state.with_name(self.state.stem + ".decisions.jsonl")  # the store's naming
        self.access_log, self.summary = out / "access.log", out / "demo-summary.json"
        self.shadow_eval = out / SHADOW_EVAL  # written by `rollguard report`

    def prepare(self, baseline: RunningModel, candidate: RunningModel) -> str:
        """Write config and token, remove an earlier run's files; returns the operator token.

        Only files the demo itself writes are removed, so ``--out`` pointing at a used folder is safe.
        """
        (self.out / "state").mkdir(parents=True, exist_ok=True)
        stale = [self.state, self.decisions, self.access_log, self.summary]
        stale += [self.out / name for name in ARTIFACTS]  # what `rollguard report` writes here
        stale += self.state.parent.glob(f".{self.state.name}.*.tmp")
        for path in stale:
            path.unlink(missing_ok=True)
        token = secrets.token_urlsafe(32)
        self.token.write_text(token + "\n", encoding="utf-8")
        self.token.chmod(0o600)
        pii_key = self.out / "pii-key"  # kept across runs: pseudonyms in the demo's logs stay comparable
        if not pii_key.exists():
            pii_key.write_text(secrets.token_hex(32) + "\n", encoding="utf-8")
            pii_key.chmod(0o600)
        schemas = resources.files("proxy") / "schemas"
        doc = {
            "listen": "127.0.0.1:0",
            "admin": {
                "listen": "127.0.0.1:0",
                "tokens": [{"name": "demo", "role": "operator", "token": f"file:{self.token.name}"}],
            },
            "state": {"url": "file:state/rollguard-state.json"},
            "upstreams": {
                "baseline": {"url": baseline.url, "version": baseline.model.behavior.version},
                "candidate": {"url": candidate.url, "version": candidate.model.behavior.version},
            },
            "routes": [
                {
                    "name": "infer",
                    "path": "/v1/infer",
                    "methods": ["POST"],
                    "request_schema": str(Path(str(schemas / "infer_request.json")).resolve()),
                    "response_schema": str(Path(str(schemas / "infer_response.json")).resolve()),
                    "score": "/score",
                    "sticky_key": "header:x-user-id",
                    "segment": "/features/region",
                }
            ],
            "canary": dict(DEMO_CANARY),
            # 0: no mirror outside the shadow phase, and every baseline-answered request during it.
            "shadow": {"sample": 0, "noise_sample": 0.2, "timeout": "2s"},
            "logging": {"access_log": self.access_log.name, "pii": {"key": f"file:{pii_key.name}"}},
        }
        header = "# Written by `rollguard demo`; rewritten on every run.\n"
        self.config.write_text(header + yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        return token


@dataclass(slots=True)
class RunningProxy:
    """The real proxy, running as a task of this event loop until :meth:`close`."""

    data_url: str
    admin_url: str
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def close(self) -> None:
        self.stop.set()
        async with asyncio.timeout(20):  # serve drains in-flight requests itself; this bounds a hang
            await self.task


async def start_proxy(config: Config, tasks: TaskSet) -> RunningProxy:
    """Start ``app.serve`` and return once both listeners accept (or raise its start-up error)."""
    ready: asyncio.Future[tuple[Listen, Listen]] = asyncio.get_running_loop().create_future()

    def on_ready(data: Listen, admin: Listen) -> None:
        if not ready.done():
            ready.set_result((data, admin))

    stop = asyncio.Event()
    task = tasks.spawn(serve(config, on_ready=on_ready, stop=stop, handle_signals=False), name="demo-proxy")
    try:
        waiters: set[asyncio.Future[Any]] = {task, ready}
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            task.result()  # raises the start-up error
            raise RuntimeError("the proxy stopped before it was listening")
    except BaseException:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        raise
    data, admin = ready.result()
    return RunningProxy(data_url=f"http://{data}", admin_url=f"http://{admin}", stop=stop, task=task)


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

    async def status(self) -> dict[str, Any]:
        doc: dict[str, Any] = (await self._call("GET", "/status")).json()
        return doc

    async def rollout(self, action: str, reason: str) -> dict[str, Any]:
        """``POST /rollout/<action>`` (start, pause, resume, promote, rollback, rearm): the new state."""
        doc: dict[str, Any] = (await self._call("POST", f"/rollout/{action}", {"reason": reason})).json()
        return doc

    async def decisions(self, limit: int = 1000) -> list[dict[str, Any]]:
        """``GET /decisions``: the newest ``limit`` entries of the decision log, newest last."""
        doc = (await self._call("GET", f"/decisions?limit={limit}")).json()
        return list(doc["decisions"])

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


async def rollguard_report(admin_url: str, token: str, out: Path) -> list[str]:
    """Run ``rollguard report --out <out>`` (an absolute path) against ``admin_url`` as an operator would,
    with the token in its environment: the demo's artifacts are what that command writes, not a copy.
    Returns the lines it printed (``wrote <path>``, ``<name>: not available from this proxy``).

    Raises RuntimeError with the tail of its stderr when it fails; kills it after a minute or on Ctrl-C.
    """
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "proxy", "report", "--admin", admin_url, "--out", str(out)),
        cwd=_PACKAGE_ROOT,
        env={**os.environ, "ROLLGUARD_TOKEN": token},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(60):
            printed, err = await proc.communicate()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):  # it may have ended by itself meanwhile
            proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"rollguard report exited {proc.returncode}: {err.decode()[-300:].strip()}")
    return printed.decode(errors="replace").splitlines()
