"""``rollguard loadtest``: drive open-loop load at a target, judge it against SLOs, write the report.

The command reads its arguments (stages or a constant rate, SLOs from ``--slo`` over the config's
``canary.gates``, request bodies from a JSONL file or the sample model's generator), runs
:class:`LoadDriver` with a live progress bar on a terminal (a plain line every few seconds otherwise),
watches the CPU and RSS of ``--pid`` and of the driver itself, then prints one PASS/FAIL line per SLO
and one for the rate check, and with ``--out`` writes ``staging_report.json`` with a ``load`` section.
With ``--admin`` the rest of that document is the proxy's own staging report, read after the run (its
proxy-side figures per route and version); without, the document holds the load run alone.

Exit status: 0 when every SLO and the rate check pass, 1 when one fails, 2 for bad arguments (the
message names the argument), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import httpx
import orjson

from proxy._tasks import TaskSet
from proxy.app.loaddriver import BodySource, LoadDriver, RunTimes
from proxy.clock import utc_now
from proxy.config.model import GatesConfig
from proxy.config.units import parse_duration
from proxy.errors import ConfigError
from proxy.reports.artifacts import STAGING_REPORT
from proxy.reports.load import ALL, LoadTally
from proxy.reports.load_spec import (
    Profile,
    Slo,
    constant,
    judge,
    judge_rate,
    merge_slos,
    parse_slo,
    parse_stages,
    slo_from_gates,
)
from proxy.reports.resources import process_usage
from proxy.reports.staging import FORMAT

DEFAULT_RATE = 100.0
DEFAULT_DURATION = "30s"
SAMPLE_EVERY_S = 0.5  # resources and the progress bar
EXIT_PASS, EXIT_FAIL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

SampleBody = Callable[[random.Random], dict[str, Any]]
"""The sample model's body generator (``proxy.demo.sample_model.features_generator``), passed in by the
command line, which sits above both."""


class UsageError(ValueError):
    """A bad argument; the message names it."""


def run_loadtest(args: argparse.Namespace, *, sample: SampleBody) -> int:
    """The whole command; see the module docstring for the exit status."""
    try:
        plan = _plan(args, sample)
    except UsageError as exc:
        print(f"rollguard: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return _runner(lambda: _run(plan))
    except KeyboardInterrupt:
        print("rollguard: interrupted; no verdict", file=sys.stderr)
        return EXIT_INTERRUPTED


class Plan:
    """Everything the run needs, validated."""

    def __init__(
        self,
        *,
        args: argparse.Namespace,
        profile: Profile,
        slos: tuple[Slo, ...],
        slo_source: str,
        bodies: BodySource,
        bodies_source: str,
        headers: dict[str, str],
        timeout_s: float,
    ) -> None:
        self.target: str = args.target
        self.profile = profile
        self.slos = slos
        self.slo_source = slo_source
        self.bodies = bodies
        self.bodies_source = bodies_source
        self.headers = headers
        self.timeout_s = timeout_s
        self.concurrency: int = args.concurrency
        self.pid: int | None = args.pid
        self.out: Path | None = Path(args.out) if args.out else None
        self.admin: str | None = args.admin
        self.live = not args.plain and sys.stderr.isatty()


def _plan(args: argparse.Namespace, sample: SampleBody) -> Plan:
    if not args.target.startswith(("http://", "https://")):
        raise UsageError(f"--target {args.target!r}: expected an http:// or https:// URL")
    try:
        if args.stages is not None:
            if args.duration is not None:
                raise UsageError("--duration goes with --rate; --stages sets its own durations")
            profile = parse_stages(args.stages)
        else:
            duration = _duration("--duration", args.duration or DEFAULT_DURATION)
            profile = constant(DEFAULT_RATE if args.rate is None else args.rate, duration)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if args.concurrency < 1:
        raise UsageError(f"--concurrency {args.concurrency}: expected at least 1")
    timeout_s = _duration("--timeout", args.timeout)
    slos, source = slos_from_args(args)
    if args.bodies:
        bodies, bodies_source = _jsonl_bodies(Path(args.bodies))
    else:
        bodies, bodies_source = _sample_bodies(sample, args.seed), f"sample generator (seed {args.seed})"
    if args.pid is not None and process_usage(args.pid) is None:
        raise UsageError(f"--pid {args.pid}: no such process (or no /proc to read it from)")
    return Plan(
        args=args,
        profile=profile,
        slos=slos,
        slo_source=source,
        bodies=bodies,
        bodies_source=bodies_source,
        headers=_headers(args.header or []),
        timeout_s=timeout_s,
    )


def _duration(flag: str, text: str) -> float:
    try:
        float(text)
    except ValueError:
        pass
    else:
        raise UsageError(f"{flag} {text!r}: a duration needs its unit, like 30s or 2m")
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"{flag} {exc}") from exc


def slos_from_args(args: argparse.Namespace) -> tuple[tuple[Slo, ...], str]:
    """``--slo`` over the config's ``canary.gates``; with neither, the gates' own defaults. Also read by
    ``rollguard staging-report``, so both commands judge by the same SLOs."""
    if args.config:
        from proxy.config.load import load_config

        try:
            gates = load_config(args.config).canary.gates
        except ConfigError as exc:
            raise UsageError(f"--config {args.config}: invalid config: {exc}") from exc
        source = f"canary.gates of {args.config}"
    else:
        gates, source = GatesConfig(), "canary.gates defaults"
    base = slo_from_gates(gates)
    if not args.slo:
        return base, source
    try:
        given = parse_slo(args.slo)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if args.config:
        return merge_slos(base, given), f"--slo over {source}"
    return given, "--slo"


def _headers(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition(":")
        if not sep or not name.strip() or any(c in item for c in "\r\n"):
            raise UsageError(f"--header {item!r}: expected 'Name: value'")
        out[name.strip().lower()] = value.strip()
    return out


def read_bodies(path: Path) -> list[tuple[int, bytes]]:
    """The ``--bodies`` file: (line number, body) for every non-blank line, each checked to be JSON and
    kept as written. UsageError naming the file (and the line) when it cannot be read, a line is not JSON
    or there is no body at all."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"--bodies {path}: {exc.strerror or exc}") from exc
    bodies: list[tuple[int, bytes]] = []
    for number, line in enumerate(raw.splitlines(), 1):
        text = line.strip()
        if not text:
            continue
        try:
            orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise UsageError(f"--bodies {path} line {number}: not JSON ({exc})") from exc
        bodies.append((number, text))
    if not bodies:
        raise UsageError(f"--bodies {path}: no request bodies in it")
    return bodies


