"""``rollguard demo``: a whole rollout on loopback, shown live, needing nothing but the installed package.

What one run does, in order (everything on 127.0.0.1, free ports only):

1. starts a sample baseline (v1) and candidate (v2, the scenario's behaviour) in-process;
2. writes ``<out>/rollguard.yaml`` and a random operator token (``<out>/demo-token``), removes the state,
   decision log and access log of any earlier run (so every run starts from ``idle``), and runs the real
   proxy in-process (``app.serve``);
3. sends open-loop traffic through the data plane (:mod:`proxy.demo_traffic`), ~2% of it invalid;
4. drives the rollout through the admin API over HTTP with a bearer token, exactly as an operator would:
   a shadow phase (``shadow_share`` of ``--duration`` at weight 0, ``PUT /shadow`` 1 then 0), then the
   canary weights by hand (``PUT /weights``) over the remaining time;
5. shows it live (``rich``) or, with ``--plain`` or no terminal, one status line per second
   (:mod:`proxy.demo_view`), the shadow's figures from ``GET /reports/shadow_eval.json`` and ``/metrics``;
6. stops traffic, reads ``GET /metrics`` once, runs ``rollguard report --out <out>`` (``shadow_eval.json``),
   stops the proxy and the models, prints a summary and writes ``<out>/demo-summary.json``. Exit 0 when
   nothing unexpected failed, 1 otherwise, 130 on Ctrl-C.

Growing it: a :class:`Scenario` names the candidate's :class:`ModelBehavior` and the plan. :meth:`Demo.drive`
is the one place that runs a plan, so a controller-driven plan (``POST /rollout/start``, then follow
``GET /status`` until ``promoted``/``rolled_back``) is a new method called from there, and a failure
scenario is a new entry in ``SCENARIOS`` with an expected outcome.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import secrets
import sys
import time
from collections import deque
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml
from rich.console import Console
from rich.live import Live

from ._tasks import TaskSet
from .app import serve
from .cli import ARTIFACTS
from .config import Config, Listen, load_config
from .demo_traffic import Operator, ShadowSnapshot, TrafficGenerator, TrafficStats, rollguard_report
from .demo_view import demo_logging, plain_line, render, summary_doc, summary_lines, tick
from .sample_model import ModelBehavior, RunningModel, start_sample_model

log = logging.getLogger("rollguard.demo")

BASELINE = ModelBehavior(version="v1")
ROUTE = "infer"


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """One ``--scenario``: the candidate's behaviour and the plan the demo follows (module docstring)."""

    name: str
    story: str  # one line: what this scenario demonstrates
    candidate: ModelBehavior
    shadow_share: float  # share of the duration spent in shadow (weight 0, every baseline answer mirrored)
    weights: tuple[float, ...]  # then canary weights set by hand, sharing the rest of the duration equally


SCENARIOS = {
    "good": Scenario(
        name="good",
        story=(
            "a healthy candidate is shadowed (a small, real divergence), then walks "
            "1 -> 5 -> 25 -> 50 -> 100% with sticky users and no errors"
        ),
        # A small drift: v2 is a slightly different model, not a copy of v1, so the shadow has something
        # real but small to find (every score moves up a little; about 1.3% of the decisions flip).
        candidate=ModelBehavior(version="v2", drift=0.05),
        shadow_share=1 / 3,
        weights=(1, 5, 25, 50, 100),
    ),
}


class DemoFiles:
    """Where the demo writes: everything under ``out``, so one folder holds the whole run."""

    def __init__(self, out: Path) -> None:
        self.out, self.config, self.token = out, out / "rollguard.yaml", out / "demo-token"
        self.state = out / "state" / "rollguard-state.json"
        self.decisions = self.state.with_name(self.state.stem + ".decisions.jsonl")  # the store's naming
        self.access_log, self.summary = out / "access.log", out / "demo-summary.json"
        self.shadow_eval = out / "shadow_eval.json"  # written by `rollguard report`

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
            "canary": {"weight": 0},
            # Off at start: the demo switches it on through the admin API, as an operator would.
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


