"""``rollguard demo``: a whole controller-driven rollout on loopback, shown live, needing nothing but the
installed package.

What one run does, in order (everything on 127.0.0.1, free ports only):

1. starts a sample baseline (v1) and candidate (v2, the scenario's behaviour, :mod:`proxy.demo.scenarios`)
   in-process;
2. writes ``<out>/rollguard.yaml`` (the demo's ``canary:`` settings, a PII key file) and a random operator
   token (``<out>/demo-token``), removes the state, decision log, access log and artifacts of any earlier
   run (so every run starts from ``idle``), and runs the real proxy in-process (``app.serve``);
3. sends open-loop traffic through the data plane (:mod:`proxy.demo.traffic`), ~2% of it invalid;
4. starts the rollout with ``POST /rollout/start``, exactly as an operator would, and from then on only
   watches: the controller runs the shadow phase, judges every window, walks the steps and promotes or
   rolls back by itself. The demo follows ``GET /status`` until the phase is ``promoted`` or
   ``rolled_back``, or ``--duration`` seconds have passed (an upper bound, not a schedule);
5. shows it live (``rich``) or, with ``--plain`` or no terminal, one status line per second
   (:mod:`proxy.demo.view`): phase, step, weight, the gates, the controller's window, the shadow panel and
   the decision timeline, all from the admin API;
6. stops traffic, reads ``GET /metrics`` and the decision log once, runs ``rollguard report --out <out>``
   (``staging_report.json``, ``shadow_eval.json``, ``canary_plan.md``, ``rollout_decision.txt``), stops
   the proxy and the models, prints a summary and writes ``<out>/demo-summary.json``. The proxy also
   writes the four files into ``<out>/state/reports/`` the moment the rollout ends (``reports.dir``).

Exit code: 0 when the rollout ended as the scenario expects (``good`` promoted; the others rolled back for
their own cause) and no client saw an error; 1 otherwise; 2 on bad usage; 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import orjson
from rich.console import Console
from rich.live import Live
from rich.logging import RichHandler

from proxy._tasks import TaskSet
from proxy.config.load import load_config
from proxy.demo.sample_model import RunningModel, start_sample_model
from proxy.demo.scenarios import (
    BASELINE,
    DEMO_CANARY,
    END_PHASES,
    SCENARIOS,
    Outcome,
    Scenario,
    outcome_of,
    step_evidence,
)
from proxy.demo.traffic import (
    DemoFiles,
    Operator,
    ShadowSnapshot,
    TrafficGenerator,
    TrafficStats,
    rollguard_report,
    start_proxy,
)
from proxy.demo.view import doors_line, field_names, plain_line, render, summary_lines
from proxy.reports.artifacts import ARTIFACTS

log = logging.getLogger("rollguard.demo")

ROUTE = "infer"
STATUS_EVERY_S = 0.2  # how often the demo reads /status while it follows the rollout


class Demo:
    """One run: owns the models, the proxy, the traffic and what the view and the summary show."""

    def __init__(self, args: argparse.Namespace, scenario: Scenario) -> None:
        self.args = args
        self.scenario = scenario
        self.files = DemoFiles(Path(args.out).resolve())
        self.versions = (BASELINE.version, scenario.candidate.version)
        self.steps: tuple[float, ...] = tuple(DEMO_CANARY["steps"])
        self.stats = TrafficStats(self.versions)
        self.tasks = TaskSet("demo")
        self.phase = "starting"  # what the demo itself is doing
        self.started: float | None = None  # time.monotonic() when traffic began
        self.admin_url: str | None = None  # the proxy's admin listener, once it runs (the view shows it)
        # The rollout as the admin API last showed it.
        self.status: dict[str, Any] = {}  # GET /status
        self.decisions: list[dict[str, Any]] = []  # GET /decisions, newest last
        self.proxy_phase = "-"
        self.weight: float | None = None
        self.step = -1
        self.revision: int | None = None
        self.rollout_at: float | None = None  # seconds since traffic began when the rollout started
        self.ended_at: float | None = None  # ... when the demo saw it promoted or rolled back
        self.timed_out = False
        self.candidate: RunningModel | None = None
        self.fault_at: float | None = None  # seconds since traffic began when the live fault was applied
        self.outcome: Outcome | None = None
        self.metrics: dict[str, float] = {}  # rollguard_requests_total by version, at the end
        self.fallbacks: dict[str, float] = {}  # rollguard_fallbacks_total by reason, at the end
        self.failure: str | None = None
        # Shadow: when it ran (seconds since traffic began), the latest look at it, the final figures.
        self.shadow_from: float | None = None
        self.shadow_until: float | None = None
        self.shadow: ShadowSnapshot | None = None
        self.shadow_final: dict[str, Any] | None = None  # routes[ROUTE] of the written shadow_eval.json
        self.shadow_requests: dict[str, float] = {}  # rollguard_shadow_requests_total by outcome, at the end

    @property
    def elapsed(self) -> float:
        return 0.0 if self.started is None else time.monotonic() - self.started

    @property
    def controller(self) -> dict[str, Any]:
        """``/status.controller``: window, last decision, gates, trip-wire; {} before the first read."""
        ctl = self.status.get("controller")
        return ctl if isinstance(ctl, dict) else {}

    @property
    def mirror_status(self) -> dict[str, Any] | None:
        """``/status.shadow``: the mirror's sample, in-flight count and breaker."""
        mirror = self.status.get("shadow")
        return mirror if isinstance(mirror, dict) else None

    async def run(self) -> None:
        """Start everything, start the rollout and follow it, stop it all in reverse order (also on error
        or Ctrl-C)."""
        async with AsyncExitStack() as stack:
            stack.push_async_callback(self.tasks.drain, 2.0)
            baseline = await start_sample_model(BASELINE)
            stack.push_async_callback(baseline.close)
            candidate = await start_sample_model(self.scenario.candidate)
            stack.push_async_callback(candidate.close)
            self.candidate = candidate
            token = self.files.prepare(baseline, candidate)
            self.phase = "starting the proxy"
            proxy = await start_proxy(load_config(self.files.config), self.tasks)
            stack.push_async_callback(proxy.close)
            stack.callback(setattr, self, "admin_url", None)  # the doors close with the proxy
            self.admin_url = proxy.admin_url
            operator = Operator(proxy.admin_url, token)
            stack.push_async_callback(operator.aclose)
            for poll, name in ((self._poll_decisions, "demo-decisions"), (self._poll_shadow, "demo-shadow")):
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
                {
                    "rollguard_requests_total": "version",
                    "rollguard_shadow_requests_total": "outcome",
                    "rollguard_fallbacks_total": "reason",
                }
            )
            self.metrics = counts["rollguard_requests_total"]
            self.shadow_requests = counts["rollguard_shadow_requests_total"]
            self.fallbacks = counts["rollguard_fallbacks_total"]
            self._seen(await operator.status())
            self.decisions = await operator.decisions(10_000)
            rollout = self.status["rollout"]
            self.outcome = outcome_of(rollout["phase"], rollout.get("reason", ""), self.decisions)
            self.phase = "writing reports"
            await rollguard_report(proxy.admin_url, token, self.files.out)
            if self.files.shadow_eval.exists():  # the summary shows what was written
                written = orjson.loads(self.files.shadow_eval.read_bytes())
                self.shadow_final = written.get("routes", {}).get(ROUTE, {})
            self.phase = "stopping"
        self.phase = "done"

    async def drive(self, operator: Operator) -> None:
        """Start the rollout, then follow ``/status`` until it is promoted or rolled back, or until
        ``--duration`` seconds after traffic began. The demo never moves the rollout itself."""
        assert self.started is not None
        deadline = self.started + self.args.duration
        self.phase = "starting the rollout"
        reason = f"rollguard demo, scenario {self.scenario.name}"
        doc = await operator.rollout("start", reason)
        self.rollout_at = self.elapsed
        self._seen({"rollout": doc})
        self.phase = "following the controller"
        while self.proxy_phase not in END_PHASES:
            if time.monotonic() >= deadline:
                self.timed_out = True
                log.warning("the rollout did not end within --duration %gs", self.args.duration)
                return
            await asyncio.sleep(STATUS_EVERY_S)
            try:
                self._seen(await operator.status())
            except (httpx.HTTPError, RuntimeError) as exc:  # a slow read is retried, never fatal
                log.debug("status read failed: %s", exc)
        self.ended_at = self.elapsed

    def _seen(self, doc: dict[str, Any]) -> None:
        """Take in a ``/status`` document (or ``{"rollout": state}``); a read that raced a change may be
        older than what was seen already: never go back."""
        rollout = doc["rollout"]
        if self.revision is not None and rollout["revision"] < self.revision:
            return
        if "controller" in doc:
            self.status = doc
        else:
            self.status = {**self.status, "rollout": rollout}
        previous = self.proxy_phase
        self.proxy_phase, self.revision = rollout["phase"], rollout["revision"]
        self.weight, self.step = rollout["weight"], rollout.get("step", -1)
        if self.proxy_phase == "canary" and self.scenario.live_fault and self.fault_at is None:
            self._inject_fault()
        if self.proxy_phase == "shadow" and self.shadow_from is None:
            self.shadow_from = self.elapsed
        elif previous == "shadow" and self.proxy_phase != "shadow" and self.shadow_until is None:
            self.shadow_until = self.elapsed

    def _inject_fault(self) -> None:
        """The scenario's live fault: the candidate changes as it takes its first real traffic."""
        if self.candidate is not None:
            model = self.candidate.model
            model.set_behavior(self.scenario.faulty(model.behavior))
            self.fault_at = self.elapsed
            log.info("live fault applied to %s: %s", model.behavior.version, self.scenario.fault_text)

    async def _poll_decisions(self, operator: Operator) -> None:
        """Keep the timeline fresh about once a second; the view must not depend on it, so errors pass."""
        while True:
            if self.rollout_at is not None:
                try:
                    self.decisions = await operator.decisions(200)
                except (httpx.HTTPError, RuntimeError, KeyError) as exc:
                    log.debug("decisions read failed: %s", exc)
            await asyncio.sleep(1.0 if self.rollout_at is not None else 0.1)

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
    def as_expected(self) -> bool:
        return self.outcome is not None and self.outcome.as_expected(self.scenario)

    @property
    def exit_code(self) -> int:
        return 0 if self.as_expected and not self.failure and not self.stats.errors else 1