def _jsonl_bodies(path: Path) -> tuple[BodySource, str]:
    """One request body per non-blank line, sent as written, in order, round and round."""
    lines = [body for _, body in read_bodies(path)]
    index = 0
    no_headers: Mapping[str, str] = {}

    def next_body() -> tuple[bytes, Mapping[str, str]]:
        nonlocal index
        body = lines[index]
        index = (index + 1) % len(lines)
        return body, no_headers

    return next_body, f"{path} ({len(lines)} bodies)"


def _sample_bodies(sample: SampleBody, seed: int) -> BodySource:
    """The sample model's valid requests; each carries its ``user_id`` as ``x-user-id`` (sticky key)."""
    rng = random.Random(seed)

    def next_body() -> tuple[bytes, Mapping[str, str]]:
        doc = sample(rng)
        return orjson.dumps(doc), {"x-user-id": str(doc.get("user_id", ""))}

    return next_body


def _runner(main: Callable[[], Any]) -> int:
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported platform
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        code: int = runner.run(main())
    return code


# -- the run ----------------------------------------------------------------------------------------------


class _Watch:
    """CPU and peak RSS of a process over the run, sampled every :data:`SAMPLE_EVERY_S`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        first = process_usage(pid)
        self.cpu_start = first[0] if first else None
        self.cpu_end = self.cpu_start
        self.rss_start = first[1] if first else None
        self.rss_end = self.rss_start
        self.rss_peak = self.rss_start
        self.gone = first is None

    def sample(self) -> None:
        usage = process_usage(self.pid)
        if usage is None:
            self.gone = True
            return
        self.cpu_end, self.rss_end = usage
        if usage[1] is not None and (self.rss_peak is None or usage[1] > self.rss_peak):
            self.rss_peak = usage[1]

    def to_json(self, wall_s: float) -> dict[str, Any]:
        cpu = None if self.cpu_start is None or self.cpu_end is None else self.cpu_end - self.cpu_start
        return {
            "pid": self.pid,
            "cpu_s": None if cpu is None else round(cpu, 3),
            "cpu_cores": None if cpu is None or wall_s <= 0 else round(cpu / wall_s, 3),
            "rss_start_bytes": self.rss_start,
            "rss_end_bytes": self.rss_end,
            "rss_peak_bytes": self.rss_peak,
            "exited_during_run": self.gone,
        }


async def _run(plan: Plan) -> int:
    tally = LoadTally(plan.profile)
    driver = LoadDriver(
        plan.target,
        plan.bodies,
        tally,
        concurrency=plan.concurrency,
        timeout_s=plan.timeout_s,
        headers=plan.headers,
    )
    watches = [_Watch(os.getpid())] + ([_Watch(plan.pid)] if plan.pid is not None else [])
    print(
        f"loadtest {plan.target}: {plan.profile.describe()}, open loop, concurrency {plan.concurrency}, "
        f"bodies from {plan.bodies_source}; SLOs ({plan.slo_source}): "
        + ", ".join(f"{s.name} <= {s.describe_limit()}" for s in plan.slos),
        file=sys.stderr,
    )
    started_at = utc_now()
    progress = _Progress(tally, plan.profile, live=plan.live)
    side = asyncio.Event()

    async def sample_loop() -> None:
        while not side.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(side.wait(), SAMPLE_EVERY_S)
            for w in watches:
                w.sample()
            progress.update()

    tasks = TaskSet("loadtest-side")
    tasks.spawn(sample_loop(), name="loadtest-sampler")
    try:
        with progress:
            times = await driver.run()
    finally:
        side.set()
        await tasks.drain(SAMPLE_EVERY_S * 4)
    for w in watches:
        w.sample()
    return await _conclude(plan, tally, times, watches, started_at)


async def _conclude(
    plan: Plan, tally: LoadTally, times: RunTimes, watches: list[_Watch], started_at: str
) -> int:
    planned = plan.profile.duration_s
    quantiles = sorted({s.quantile for s in plan.slos if s.quantile is not None})
    verdicts = judge(plan.slos, tally.figures(quantiles))
    dropped = sum(s.dropped for s in tally.stages)
    rate = judge_rate(tally.offered, tally.sent, dropped, times.send_span_s, planned, tally.final_lag_s)
    lines = [v.line() for v in verdicts] + [rate.line()]
    passed = all(v.passed for v in verdicts) and rate.passed
    figures = tally.section(max(times.send_span_s, planned))
    wall = times.ended - times.started
    driver = watches[0].to_json(wall)
    if driver["cpu_cores"] is not None and driver["cpu_cores"] >= 0.9:
        lines.append(
            f"note: the driver used {driver['cpu_cores']:.0%} of a core: near its own ceiling, so a "
            "higher rate would be limited by the driver, not the target"
        )
    for line in lines:
        print(line)
    print(f"verdict: {'PASS' if passed else 'FAIL'}")
    if plan.out is not None:
        load = {
            "target": plan.target,
            "profile": plan.profile.describe(),
            "started_at": started_at,
            "ended_at": utc_now(),
            "duration_s": round(wall, 3),
            "concurrency": plan.concurrency,
            "timeout_s": plan.timeout_s,
            "bodies": plan.bodies_source,
            "slo_source": plan.slo_source,
            **figures,
            "throughput": {**rate.to_json(), "answered_rps": figures[ALL]["rps"]},
            "slo": [v.to_json() for v in verdicts],
            "passed": passed,
            "resources": {"driver": driver, "target": watches[1].to_json(wall) if len(watches) > 1 else None},
        }
        document = await staging_document(plan.admin, {"load": load}, started_at)
        path = write_report(plan.out, document)
        print(f"wrote {path}")
    return EXIT_PASS if passed else EXIT_FAIL


async def staging_document(
    admin: str | None, sections: Mapping[str, Any], since: str | None
) -> dict[str, Any]:
    """The proxy's staging report at ``admin`` with ``sections`` (``load``, ...) in it, or with no
    ``admin`` (or no report there) the sections alone in the report's frame."""
    if admin:
        token = os.environ.get("ROLLGUARD_TOKEN")
        headers = {"authorization": f"Bearer {token}"} if token else {}
        try:
            async with httpx.AsyncClient(base_url=admin, headers=headers, timeout=30.0) as client:
                resp = await client.get(f"/reports/{STAGING_REPORT}")
            if resp.status_code == 200:
                doc: dict[str, Any] = resp.json()
                doc.update(sections)
                return doc
            why = f"{resp.status_code} {resp.text[:200]}"
        except (httpx.HTTPError, ValueError) as exc:
            why = str(exc)
        print(
            f"rollguard: --admin {admin}: no staging report ({why}); writing the load figures alone",
            file=sys.stderr,
        )
    return {"format": FORMAT, "generated_at": utc_now(), "since": since, **sections}