class Demo:
    """One run: owns the models, the proxy, the traffic and what the view and the summary show."""

    def __init__(self, args: argparse.Namespace, scenario: Scenario) -> None:
        self.args = args
        self.scenario = scenario
        self.files = DemoFiles(Path(args.out).resolve())
        self.versions = (BASELINE.version, scenario.candidate.version)
        # Half a canary step at most, so the window's share shows the current weight rather than a blend.
        dwell = args.duration * (1 - scenario.shadow_share) / len(scenario.weights)
        self.stats = TrafficStats(self.versions, window_s=min(5.0, dwell / 2))
        self.tasks = TaskSet("demo")
        self.phase = "starting"
        self.weight: float | None = None
        self.revision: int | None = None
        self.proxy_phase = "-"
        self.changes: deque[str] = deque(maxlen=20)
        self.metrics: dict[str, float] = {}
        self.failure: str | None = None
        self.started: float | None = None  # time.monotonic() when traffic began
        # Shadow: when it ran (seconds since traffic began), the latest look at it, the final figures.
        self.shadow_from: float | None = None
        self.shadow_until: float | None = None
        self.shadow: ShadowSnapshot | None = None
        self.mirror_status: dict[str, Any] | None = None  # the `shadow` object of GET /status
        self.shadow_final: dict[str, Any] | None = None  # routes[ROUTE] of the written shadow_eval.json
        self.shadow_requests: dict[str, float] = {}  # rollguard_shadow_requests_total by outcome, at the end

    @property
    def elapsed(self) -> float:
        return 0.0 if self.started is None else time.monotonic() - self.started

    async def run(self) -> None:
        """Start everything, drive the scenario, stop it all in reverse order (also on error or Ctrl-C)."""
        async with AsyncExitStack() as stack:
            stack.push_async_callback(self.tasks.drain, 2.0)
            baseline = await start_sample_model(BASELINE)
            stack.push_async_callback(baseline.close)
            candidate = await start_sample_model(self.scenario.candidate)
            stack.push_async_callback(candidate.close)
            token = self.files.prepare(baseline, candidate)
            self.phase = "starting the proxy"
            proxy = await start_proxy(load_config(self.files.config), self.tasks)
            stack.push_async_callback(proxy.close)
            operator = Operator(proxy.admin_url, token)
            stack.push_async_callback(operator.aclose)
            for poll, name in ((self._poll_status, "demo-status"), (self._poll_shadow, "demo-shadow")):
                stack.callback(self.tasks.spawn(poll(operator), name=name).cancel)

            stop_traffic = asyncio.Event()
            traffic = TrafficGenerator(f"{proxy.data_url}/v1/infer", self.stats, rps=self.args.rps)
            traffic_task = self.tasks.spawn(traffic.run(stop_traffic), name="demo-traffic")
            stack.push_async_callback(_stop, stop_traffic, traffic_task)
            self.started = time.monotonic()
            await self.drive(operator)
            self.phase = "stopping traffic"
            await _stop(stop_traffic, traffic_task)
            counts = await operator.counters(
                {"rollguard_requests_total": "version", "rollguard_shadow_requests_total": "outcome"}
            )
            self.metrics = counts["rollguard_requests_total"]
            self.shadow_requests = counts["rollguard_shadow_requests_total"]
            self.phase = "writing reports"
            await rollguard_report(proxy.admin_url, token, self.files.out)
            written = orjson.loads(self.files.shadow_eval.read_bytes())  # the summary shows what was written
            self.shadow_final = written.get("routes", {}).get(ROUTE, {})
            self.phase = "stopping"
        self.phase = "done"

    async def drive(self, operator: Operator) -> None:
        """Run the scenario's plan: shadow, then the canary steps; scheduled from the start, so the total
        stays ``duration`` however long each admin call takes."""
        assert self.started is not None
        duration, weights = self.args.duration, self.scenario.weights
        canary_from = self.started + duration * self.scenario.shadow_share
        if self.scenario.shadow_share > 0:
            await self.shadow_phase(operator, until=canary_from)
        dwell = (self.started + duration - canary_from) / len(weights)
        for i, weight in enumerate(weights):
            label = f"step {i + 1}/{len(weights)}"
            self.phase = f"canary {label}"
            self.stats.begin_transition()
            before = f"{self.stats.steps[-1].weight:g}% -> " if self.stats.steps else ""
            doc = await operator.set_weight(weight, f"demo {label}: candidate to {weight:g}%")
            self._applied(doc, f"weight {before}{doc['weight']:g}%")
            self.stats.begin_step(label, weight)
            await _sleep_until(canary_from + (i + 1) * dwell)

    async def shadow_phase(self, operator: Operator, *, until: float) -> None:
        """Weight 0 and every baseline-answered request mirrored to the candidate until ``until``
        (``time.monotonic``); then mirroring is switched off again, before any canary weight is set."""
        cand = self.versions[1]
        self.phase = "shadow"
        self.stats.begin_transition()
        doc = await operator.set_shadow(1.0, f"demo: shadow every baseline answer to {cand}")
        self.shadow_from = self.elapsed
        self._applied(doc, f"shadow on (sample {doc['shadow_sample']:g})")
        # A step like the canary's: its tally proves the candidate answered no client during the shadow.
        self.stats.begin_step("shadow", doc["weight"])
        await _sleep_until(until)
        self.phase = "shadow off"
        doc = await operator.set_shadow(0.0, "demo: shadow done, off before the canary")
        self.shadow_until = self.elapsed
        self._applied(doc, f"shadow off (sample {doc['shadow_sample']:g})")

    def _applied(self, doc: dict[str, Any], change: str) -> None:
        self.weight, self.revision, self.proxy_phase = doc["weight"], doc["revision"], doc["phase"]
        self.changes.append(f"{self.elapsed:5.1f}s  {change}  rev {doc['revision']}  {doc['reason']}")

    async def _poll_status(self, operator: Operator) -> None:
        """Keep the header in step with ``GET /status``; the view must not depend on it, so errors pass."""
        while True:
            try:
                doc = await operator.status()
                rollout = doc["rollout"]
                # A poll that raced a weight change may answer with the older state: never go back.
                if self.revision is None or rollout["revision"] >= self.revision:
                    self.proxy_phase, self.revision = rollout["phase"], rollout["revision"]
                    self.weight = rollout["weight"]
                self.mirror_status = doc.get("shadow")
            except (httpx.HTTPError, RuntimeError, KeyError) as exc:
                log.debug("status poll failed: %s", exc)
            await asyncio.sleep(0.5)

    async def _poll_shadow(self, operator: Operator) -> None:
        """Refresh the shadow panel about once a second from the moment the shadow starts until its
        mirrors have had time to finish (``shadow.timeout`` is 2s); errors pass, as for the status."""
        while self.shadow_until is None or self.elapsed < self.shadow_until + 3.0:
            if self.shadow_from is not None:
                try:
                    self.shadow = await operator.shadow_snapshot(ROUTE)
                except (httpx.HTTPError, RuntimeError, ValueError) as exc:
                    log.debug("shadow poll failed: %s", exc)
            await asyncio.sleep(1.0 if self.shadow_from is not None else 0.1)

    @property
    def exit_code(self) -> int:
        return 1 if self.failure or self.stats.errors else 0