async def _stop(stop: asyncio.Event, task: asyncio.Task[None]) -> None:
    stop.set()
    await task


async def tick(every: float, show: Callable[[], None]) -> None:
    while True:
        await asyncio.sleep(every)
        show()


@contextlib.contextmanager
def demo_logging(console: Console | None) -> Iterator[None]:
    """Quiet per-request and start/stop chatter; with a live view, logs print above it, not through it."""
    root, quiet = logging.getLogger(), [logging.getLogger(n) for n in ("uvicorn", "rollguard", "httpx")]
    saved_handlers, saved_levels = root.handlers[:], [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.WARNING)
    if console is not None:
        root.handlers = [RichHandler(console=console, show_path=False)]
    try:
        yield
    finally:
        root.handlers = saved_handlers
        for q, level in zip(quiet, saved_levels, strict=True):
            q.setLevel(level)


def summary_doc(demo: Demo) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "scenario": demo.scenario.name,
        "expect": demo.scenario.expect,
        "ok": demo.exit_code == 0,
        "failure": demo.failure,
        "duration_s": round(demo.elapsed, 3),
        "rollout_started_s": demo.rollout_at,
        "ended_s": demo.ended_at,
        "timed_out": demo.timed_out,
        **(demo.outcome.to_json() if demo.outcome is not None else {"outcome": None}),
        **demo.stats.to_json(),
        "proxy_requests_total": demo.metrics,
        "steps": [{"step": label, **window} for label, window in step_evidence(demo.decisions)],
        "artifacts": {
            name: str(demo.files.out / name) if (demo.files.out / name).exists() else None
            for name in ARTIFACTS
        },
    }
    if (ev := demo.shadow_final) is not None:
        doc["shadow"] = {
            "file": str(demo.files.shadow_eval),
            "started_s": demo.shadow_from,
            "ended_s": demo.shadow_until,
            "requests": demo.shadow_requests,
            "compared": ev.get("compared", 0),
            "decision_divergence_pp": ev.get("decision_divergence_pp"),
            "fields": {v: field_names(ev, v) for v in ("real", "noise", "undecided")},
        }
    return doc


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
            shown_doors: list[str] = []

            def show() -> None:
                if (door := doors_line(demo)) is not None and door not in shown_doors:
                    shown_doors.append(door)  # once: the plain log stays one line a second
                    print(door, flush=True)
                print(plain_line(demo), flush=True)

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
    """``rollguard demo``; the exit code: 0 as the scenario expects, 1 otherwise, 2 bad usage, 130 Ctrl-C."""
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