def write_report(folder: Path, document: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / STAGING_REPORT
    tmp = target.with_name(f".{STAGING_REPORT}.tmp")
    tmp.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
    tmp.replace(target)
    return target


# -- progress -------------------------------------------------------------------------------------------


class _Progress:
    """A rich progress bar on a terminal; elsewhere a plain line every few seconds."""

    def __init__(
        self, tally: LoadTally, profile: Profile, *, live: bool, stream: TextIO | None = None
    ) -> None:
        self.tally = tally
        self.total = int(sum(profile.offered()))
        self.live = live
        self.stream = stream or sys.stderr
        self.started = time.monotonic()
        self.every_s = max(1.0, min(10.0, profile.duration_s / 10))
        self.last_line = self.started
        self.last_sent = 0
        self.last_t = self.started
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> _Progress:
        if self.live:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[status]}"),
                console=Console(file=self.stream),
                transient=True,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task("load", total=self.total, status="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)

    def update(self) -> None:
        t, now = self.tally, time.monotonic()
        rate = (t.sent - self.last_sent) / (now - self.last_t) if now > self.last_t else 0.0
        self.last_sent, self.last_t = t.sent, now
        scope = t.scopes[ALL]
        p95 = scope.latency.quantile(0.95)
        errors = sum(scope.errors.values())
        status = (
            f"{rate:,.0f} req/s, in flight {t.in_flight}, "
            f"p95 {'-' if p95 is None else f'{p95 * 1000:.1f} ms'}, errors {errors}"
        )
        if self._bar is not None:
            self._bar.update(self._task, completed=t.offered, status=status)
        elif now - self.last_line >= self.every_s:
            self.last_line = now
            print(f"t={now - self.started:.0f}s sent {t.sent} of {self.total}: {status}", file=self.stream)