async def _sleep_until(deadline: float) -> None:
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))


async def _stop(stop: asyncio.Event, task: asyncio.Task[None]) -> None:
    stop.set()
    await task


# -- entry point --------------------------------------------------------------------------------------


async def _main(args: argparse.Namespace, scenario: Scenario) -> int:
    console = Console(highlight=False)
    demo = Demo(args, scenario)
    live_view = not args.plain and console.is_terminal
    view = TaskSet("demo-view")
    interrupted = False
    with contextlib.ExitStack() as stack:
        stack.enter_context(demo_logging(console if live_view else None))
        if live_view:
            live = stack.enter_context(Live(console=console, auto_refresh=False))
            show: Callable[[], None] = lambda: live.update(render(demo), refresh=True)  # noqa: E731
        else:
            show = lambda: print(plain_line(demo), flush=True)  # noqa: E731
        view.spawn(tick(0.25 if live_view else 1.0, show), name="demo-view")
        try:
            await demo.run()
        except asyncio.CancelledError:
            # Ctrl-C (asyncio.Runner cancels the main task): everything is closed by now, so report and
            # end normally; a second Ctrl-C still raises KeyboardInterrupt at once.
            interrupted = True
            demo.failure = "interrupted"
            if (task := asyncio.current_task()) is not None:
                task.uncancel()
        except Exception as exc:  # reported in the summary; exit code 1
            demo.failure = f"{type(exc).__name__}: {exc}"
            log.error("demo failed", exc_info=exc)
        finally:
            await view.drain(0)
            if live_view:
                show()  # the final frame stays on screen above the summary
    for i, line in enumerate(summary_lines(demo)):
        console.print(line, markup=False, soft_wrap=True, style="bold" if i < 2 else None)
    if demo.files.out.is_dir():  # absent only when the run failed before writing anything
        demo.files.summary.write_bytes(orjson.dumps(summary_doc(demo), option=orjson.OPT_INDENT_2) + b"\n")
    return 130 if interrupted else demo.exit_code


def run_demo(args: argparse.Namespace) -> int:
    """``rollguard demo``; returns the exit code: 0 clean, 1 unexpected errors, 2 bad usage, 130 Ctrl-C."""
    scenario = SCENARIOS.get(args.scenario)
    if scenario is None:
        print(
            f"rollguard: unknown scenario {args.scenario!r} (known: {', '.join(SCENARIOS)})", file=sys.stderr
        )
        return 2
    if not args.duration > 0 or not 0 < args.rps <= 5000:
        print("rollguard: --duration must be > 0 and --rps in (0, 5000]", file=sys.stderr)
        return 2
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported platform
        loop_factory = None
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(_main(args, scenario))
    except KeyboardInterrupt:
        print("rollguard demo: interrupted; everything it started has been stopped", file=sys.stderr)
        return 130
