"""rollguard benchmark harness: the proxy against its anchors, in one run, pinned the same way on every row.

    .venv/bin/python benchmarks/run.py [--duration 10] [--connections 50] [--quick] [--only a,b] [--out F]

Each row starts a static nginx "model server" pair (baseline v1, candidate v2), the proxy under test, waits
until they answer, warms up, runs wrk with a small JSON POST, and stops everything again. Shadow rows also
mirror to the candidate (or to a hung server) and watch the proxy's resident memory; overload rows run 3x
the connections and read the admitted requests' latency from rollguard's own histogram. See README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import re
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import jsonschema
import machine
import nginx_conf
import overload
import procs
import wrk
import yaml

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
REQUEST_SCHEMA = REPO / "config" / "schemas" / "infer_request.json"
RESPONSE_SCHEMA = REPO / "config" / "schemas" / "infer_response.json"
PATH = "/v1/infer"
CANARY_WEIGHT = 10
WARMUP_S = 1.0
READY_TIMEOUT_S = 15.0
NOISE_CPU_SHARE = 0.1  # warn when processes outside the run used more than this share of one CPU
PROBE_BODY = wrk.request_body()
PROBE_HEADERS = {"Content-Type": "application/json"}
# ARCHITECTURE.md §1, same machine class and method: what a healthy run looks like, for the ratios. The
# mirror references were measured with a 90/10 split in front of the mirror (ours send 100 % to the baseline).
REFERENCE_RPS = {
    "direct": 67_500,
    "nginx_split": 46_400,
    "minimal_asgi": 7_500,
    "starlette_httpx": 312,
    "nginx_mirror": 12_800,
    "minimal_mirror": 3_600,
    "nginx_mirror_hung": 25,
    "minimal_mirror_hung": 2_890,
}
# Shadow rows: every proxy gets the same mirror budget. rollguard's keys are the `shadow:` config section.
SHADOW_TIMEOUT_S = 2.0
SHADOW_MAX_IN_FLIGHT = 256
SHADOW_BASE = "rollguard_shadow_0"  # the no-shadow row the shadow rows are compared with
# Targets from the shadow issue, checked under the table (and in the JSON) on every run with these rows.
SHADOW_HEALTHY_MIN_RPS_RATIO = 0.5  # rollguard_shadow_1.0 req/s over rollguard_shadow_0
SHADOW_HUNG_MAX_P99_RATIO = 1.10  # rollguard_shadow_hung p99 over rollguard_shadow_0
# "Flat": the same run's no-shadow rollguard moves a fraction of a MiB over a window; a backlog of parked
# mirrors (the naive proxy) grows by tens to hundreds.
RSS_FLAT_MIB = 2.0
# Contract rows: all traffic to the baseline (canary 0, shadow sample 0); what validation and masked access
# logging cost per request, against the same proxy doing neither. Target from the contracts issue.
CONTRACTS_BASE = "rollguard_bare"
CONTRACTS_MIN_RPS_RATIO = 0.85  # rollguard_full req/s over rollguard_bare
# Fallback rows: canary 10 to a candidate that refuses every connection; no rollout, so the weight stays.
FALLBACK_ROWS = ("rollguard_candidate_down_fallback", "rollguard_candidate_down_nofallback")
FALLBACK_WEIGHT = 10
# Overload rows (the "Resilience" issue): rollguard_bare's config at the usual load, then at OVERLOAD_FACTOR
# x the connections with the data listener's max_concurrency near the normal row's connections (shedding)
# and with it practically off. wrk is a closed loop: it cannot offer 3x a saturated proxy's rate, only 3x the
# requests outstanding at once, which is what a limit on requests in flight sees. See README.md.
OVERLOAD_BASE = "rollguard_normal"
OVERLOAD_ROWS = ("rollguard_overload_shed", "rollguard_overload_noshed")
OVERLOAD_FACTOR = 3
OVERLOAD_NO_LIMIT = 100_000  # max_concurrency of the no-shedding row: never reached
OVERLOAD_MAX_P99_RATIO = 2.0  # admitted p99 under overload over the normal row's, with shedding
TRACING_BASE = "rollguard_tracing_off"  # the tracing rows' base: rollguard_bare's config, tracing off
TRACING_RATIOS = (0.0, 0.01, 1.0)  # tracing.sample_ratio of the rows that export to the loopback sink

RSS_SAMPLE_S = 1.0
RSS_KEYS = ("rss_start_mib", "rss_end_mib", "rss_growth_mib", "rss_late_growth_mib")
# Signs in rollguard's stderr that the command itself is missing, as opposed to failing on our config.
NOT_AVAILABLE_MARKERS = ("ModuleNotFoundError", "ImportError", "invalid choice", "No such command")


@dataclass(frozen=True)
class Pinning:
    proxy_cpu: int | None  # the proxy under test, alone
    load_cpu: int | None  # wrk and the static upstreams
    note: str


@dataclass
class Upstreams:
    baseline_port: int
    candidate_port: int
    servers: list[procs.Server]

    @property
    def baseline_url(self) -> str:
        return f"http://{procs.HOST}:{self.baseline_port}"

    @property
    def candidate_url(self) -> str:
        return f"http://{procs.HOST}:{self.candidate_port}"


@dataclass
class RunContext:
    tmp: Path  # this row's own directory: configs, nginx prefixes, server logs
    pinning: Pinning
    connections: int = 50  # the run's --connections (the normal load), whatever this row's own load is
    upstreams: Upstreams | None = None
    servers: list[procs.Server] = field(default_factory=list)  # everything this row started


@dataclass
class Target:
    """What a row's start function hands back: where to send load, and how it was started."""

    port: int
    cmd: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    proxy: procs.Server | None = None  # the process (tree) under test, for its resident memory
    before_window: Callable[[], None] | None = None  # called right before the measured window
    after_window: Callable[[], dict[str, Any]] | None = None  # read right after the measured window


class RowSkipped(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class Row:
    name: str
    description: str
    start: Callable[[RunContext, contextlib.ExitStack], Target]
    group: str = "core"  # the group it is listed under
    also_in: tuple[str, ...] = ()  # other groups that run it, as an anchor for their ratios
    load_factor: int = 1  # wrk connections = --connections x this (overload rows: 3)

    @property
    def groups(self) -> tuple[str, ...]:
        return (self.group, *self.also_in)


# --- servers -------------------------------------------------------------------------------------------


def _serve(ctx: RunContext, stack: contextlib.ExitStack, name: str, cmd: list[str]) -> procs.Server:
    """Start a process whose teardown is registered before anything can fail."""
    server = procs.start(name, cmd, ctx.tmp)
    stack.callback(procs.stop, server)
    ctx.servers.append(server)
    return server


def _answers_like_model(port: int, version: str | None = None) -> bool:
    status, body = procs.http_call(port, "POST", PATH, PROBE_BODY, PROBE_HEADERS)
    if status != 200:
        return False
    try:
        doc = json.loads(body)
    except ValueError:
        return False
    return (
        isinstance(doc, dict) and "score" in doc and (version is None or doc.get("model_version") == version)
    )


def start_upstreams(ctx: RunContext, stack: contextlib.ExitStack) -> Upstreams:
    """The baseline and candidate "model servers": one nginx, two ports, on the load generator's CPU."""
    baseline_port, candidate_port = procs.free_ports(2)
    prefix = ctx.tmp / "nginx-upstream"
    nginx_conf.write_prefix(prefix, nginx_conf.upstream_conf(prefix, baseline_port, candidate_port))
    server = _serve(
        ctx, stack, "nginx-upstream", procs.pin(ctx.pinning.load_cpu) + nginx_conf.nginx_cmd(prefix)
    )
    for port, version in ((baseline_port, "v1"), (candidate_port, "v2")):
        procs.wait_until(
            functools.partial(_answers_like_model, port, version),
            [server],
            READY_TIMEOUT_S,
            f"upstream {version} answered POST {PATH}",
        )
    return Upstreams(baseline_port, candidate_port, [server])


def _wait_for_proxy(ctx: RunContext, server: procs.Server, port: int) -> None:
    assert ctx.upstreams is not None
    procs.wait_until(
        lambda: _answers_like_model(port),
        [server, *ctx.upstreams.servers],
        READY_TIMEOUT_S,
        f"{server.name} answered POST {PATH}",
    )


def start_hung_upstream(ctx: RunContext, stack: contextlib.ExitStack) -> str:
    """A shadow that accepts and reads but never answers, on the load generator's CPU; returns its URL."""
    [port] = procs.free_ports(1)
    cmd = procs.pin(ctx.pinning.load_cpu) + [
        sys.executable,
        str(BENCH_DIR / "anchors" / "hung_upstream.py"),
        "--port",
        str(port),
    ]
    server = _serve(ctx, stack, "hung_upstream", cmd)
    procs.wait_until(lambda: procs.accepts(port), [server], READY_TIMEOUT_S, "the hung upstream accepted")
    return f"http://{procs.HOST}:{port}"


def _mirror_target(ctx: RunContext, stack: contextlib.ExitStack, hung: bool) -> str:
    assert ctx.upstreams is not None
    return start_hung_upstream(ctx, stack) if hung else ctx.upstreams.candidate_url


# --- rows ----------------------------------------------------------------------------------------------


def start_direct(ctx: RunContext, stack: contextlib.ExitStack) -> Target:
    assert ctx.upstreams is not None
    return Target(ctx.upstreams.baseline_port, extra={"note": "wrk straight to the baseline upstream"})


def start_nginx_split(ctx: RunContext, stack: contextlib.ExitStack) -> Target:
    assert ctx.upstreams is not None
    [port], prefix = procs.free_ports(1), ctx.tmp / "nginx-split"
    conf = nginx_conf.split_conf(
        prefix, port, ctx.upstreams.baseline_port, ctx.upstreams.candidate_port, CANARY_WEIGHT
    )
    nginx_conf.write_prefix(prefix, conf)
    cmd = procs.pin(ctx.pinning.proxy_cpu) + nginx_conf.nginx_cmd(prefix)
    server = _serve(ctx, stack, "nginx-split", cmd)
    _wait_for_proxy(ctx, server, port)
    return Target(port, cmd, {"nginx_conf": conf}, proxy=server)


def nginx_mirror(hung: bool) -> Callable[[RunContext, contextlib.ExitStack], Target]:
    """nginx to the baseline only, with `mirror` of every request to the candidate or the hung server."""

    def start(ctx: RunContext, stack: contextlib.ExitStack) -> Target:
        assert ctx.upstreams is not None
        mirror_url = _mirror_target(ctx, stack, hung)
        [port], prefix = procs.free_ports(1), ctx.tmp / "nginx-mirror"
        conf = nginx_conf.mirror_conf(
            prefix, port, ctx.upstreams.baseline_port, int(mirror_url.rsplit(":", 1)[1]), SHADOW_TIMEOUT_S
        )
        nginx_conf.write_prefix(prefix, conf)
        cmd = procs.pin(ctx.pinning.proxy_cpu) + nginx_conf.nginx_cmd(prefix)
        server = _serve(ctx, stack, "nginx-mirror", cmd)
        _wait_for_proxy(ctx, server, port)
        return Target(port, cmd, {"nginx_conf": conf, "mirror_url": mirror_url}, proxy=server)

    return start


def python_anchor(
    script: str, canary_weight: float = CANARY_WEIGHT, mirror: str | None = None
) -> Callable[[RunContext, contextlib.ExitStack], Target]:
    """A row that runs one of benchmarks/anchors/*.py with the same interpreter as the harness; `mirror`
    ("candidate" or "hung") also hands it a mirror target (minimal_mirror_proxy.py)."""

    def start(ctx: RunContext, stack: contextlib.ExitStack) -> Target:
        assert ctx.upstreams is not None
        up, extra = ctx.upstreams, {}
        args = ["--baseline", up.baseline_url, "--candidate", up.candidate_url]
        args += ["--canary-weight", f"{canary_weight:g}"]
        if mirror is not None:
            extra["mirror_url"] = _mirror_target(ctx, stack, mirror == "hung")
            args += ["--mirror", extra["mirror_url"], "--mirror-timeout", f"{SHADOW_TIMEOUT_S:g}"]
        [port] = procs.free_ports(1)
        cmd = procs.pin(ctx.pinning.proxy_cpu) + [
            sys.executable,
            str(BENCH_DIR / "anchors" / script),
            "--port",
            str(port),
            *args,
        ]
        server = _serve(ctx, stack, Path(script).stem, cmd)
        _wait_for_proxy(ctx, server, port)
        return Target(port, cmd, extra, proxy=server)

    return start


def rollguard_config(
    ctx: RunContext,
    port: int,
    admin_port: int,
    *,
    canary_weight: float = CANARY_WEIGHT,
    candidate_url: str | None = None,
    shadow: dict[str, Any] | None = None,
    contracts: str = "response",
    access_log: bool = True,
    pii_key_file: Path | None = None,
    canary: dict[str, Any] | None = None,
    limits: dict[str, Any] | None = None,
    tracing: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """PRODUCT.md §2, only the keys a deployment must set; everything else stays at rollguard's defaults.
    Shadow rows add a `shadow:` section and may point the candidate at the hung server.

    `contracts` is what the route checks: "response" (response schema + score: the core and shadow rows),
    "none", or "all" (request schema too). `access_log` False is `logging.access_log: "off"`; a
    `pii_key_file` is read by rollguard as `logging.pii.key: file:...`. `canary` adds canary keys,
    `limits` a `limits:` section, `tracing` a `tracing:` section."""
    assert ctx.upstreams is not None
    up, work = ctx.upstreams, ctx.tmp
    checks: dict[str, Any] = {}
    if contracts == "all":
        checks["request_schema"] = str(REQUEST_SCHEMA)
    if contracts in ("response", "all"):
        checks |= {"response_schema": str(RESPONSE_SCHEMA), "score": "/score", "decision_threshold": 0.5}
    logging: dict[str, Any] = {"access_log": f"{work}/access.log" if access_log else "off"}
    if pii_key_file is not None:
        logging |= {"sample_success": 1.0, "pii": {"key": f"file:{pii_key_file}"}}
    config: dict[str, Any] = {
        "listen": f"{procs.HOST}:{port}",
        "admin": {"listen": f"{procs.HOST}:{admin_port}"},
        "state": {"url": f"file:{work}/state.json"},
        "upstreams": {
            "baseline": {"url": up.baseline_url, "version": "v1"},
            "candidate": {"url": candidate_url or up.candidate_url, "version": "v2"},
        },
        "routes": [
            {
                "name": "infer",
                "path": PATH,
                "methods": ["POST"],
                **checks,
                "sticky_key": "header:x-user-id",
            }
        ],
        "canary": {"weight": canary_weight, **(canary or {})},
        "logging": logging,
    }
    if shadow is not None:
        config["shadow"] = shadow
    if limits is not None:
        config["limits"] = limits
    if tracing is not None:
        config["tracing"] = tracing
    return config


def shadow_section(sample: float) -> dict[str, Any]:
    """One mirror per sampled request (noise_sample 0: no second baseline call), the shared mirror budget."""
    return {
        "sample": sample,
        "max_in_flight": SHADOW_MAX_IN_FLIGHT,
        "timeout": f"{SHADOW_TIMEOUT_S:g}s",
        "methods": ["POST"],
        "noise_sample": 0,
    }


_PROM_SAMPLE = re.compile(r"^([a-z_:]+)(?:\{([^}]*)\})? (\S+)$")
_PROM_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def rollguard_metrics(admin_port: int) -> list[tuple[str, dict[str, str], float]] | str:
    """rollguard's `/metrics` as (name, labels, value) samples, or what went wrong reading it."""
    status, body = procs.http_call(admin_port, "GET", "/metrics")
    if status != 200:
        return f"GET /metrics answered {status}"
    samples = []
    for line in body.decode(errors="replace").splitlines():
        if match := _PROM_SAMPLE.match(line):
            labels = dict(_PROM_LABEL.findall(match.group(2) or ""))
            with contextlib.suppress(ValueError):
                samples.append((match.group(1), labels, float(match.group(3))))
    return samples


def rollguard_shadow_counts(admin_port: int) -> dict[str, Any]:
    """rollguard's own count of mirrors (sent, failed, dropped, skipped) and comparisons since it started:
    proof that a shadow row really mirrored, and how many the bound turned away."""
    samples = rollguard_metrics(admin_port)
    if isinstance(samples, str):
        return {"shadow_counts_error": samples}
    counts: dict[str, dict[str, float]] = {"requests": {}, "comparisons": {}}
    for name, labels, value in samples:
        if name in ("rollguard_shadow_requests_total", "rollguard_shadow_comparisons_total"):
            kind, outcome = ("requests" if "requests" in name else "comparisons"), labels.get("outcome", "")
            counts[kind][outcome] = counts[kind].get(outcome, 0) + value
    return {"shadow_counts": {k: {o: int(n) for o, n in v.items()} for k, v in counts.items()}}


def rollguard_fallback_counts(admin_port: int) -> dict[str, Any]:
    """What rollguard says happened to the candidate's share since it started (warm-up included): answers
    by role and status, failed candidate attempts by kind, fallbacks, retries, and the canary weight and
    rollout phase at the end (proof that nothing rolled the weight back during the row)."""
    samples = rollguard_metrics(admin_port)
    if isinstance(samples, str):
        return {"fallback_counts_error": samples}
    answered: dict[str, int] = {}
    failed: dict[str, int] = {}
    out: dict[str, Any] = {"answered": answered, "candidate_failures": failed, "fallbacks": 0, "retries": 0}
    for name, labels, value in samples:
        if name == "rollguard_requests_total":
            key = f"{labels.get('role')} {labels.get('code')}"
            answered[key] = answered.get(key, 0) + int(value)
        elif name == "rollguard_local_responses_total":
            key = f"rollguard {labels.get('code')}"
            answered[key] = answered.get(key, 0) + int(value)
        elif name == "rollguard_upstream_errors_total" and labels.get("role") == "candidate":
            failed[labels.get("kind", "")] = failed.get(labels.get("kind", ""), 0) + int(value)
        elif name == "rollguard_fallbacks_total":
            out["fallbacks"] += int(value)
        elif name == "rollguard_retries_total":
            out["retries"] += int(value)
        elif name == "rollguard_canary_weight_percent":
            out["weight_at_end"] = value
        elif name == "rollguard_rollout_phase" and value == 1:
            out["phase_at_end"] = labels.get("phase")
    return {"fallback_counts": out}


def access_log_summary(path: Path) -> dict[str, Any]:
    """Proof that a logged row logged: lines and bytes in its access log, and its first line (masked by
    rollguard: no raw addresses; the PII key itself never reaches the log). Waits one flush first."""
    time.sleep(0.3)  # rollguard's flusher writes every 0.2 s
    lines = size = 0
    first = b""
    try:
        with path.open("rb") as f:
            first = f.readline()
            f.seek(0)
            while chunk := f.read(1 << 20):
                lines += chunk.count(b"\n")
                size += len(chunk)
    except OSError as exc:
        return {"access_log": {"error": f"{path}: {exc.strerror}"}}
    sample: Any = first.decode(errors="replace").strip()
    with contextlib.suppress(ValueError):
        sample = json.loads(sample)
    return {"access_log": {"lines": lines, "bytes": size, "first_line": sample}}


def _rollguard_skip(exc: procs.NotReady, server: procs.Server, config_path: Path) -> RowSkipped:
    """Tell "the command does not exist yet" apart from "it exists and did not like this run"."""
    stderr = server.stderr_tail()
    if server.exited() and any(marker in stderr for marker in NOT_AVAILABLE_MARKERS):
        last = stderr.splitlines()[-1] if stderr else ""
        return RowSkipped(f"`rollguard serve` is not available yet ({last.strip()})")
    # Anything else is most likely the generated config: show both sides of the disagreement.
    detail = (
        f"--- rollguard stderr ---\n{stderr or '(empty)'}\n"
        f"--- {config_path.name} (kept with --keep-tmp) ---\n{config_path.read_text().rstrip()}"
    )
    return RowSkipped(f"rollguard did not come up: {exc}", detail)


def rollguard_row(
    shadow_sample: float | None = None, hung: bool = False
) -> Callable[[RunContext, contextlib.ExitStack], Target]:
    """`rollguard serve`: the core row (canary 10, no shadow section) when `shadow_sample` is None; else all
    traffic to the baseline (only baseline-answered requests are mirrored) and that share mirrored to the
    candidate, or to the hung server."""

    def start(ctx: RunContext, stack: contextlib.ExitStack) -> Target:
        if shadow_sample is None:
            return start_rollguard(ctx, stack)
        return start_rollguard(
            ctx,
            stack,
            canary_weight=0,
            candidate_url=start_hung_upstream(ctx, stack) if hung else None,
            shadow=shadow_section(shadow_sample),
        )

    return start


def contracts_row(contracts: bool, logged: bool) -> Callable[[RunContext, contextlib.ExitStack], Target]:
    """A contracts row: all traffic to the baseline (canary 0, shadow sample 0), with or without the
    route's request and response contracts and score, and with the access log off or written masked to a
    file with the PII key read from a secret file."""

    def start(ctx: RunContext, stack: contextlib.ExitStack) -> Target:
        return start_rollguard(
            ctx,
            stack,
            canary_weight=0,
            shadow=shadow_section(0.0),
            contracts="all" if contracts else "none",
            access_log=logged,
            pii_key_file=write_pii_key(ctx.tmp) if logged else None,
        )

    return start


def candidate_down_row(fallback: bool) -> Callable[[RunContext, contextlib.ExitStack], Target]:
    """rollguard_bare's config with canary 10 (no rollout: the weight is the configured one and nothing
    moves it) to a candidate whose port refuses every connection, with fallback to the baseline on or off."""

    def start(ctx: RunContext, stack: contextlib.ExitStack) -> Target:
        return start_rollguard(
            ctx,
            stack,
            canary_weight=FALLBACK_WEIGHT,
            candidate_url=refusing_url(stack),
            shadow=shadow_section(0.0),
            contracts="none",
            access_log=False,
            canary={"fallback_to_baseline": fallback, "shadow_samples": 0},
            probe_may_fail=not fallback,
        )

    return start


def overload_row(shed: bool | None) -> Callable[[RunContext, contextlib.ExitStack], Target]:
    """rollguard_bare's config (all traffic to the baseline, no contracts, access log off) with the data
    listener's `limits.max_concurrency` left at its default (`shed` None: the normal row), set near the
    normal row's connections (the smallest power of two at or above them: 64 for 50), or set out of reach
    (100000). Every one reads the admitted requests' latency from rollguard's own histogram."""

    def start(ctx: RunContext, stack: contextlib.ExitStack) -> Target:
        limits = None
        if shed is not None:
            limit = overload.ceil_pow2(ctx.connections) if shed else OVERLOAD_NO_LIMIT
            limits = {"max_concurrency": limit}
        return start_rollguard(
            ctx,
            stack,
            canary_weight=0,
            shadow=shadow_section(0.0),
            contracts="none",
            access_log=False,
            limits=limits,
            admitted_window=True,
        )

    return start


def tracing_row(ratio: float | None) -> Callable[[RunContext, contextlib.ExitStack], Target]:
    """rollguard_bare's config (all traffic to the baseline, no contracts, access log off) with tracing off
    (`ratio` None), or exporting over OTLP/HTTP to a loopback sink that counts and discards, at that
    `tracing.sample_ratio` (0: every request gets a trace id and a traceparent, nothing is recorded)."""

    def start(ctx: RunContext, stack: contextlib.ExitStack) -> Target:
        tracing, sink = None, None
        if ratio is not None:
            sink = start_otlp_sink(ctx, stack)
            tracing = {
                "exporter": "otlp",
                "endpoint": f"http://{procs.HOST}:{sink}/v1/traces",
                "sample_ratio": ratio,
            }
        target = start_rollguard(
            ctx,
            stack,
            canary_weight=0,
            shadow=shadow_section(0.0),
            contracts="none",
            access_log=False,
            tracing=tracing,
        )
        if sink is not None:
            window = SinkWindow(sink, target.after_window)
            target.before_window, target.after_window = window.before, window.after
        return target

    return start


def start_otlp_sink(ctx: RunContext, stack: contextlib.ExitStack) -> int:
    """The loopback OTLP/HTTP collector of the tracing rows, on the load generator's CPU; returns its port."""
    [port] = procs.free_ports(1)
    cmd = procs.pin(ctx.pinning.load_cpu) + [
        sys.executable,
        str(BENCH_DIR / "anchors" / "otlp_sink.py"),
        "--port",
        str(port),
    ]
    server = _serve(ctx, stack, "otlp_sink", cmd)
    procs.wait_until(lambda: procs.accepts(port), [server], READY_TIMEOUT_S, "the OTLP sink accepted")
    return port


class SinkWindow:
    """What the OTLP sink received during the measured window: its counters after minus before. Spans
    still queued in rollguard's exporter at either edge (up to a batch, or its 5 s schedule) blur short
    windows; over a full-length window the count settles."""

    def __init__(self, port: int, then: Callable[[], dict[str, Any]] | None) -> None:
        self.port, self.then = port, then
        self.start: dict[str, int] = {}

    def _read(self) -> dict[str, int]:
        status, body = procs.http_call(self.port, "GET", "/stats")
        return json.loads(body) if status == 200 else {}

    def before(self) -> None:
        self.start = self._read()

    def after(self) -> dict[str, Any]:
        end = self._read()
        counts = {k: end[k] - self.start.get(k, 0) for k in end} if end else {"error": "GET /stats failed"}
        return (self.then() if self.then else {}) | {"otlp_sink": counts}


def refusing_url(stack: contextlib.ExitStack) -> str:
    """A URL whose port refuses connections: a socket bound to it but never listening, held for the row,
    so nobody else on a shared machine can take the port meanwhile (a connect gets RST, not a timeout)."""
    sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    sock.bind((procs.HOST, 0))
    return f"http://{procs.HOST}:{sock.getsockname()[1]}"


def write_pii_key(work: Path) -> Path:
    """A fresh 32-byte PII key in a file only we can read (rollguard wants >= 16 bytes)."""
    path = work / "pii.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(16) + "\n")
    return path


def start_rollguard(
    ctx: RunContext,
    stack: contextlib.ExitStack,
    *,
    canary_weight: float = CANARY_WEIGHT,
    candidate_url: str | None = None,
    shadow: dict[str, Any] | None = None,
    contracts: str = "response",
    access_log: bool = True,
    pii_key_file: Path | None = None,
    canary: dict[str, Any] | None = None,
    limits: dict[str, Any] | None = None,
    admitted_window: bool = False,
    probe_may_fail: bool = False,
    tracing: dict[str, Any] | None = None,
) -> Target:
    exe = Path(sys.executable).parent / "rollguard"
    if not exe.exists():
        raise RowSkipped(f"{exe} is not installed (pip install -e . in the venv)")
    port, admin_port = procs.free_ports(2)
    work = ctx.tmp
    config = rollguard_config(
        ctx,
        port,
        admin_port,
        canary_weight=canary_weight,
        candidate_url=candidate_url,
        shadow=shadow,
        contracts=contracts,
        access_log=access_log,
        pii_key_file=pii_key_file,
        canary=canary,
        limits=limits,
        tracing=tracing,
    )
    config_path = work / "rollguard.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    if contracts != "none" and not RESPONSE_SCHEMA.exists():
        print(f"  warning: {RESPONSE_SCHEMA} does not exist; rollguard will likely reject the config")
    cmd = procs.pin(ctx.pinning.proxy_cpu) + [str(exe), "serve", "--config", str(config_path)]
    server = _serve(ctx, stack, "rollguard", cmd)
    try:
        procs.wait_until(
            lambda: procs.http_call(admin_port, "GET", "/healthz")[0] == 200 and procs.accepts(port),
            [server],
            READY_TIMEOUT_S,
            "admin /healthz answered 200 and the data port accepted",
        )
    except procs.NotReady as exc:
        raise _rollguard_skip(exc, server, config_path) from exc
    # Up but answering the call with an error is measured anyway (the errors column shows it), with a warning;
    # not where the row's candidate is down on purpose and nothing falls back.
    status, body = procs.http_call(port, "POST", PATH, PROBE_BODY, PROBE_HEADERS)
    if status != 200 and not probe_may_fail:
        print(f"  warning: rollguard answered the probe POST with {status}: {body[:300]!r}")
    readers: list[Callable[[], dict[str, Any]]] = []
    if shadow is not None:
        readers.append(functools.partial(rollguard_shadow_counts, admin_port))
    if canary is not None:
        readers.append(functools.partial(rollguard_fallback_counts, admin_port))
    if access_log and pii_key_file is not None:
        readers.append(functools.partial(access_log_summary, work / "access.log"))
    before = None
    if admitted_window:  # /metrics right before and right after the window: the admitted requests' latency
        meter = overload.AdmittedWindow(functools.partial(rollguard_metrics, admin_port))
        before = meter.before
        readers.append(meter.after)
    after = functools.partial(_merged, readers) if readers else None
    return Target(
        port,
        cmd,
        {"config": config, "probe_status": status},
        proxy=server,
        before_window=before,
        after_window=after,
    )


def _merged(readers: list[Callable[[], dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for read in readers:
        out |= read()
    return out


ROWS = (
    Row("direct", "wrk straight to the static nginx upstream (the ceiling)", start_direct),
    Row(
        "nginx_split",
        "nginx reverse proxy, split_clients 90/10, keep-alive upstreams (the anchor)",
        start_nginx_split,
    ),
    Row(
        "minimal_asgi",
        "raw ASGI on uvicorn+uvloop+httptools, one aiohttp session (the Python floor)",
        python_anchor("minimal_asgi_proxy.py"),
        also_in=("shadow", "contracts"),  # the ratio anchor of the shadow and contracts rows too
    ),
    Row(
        "starlette_httpx",
        "Starlette catch-all route + shared httpx.AsyncClient (what people write first)",
        python_anchor("starlette_httpx_proxy.py"),
    ),
    Row("rollguard", "`rollguard serve --config <generated>`, the real proxy", rollguard_row()),
    # Shadow rows: client traffic 100 % to the baseline, a share of it mirrored. Compared with the first.
    Row(
        SHADOW_BASE, "rollguard, canary 0, shadow sample 0 (the no-shadow base)", rollguard_row(0.0), "shadow"
    ),
    Row(
        "rollguard_shadow_0.1",
        "rollguard, canary 0, 10 % mirrored to the candidate",
        rollguard_row(0.1),
        "shadow",
    ),
    Row("rollguard_shadow_1.0", "rollguard, canary 0, every request mirrored", rollguard_row(1.0), "shadow"),
    Row(
        "rollguard_shadow_hung",
        "rollguard, canary 0, every request mirrored to a shadow that never answers",
        rollguard_row(1.0, hung=True),
        "shadow",
    ),
    Row(
        "nginx_mirror",
        "nginx to the baseline + `mirror` of every request (C anchor)",
        nginx_mirror(False),
        "shadow",
    ),
    Row(
        "nginx_mirror_hung",
        "nginx `mirror` of every request to a shadow that never answers",
        nginx_mirror(True),
        "shadow",
    ),
    Row(
        "minimal_mirror",
        "minimal_asgi + bare-task mirror of every request (the naive Python mirror)",
        python_anchor("minimal_mirror_proxy.py", canary_weight=0, mirror="candidate"),
        "shadow",
    ),
    Row(
        "minimal_mirror_hung",
        "minimal_asgi + bare-task mirror of every request to a shadow that never answers",
        python_anchor("minimal_mirror_proxy.py", canary_weight=0, mirror="hung"),
        "shadow",
    ),
    # Contracts rows: all traffic to the baseline; the per-request cost of validation and masked logging.
    Row(
        CONTRACTS_BASE,
        "rollguard, canary 0, no contracts, no score, access log off (the base)",
        contracts_row(contracts=False, logged=False),
        "contracts",
        also_in=("fallback",),  # the fallback rows' p99 is read against it
    ),
    Row(
        "rollguard_contracts",
        "rollguard_bare + request and response schema + score",
        contracts_row(contracts=True, logged=False),
        "contracts",
    ),
    Row(
        "rollguard_logged",
        "rollguard_bare + masked access log to a file, PII key from a file",
        contracts_row(contracts=False, logged=True),
        "contracts",
    ),
    Row(
        "rollguard_full",
        "rollguard_bare + contracts + masked access log",
        contracts_row(contracts=True, logged=True),
        "contracts",
    ),
    # Fallback rows: canary 10 to a candidate that refuses every connection.
    Row(
        FALLBACK_ROWS[0],
        "rollguard_bare at canary 10, the candidate refuses every connection, fallback on",
        candidate_down_row(fallback=True),
        "fallback",
    ),
    Row(
        FALLBACK_ROWS[1],
        "the same with canary.fallback_to_baseline: false",
        candidate_down_row(fallback=False),
        "fallback",
    ),
    # Overload rows: the normal load, then 3x the connections with and without shedding.
    Row(
        OVERLOAD_BASE,
        "rollguard_bare's config (max_concurrency default) at the usual connections (the overload base)",
        overload_row(shed=None),
        "overload",
    ),
    Row(
        OVERLOAD_ROWS[0],
        "the same, max_concurrency near the normal connections, 3x the connections (shedding)",
        overload_row(shed=True),
        "overload",
        load_factor=OVERLOAD_FACTOR,
    ),
    Row(
        OVERLOAD_ROWS[1],
        f"the same, max_concurrency {OVERLOAD_NO_LIMIT}, 3x the connections (no shedding)",
        overload_row(shed=False),
        "overload",
        load_factor=OVERLOAD_FACTOR,
    ),
)
ROWS += (
    # Tracing rows: rollguard_bare's config, tracing off, then exporting to a loopback OTLP sink.
    Row(
        TRACING_BASE, "rollguard_bare's config, tracing off (the tracing base)", tracing_row(None), "tracing"
    ),
    *(
        Row(
            f"rollguard_tracing_{ratio}",
            f"the same, tracing on: OTLP/HTTP to a loopback sink, sample_ratio {ratio:g}",
            tracing_row(ratio),
            "tracing",
        )
        for ratio in TRACING_RATIOS
    ),
)
ROW_NAMES = tuple(row.name for row in ROWS)
GROUPS = {
    group: tuple(r.name for r in ROWS if group in r.groups)
    for group in ("core", "shadow", "contracts", "fallback", "overload", "tracing")
}


# --- running -------------------------------------------------------------------------------------------


def run_row(row: Row, ctx: RunContext, connections: int, duration_s: float) -> dict[str, Any]:
    connections *= row.load_factor
    result: dict[str, Any] = {
        "name": row.name,
        "description": row.description,
        "groups": list(row.groups),
        "connections": connections,
    }
    # Fresh upstreams per row: no row inherits another's connections, buffers or warm caches.
    with contextlib.ExitStack() as stack:
        try:
            ctx.upstreams = start_upstreams(ctx, stack)
            target = row.start(ctx, stack)
            url = f"http://{procs.HOST}:{target.port}{PATH}"
            wrk.run(url, connections, WARMUP_S, ctx.pinning.load_cpu)  # pools filled, code paths hot
            with _watch_memory(target) as rss:
                if target.before_window is not None:
                    target.before_window()
                cpu_before, procs_before = machine.cpu_times(), machine.process_cpu()
                measured, raw = wrk.run(url, connections, duration_s, ctx.pinning.load_cpu)
                usage = machine.cpu_usage(cpu_before, machine.cpu_times())
                own = {server.popen.pid for server in ctx.servers}  # each server leads its own session
                procs_after = machine.process_cpu()
                others = machine.neighbours(procs_before, procs_after, own)
            after = target.after_window() if target.after_window is not None else {}
            # A server that died under load leaves numbers that describe the crash, not the proxy.
            if crashed := [s.name for s in ctx.servers if s.exited()]:
                raise procs.NotReady(f"{', '.join(crashed)} exited during the run")
        except RowSkipped as exc:
            return result | {"status": "skipped", "reason": exc.reason, "detail": exc.detail}
        except (procs.NotReady, wrk.WrkFailed, OSError) as exc:
            return result | {"status": "failed", "reason": str(exc), "detail": _server_logs(ctx.tmp)}
        finally:
            ctx.upstreams = None
    memory = rss.to_json() if rss is not None else None
    # CPU the proxy itself spent per answered request: unlike req/s, a neighbour sharing its core does not
    # move this much (it takes the time away, not add to it), so it is the steadier cost comparison.
    proxy_cpu_s = None
    if target.proxy is not None:
        proxy_cpu_s = machine.session_cpu_s(procs_before, procs_after, target.proxy.popen.pid)
    cpu_us_per_request = (
        round(proxy_cpu_s / measured.requests * 1e6, 1) if proxy_cpu_s and measured.requests else None
    )
    return result | {
        "status": "ok",
        "url": url,
        "server_cmd": target.cmd,
        "requests_per_s": measured.requests_per_s,
        "p50_ms": measured.latency_ms.get("p50"),
        "p99_ms": measured.latency_ms.get("p99"),
        **measured.to_json(),
        **{key: None if memory is None else memory[key] for key in RSS_KEYS},
        "proxy_cpu_s": proxy_cpu_s,
        "proxy_cpu_us_per_request": cpu_us_per_request,
        "memory": memory,
        "cpu_usage": usage,
        "busy_pct": _busy(usage, ctx.pinning),
        "neighbours": others,
        **target.extra,
        **after,
        "server_stats": _server_stats(ctx.servers),  # what servers printed as they stopped
        "wrk_output": raw,
    }


@contextlib.contextmanager
def _watch_memory(target: Target) -> Iterator[machine.RssWatch | None]:
    """Resident memory of the proxy's process tree (nginx: master + worker, summed) over the window."""
    if target.proxy is None:
        yield None
        return
    with machine.watch_rss(target.proxy.popen.pid, RSS_SAMPLE_S) as watch:
        yield watch


def _server_stats(servers: list[procs.Server]) -> dict[str, Any]:
    """The last stdout line of each stopped server that ends with a JSON object of counters."""
    stats = {}
    for server in servers:
        with contextlib.suppress(OSError):
            lines = server.stdout_path.read_text(errors="replace").strip().splitlines()
            if lines and lines[-1].startswith("{"):
                with contextlib.suppress(ValueError):
                    stats[server.name] = json.loads(lines[-1])
    return stats


def _busy(usage: dict[str, dict[str, float]], pinning: Pinning) -> dict[str, float | None]:
    """How busy the proxy's CPU and the load side's CPU were: a proxy row is a measurement of the proxy
    only while the first is near 100 % and the second is not."""

    def busy(cpu: int | None) -> float | None:
        return None if cpu is None else usage.get(f"cpu{cpu}", {}).get("busy_pct")

    return {"proxy_cpu": busy(pinning.proxy_cpu), "load_cpu": busy(pinning.load_cpu)}


def _server_logs(row_dir: Path) -> str:
    """Everything the row's servers complained about: their stderr, and nginx's own error logs."""
    logs = sorted(row_dir.glob("*.err")) + sorted(row_dir.glob("*/error.log"))
    parts = []
    for log in logs:
        text = log.read_text(errors="replace").strip()
        if text:
            tail = "\n".join(text.splitlines()[-40:])
            parts.append(f"--- {log.relative_to(row_dir)} ---\n{tail}")
    return "\n".join(parts)


def check_fixtures() -> list[str]:
    """The request wrk sends and the answers nginx gives must satisfy the model's contract, or rollguard's
    row would measure its error path instead of its forwarding path."""
    problems = []
    pairs = [(REQUEST_SCHEMA, PROBE_BODY.decode(), "wrk request body")]
    pairs += [(RESPONSE_SCHEMA, nginx_conf.model_response(v), f"upstream {v} answer") for v in ("v1", "v2")]
    for schema_path, text, what in pairs:
        if not schema_path.exists():
            problems.append(f"note: {schema_path.relative_to(REPO)} missing, {what} not checked")
            continue
        schema = json.loads(schema_path.read_text())
        for error in jsonschema.Draft202012Validator(schema).iter_errors(json.loads(text)):
            problems.append(f"error: {what} violates {schema_path.name}: {error.message}")
    return problems


def choose_pinning() -> Pinning:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return Pinning(None, None, f"UNPINNED: only {len(cpus)} usable CPU; proxy, wrk and upstream share it")
    if shutil.which("taskset") is None:
        return Pinning(None, None, "UNPINNED: taskset (util-linux) not found")
    return Pinning(cpus[0], cpus[1], f"proxy on CPU {cpus[0]}; wrk and the upstream on CPU {cpus[1]}")


def compute_ratios(rows: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Throughput relative to anchors measured in the same run: the numbers that travel across machines.
    Shadow rows are also compared with rollguard's own no-shadow row: throughput and p99."""
    ok = [r for r in rows if r["status"] == "ok"]
    rps = {r["name"]: r["requests_per_s"] for r in ok if r["requests_per_s"]}
    p99 = {r["name"]: r["p99_ms"] for r in ok if r["p99_ms"]}

    def over(values: dict[str, float], anchor: str, names: list[str]) -> dict[str, float | None]:
        base = values.get(anchor)
        return {n: (round(values[n] / base, 4) if base and n in values else None) for n in names}

    names = [r["name"] for r in rows]
    # The overload rows run 3x the connections, and the shedding row's req/s counts its 503s: no anchor
    # ratio for them (None, shown as "-"); rollguard_normal has one.
    same_load = [n for n in names if n not in OVERLOAD_ROWS]
    ratios = {
        f"vs_{anchor}": over(rps, anchor, same_load) | dict.fromkeys(OVERLOAD_ROWS, None)
        for anchor in ("minimal_asgi", "nginx_split")
    }
    shadow = [r["name"] for r in rows if "shadow" in r["groups"]]
    if shadow:
        ratios[f"vs_{SHADOW_BASE}"] = over(rps, SHADOW_BASE, shadow)
        ratios[f"p99_vs_{SHADOW_BASE}"] = over(p99, SHADOW_BASE, shadow)
    # Contracts rows (and the fallback rows, same config otherwise) against rollguard_bare; for the
    # contracts rows also the proxy's CPU per request, which a neighbour on its core moves far less.
    contracts = [r["name"] for r in rows if "contracts" in r["groups"]]
    fallback = [r["name"] for r in rows if r["name"] in FALLBACK_ROWS]
    if contracts or fallback:
        ratios[f"vs_{CONTRACTS_BASE}"] = over(rps, CONTRACTS_BASE, contracts + fallback)
    if contracts:
        cpu = {r["name"]: r["proxy_cpu_us_per_request"] for r in ok if r["proxy_cpu_us_per_request"]}
        ratios[f"cpu_vs_{CONTRACTS_BASE}"] = over(cpu, CONTRACTS_BASE, contracts)
        ratios[f"p99_vs_{CONTRACTS_BASE}"] = over(p99, CONTRACTS_BASE, contracts)
    if fallback and (base := fallback_base(rows)) is not None:
        ratios.setdefault(f"p99_vs_{base}", {}).update(over(p99, base, fallback))
    if tracing := [r["name"] for r in rows if "tracing" in r["groups"]]:
        cpu = {r["name"]: r["proxy_cpu_us_per_request"] for r in ok if r["proxy_cpu_us_per_request"]}
        ratios[f"vs_{TRACING_BASE}"] = over(rps, TRACING_BASE, tracing)
        ratios[f"p99_vs_{TRACING_BASE}"] = over(p99, TRACING_BASE, tracing)
        ratios[f"cpu_vs_{TRACING_BASE}"] = over(cpu, TRACING_BASE, tracing)
    return ratios


def fallback_base(rows: list[dict[str, Any]]) -> str | None:
    """The no-failure row the fallback rows' p99 is read against: rollguard_bare (same config, canary 0)
    when it ran, else the shadow group's no-shadow row, else none."""
    ok = {r["name"] for r in rows if r["status"] == "ok" and r["p99_ms"]}
    return next((name for name in (CONTRACTS_BASE, SHADOW_BASE) if name in ok), None)


def shadow_targets(
    rows: list[dict[str, Any]], ratios: dict[str, dict[str, float | None]]
) -> list[dict[str, Any]]:
    """The shadow issue's targets for rollguard, judged on this run; `met` is None when a row is missing."""
    by_name = {r["name"]: r for r in rows if r["status"] == "ok"}
    hung = by_name.get("rollguard_shadow_hung", {})
    checks = [
        (
            "rollguard_shadow_1.0",
            f"req/s >= {SHADOW_HEALTHY_MIN_RPS_RATIO:g} x {SHADOW_BASE}",
            ratios.get(f"vs_{SHADOW_BASE}", {}).get("rollguard_shadow_1.0"),
            lambda v: v >= SHADOW_HEALTHY_MIN_RPS_RATIO,
        ),
        (
            "rollguard_shadow_hung",
            f"p99 <= {SHADOW_HUNG_MAX_P99_RATIO:g} x {SHADOW_BASE}",
            ratios.get(f"p99_vs_{SHADOW_BASE}", {}).get("rollguard_shadow_hung"),
            lambda v: v <= SHADOW_HUNG_MAX_P99_RATIO,
        ),
        (
            "rollguard_shadow_hung",
            f"RSS growth over the window <= {RSS_FLAT_MIB:g} MiB (flat)",
            hung.get("rss_growth_mib"),
            lambda v: v <= RSS_FLAT_MIB,
        ),
    ]
    return [
        {"row": row, "target": what, "value": value, "met": None if value is None else check(value)}
        for row, what, value, check in checks
        if any(r["name"] == row for r in rows)
    ]


def contracts_targets(
    rows: list[dict[str, Any]], ratios: dict[str, dict[str, float | None]]
) -> list[dict[str, Any]]:
    """The contracts issue's target: contracts plus masked access logging cost at most 15 % of the data
    plane's throughput, judged on this run; `met` is None when a row is missing."""
    if not any(r["name"] == "rollguard_full" for r in rows):
        return []
    value = ratios.get(f"vs_{CONTRACTS_BASE}", {}).get("rollguard_full")
    return [
        {
            "row": "rollguard_full",
            "target": f"req/s >= {CONTRACTS_MIN_RPS_RATIO:g} x {CONTRACTS_BASE}",
            "value": value,
            "met": None if value is None else value >= CONTRACTS_MIN_RPS_RATIO,
        }
    ]


def fallback_summary(
    rows: list[dict[str, Any]], ratios: dict[str, dict[str, float | None]]
) -> dict[str, Any]:
    """Per fallback row: what the clients saw. Client errors are wrk's "Non-2xx or 3xx responses" (statuses
    >= 400; rollguard's 502/503 for a failed candidate attempt), their share of the answered requests, and
    separately wrk's socket errors (connect, read, write, timeout), which a client would see as errors too."""
    base = fallback_base(rows)
    p99 = ratios.get(f"p99_vs_{base}", {}) if base else {}
    out: dict[str, Any] = {"p99_base": base, "rows": {}}
    for r in rows:
        if r["name"] not in FALLBACK_ROWS or r["status"] != "ok":
            continue
        errors = r["errors"]
        socket_errors = errors["connect"] + errors["read"] + errors["write"] + errors["timeout"]
        counts = r.get("fallback_counts", {})
        pct = round(100 * errors["non_2xx_3xx"] / r["requests"], 3) if r["requests"] else None
        out["rows"][r["name"]] = {
            "requests": r["requests"],
            "client_errors": errors["non_2xx_3xx"],
            "client_error_pct": pct,
            "socket_errors": socket_errors,
            "p99_ms": r["p99_ms"],
            "p99_ratio": p99.get(r["name"]),
            "fallbacks": counts.get("fallbacks"),
            "candidate_failures": sum(counts.get("candidate_failures", {}).values()) if counts else None,
            "weight_at_end": counts.get("weight_at_end"),
        }
    return out


def fallback_targets(summary: dict[str, Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fallback on: no client errors at all (the target). Fallback off: the error rate, and both rows' p99
    against the no-failure row, reported without a target (`report`)."""
    ran = {r["name"] for r in rows}
    on, off = FALLBACK_ROWS
    measured = summary["rows"]
    checks: list[dict[str, Any]] = []
    if on in ran:
        row = measured.get(on)
        value = None if row is None else row["client_errors"] + row["socket_errors"]
        checks.append(
            {
                "row": on,
                "target": "0 client errors (non-2xx responses + socket errors)",
                "value": value,
                "met": None if value is None else value == 0,
            }
        )
    if off in ran:
        row = measured.get(off)
        checks.append(
            {
                "row": off,
                "target": f"client error rate in % (expect ~{FALLBACK_WEIGHT}, the canary weight; no target)",
                "value": None if row is None else row["client_error_pct"],
                "met": None,
                "report": True,
            }
        )
    for name in FALLBACK_ROWS:
        if name in ran:
            checks.append(
                {
                    "row": name,
                    "target": f"p99 over {summary['p99_base'] or 'a no-failure row (none ran)'} (no target)",
                    "value": measured.get(name, {}).get("p99_ratio"),
                    "met": None,
                    "report": True,
                }
            )
    return checks


def overload_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per overload row: wrk's view of every answer (req/s, non-2xx and their share, p99) next to
    rollguard's view of the admitted requests over the same window (count, rate, p50 and p99 from its
    histogram, mean in flight) and of the shed ones (the data listener's 503s), and the admitted p99
    over the normal row's."""
    names = (OVERLOAD_BASE, *OVERLOAD_ROWS)
    ok = {r["name"]: r for r in rows if r["name"] in names and r["status"] == "ok"}
    base = ok.get(OVERLOAD_BASE, {}).get("admitted", {})
    base_p99 = base.get("p99_ms")
    out: dict[str, Any] = {"base": OVERLOAD_BASE, "rows": {}}
    for name, r in ok.items():
        admitted = r.get("admitted", {})
        non_2xx = r["errors"]["non_2xx_3xx"]
        count = admitted.get("requests")
        p99 = admitted.get("p99_ms")
        out["rows"][name] = {
            "connections": r["connections"],
            "max_concurrency": r.get("config", {}).get("limits", {}).get("max_concurrency"),
            "requests_per_s": r["requests_per_s"],
            "requests": r["requests"],
            "non_2xx": non_2xx,
            "non_2xx_pct": round(100 * non_2xx / r["requests"], 2) if r["requests"] else None,
            "socket_errors": r["errors"]["total"] - non_2xx,
            "wrk_p99_ms": r["p99_ms"],
            "admitted": count,
            "admitted_per_s": round(count / r["duration_s"], 1) if count and r["duration_s"] else None,
            "admitted_p50_ms": admitted.get("p50_ms"),
            "admitted_p99_ms": p99,
            "admitted_p99_ratio": round(p99 / base_p99, 3) if p99 and base_p99 else None,
            # The p99s are only known to their buckets: the ratio's possible range from the bucket edges.
            "admitted_p99_ratio_bounds": overload.ratio_bounds(
                admitted.get("p99_bucket_ms"), base.get("p99_bucket_ms")
            ),
            "mean_in_flight": admitted.get("mean_in_flight"),
            "shed_503": admitted.get("shed_503"),
            "error": admitted.get("error"),
        }
    return out


def overload_targets(summary: dict[str, Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's target on the shedding row: admitted p99 within 2x the normal row's. The same check on
    the no-shedding row is the contrast (`contrast`: judged, but not a target)."""
    ran = {r["name"] for r in rows}
    checks = []
    for name, contrast in zip(OVERLOAD_ROWS, (False, True), strict=True):
        if name not in ran:
            continue
        measured = summary["rows"].get(name, {})
        value = measured.get("admitted_p99_ratio")
        check = {
            "row": name,
            "target": f"admitted p99 <= {OVERLOAD_MAX_P99_RATIO:g} x {OVERLOAD_BASE} admitted p99",
            "value": value,
            "met": None if value is None else value <= OVERLOAD_MAX_P99_RATIO,
            "bounds": measured.get("admitted_p99_ratio_bounds"),
        }
        checks.append(check | ({"contrast": True} if contrast else {}))
    return checks


# --- output --------------------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


NAME_W = 23


def _name_width(rows: list[dict[str, Any]]) -> int:
    """The name column: NAME_W, or wider for a long row name (and its noise mark)."""
    return max([NAME_W] + [len(r["name"]) + 2 for r in rows])


def render_table(
    rows: list[dict[str, Any]],
    ratios: dict[str, dict[str, float | None]],
    targets: dict[str, list[dict[str, Any]]] | None = None,
    fallback: dict[str, Any] | None = None,
    overloaded: dict[str, Any] | None = None,
) -> str:
    """The main table, then the shadow, contracts, fallback and overload tables with their targets
    (`targets` by group) for the groups that have rows in this run."""
    targets = targets or {}
    w = _name_width(rows)
    header = (
        f"{'row':<{w}}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
        f"{'x minimal':>11}{'x nginx':>9}{'cpu% proxy/load':>17}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        if r["status"] != "ok":
            reason = r["reason"] if len(r["reason"]) <= 90 else r["reason"][:87] + "..."
            lines.append(f"{r['name']:<{w}}{r['status']}: {reason}")
            continue
        name = r["name"] + ("*" if _noisy(r) else "")
        lines.append(
            f"{name:<{w}}{r['requests_per_s']:>10,.0f}{_fmt(r['p50_ms'], '.2f'):>9}"
            f"{_fmt(r['p99_ms'], '.2f'):>9}{r['errors']['total']:>8,}"
            f"{_fmt(ratios['vs_minimal_asgi'][r['name']], '.3f'):>11}"
            f"{_fmt(ratios['vs_nginx_split'][r['name']], '.3f'):>9}"
            f"{_fmt(r['busy_pct']['proxy_cpu'], '.0f') + '/' + _fmt(r['busy_pct']['load_cpu'], '.0f'):>17}"
        )
    shadow = [r for r in rows if "shadow" in r["groups"] and r["status"] == "ok"]
    if not any(r["groups"][0] == "shadow" for r in shadow):
        shadow = []  # only the shared anchor ran (e.g. --only core or contracts): no shadow table
    if shadow:
        lines += ["", *_shadow_table(shadow, ratios, targets.get("shadow", []))]
    contracts = [r for r in rows if r["name"] != "minimal_asgi" and "contracts" in r["groups"]]
    if all(r["name"] == CONTRACTS_BASE for r in contracts):
        contracts = []  # only the base ran, as the fallback rows' p99 base: no contracts table
    if contracts:
        lines += ["", *_contracts_table(contracts, ratios, targets.get("contracts", []))]
    if any(r["name"] in FALLBACK_ROWS for r in rows):
        lines += ["", *_fallback_table(rows, fallback or {"p99_base": None, "rows": {}})]
        lines += _target_lines(targets.get("fallback", []))
    if any(r["name"] in (OVERLOAD_BASE, *OVERLOAD_ROWS) for r in rows):
        lines += ["", *_overload_table(rows, overloaded or {"base": OVERLOAD_BASE, "rows": {}})]
        lines += _target_lines(targets.get("overload", []))
    if tracing := [r for r in rows if "tracing" in r["groups"]]:
        lines += ["", *_tracing_table(tracing, ratios)]
    if any(_noisy(r) for r in rows):
        lines.append(
            f"* other processes used over {NOISE_CPU_SHARE:.0%} of a CPU during this row: "
            "rerun on a quiet machine"
        )
    ref = REFERENCE_RPS
    lines.append(
        "reference (ARCHITECTURE.md §1): "
        f"minimal_asgi = {ref['minimal_asgi'] / ref['nginx_split']:.3f} x nginx, "
        f"starlette_httpx = {ref['starlette_httpx'] / ref['minimal_asgi']:.3f} x minimal"
        + (
            f", minimal_mirror = {ref['minimal_mirror'] / ref['minimal_asgi']:.3f} x minimal"
            if shadow
            else ""
        )
    )
    return "\n".join(lines)


def _shadow_table(
    rows: list[dict[str, Any]], ratios: dict[str, dict[str, float | None]], targets: list[dict[str, Any]]
) -> list[str]:
    """Shadow rows against rollguard's no-shadow row, with the proxy's resident memory over the window."""
    rps, p99 = ratios.get(f"vs_{SHADOW_BASE}", {}), ratios.get(f"p99_vs_{SHADOW_BASE}", {})
    header = (
        f"{'shadow row':<{NAME_W}}{'x req/s':>9}{'x p99':>8}{'RSS start':>11}{'RSS end':>9}{'growth':>8}"
        f"{'2nd half':>10}{'cpu us/req':>12}{'  mirrors sent/dropped/failed'}"
    )
    lines = [f"vs {SHADOW_BASE}; RSS in MiB over the measured window", header, "-" * len(header)]
    for r in rows:
        name = r["name"] + ("*" if _noisy(r) else "")
        lines.append(
            f"{name:<{NAME_W}}{_fmt(rps.get(r['name']), '.3f'):>9}{_fmt(p99.get(r['name']), '.2f'):>8}"
            f"{_fmt(r['rss_start_mib'], '.1f'):>11}{_fmt(r['rss_end_mib'], '.1f'):>9}"
            f"{_fmt(r['rss_growth_mib'], '+.1f'):>8}{_fmt(r['rss_late_growth_mib'], '+.1f'):>10}"
            f"{_fmt(r['proxy_cpu_us_per_request'], '.0f'):>12}"
            f"  {_mirror_counts(r)}"
        )
    if timed_out := [r["name"] for r in rows if r["errors"]["timeout"]]:
        lines.append(
            f"client timeouts in {', '.join(timed_out)}: wrk leaves requests over its 2 s timeout out of "
            "the latency percentiles, so their p99 reads low"
        )
    return lines + _target_lines(targets)


def _target_lines(targets: list[dict[str, Any]]) -> list[str]:
    """One line per target: the value and met / MISSED / not measured; `report` entries have no verdict."""
    lines = []
    for t in targets:
        spec = "+.1f" if "RSS" in t["target"] else ".0f" if t["target"].startswith("0 ") else ".3f"
        value = _fmt(t["value"], spec)
        if t.get("report"):
            lines.append(f"report {t['row']}: {t['target']}: {value}")
            continue
        if bounds := t.get("bounds"):
            value += f" (the buckets allow {bounds[0]:.2f} to {bounds[1]:.2f})"
        if t.get("contrast"):
            verdict = {True: "holds", False: "does not hold", None: "not measured"}[t["met"]]
            lines.append(f"contrast {t['row']}: {t['target']}: {value} -> {verdict} (not a target)")
            continue
        verdict = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        lines.append(f"target {t['row']}: {t['target']}: {value} -> {verdict}")
    return lines


def _contracts_table(
    rows: list[dict[str, Any]], ratios: dict[str, dict[str, float | None]], targets: list[dict[str, Any]]
) -> list[str]:
    """Contracts rows against rollguard_bare: throughput, p99, and the proxy's CPU per request."""
    rps = ratios.get(f"vs_{CONTRACTS_BASE}", {})
    p99 = ratios.get(f"p99_vs_{CONTRACTS_BASE}", {})
    cpu = ratios.get(f"cpu_vs_{CONTRACTS_BASE}", {})
    w = _name_width(rows)
    header = (
        f"{'contracts row':<{w}}{'req/s':>10}{'x req/s':>9}{'p99 ms':>9}{'x p99':>8}{'cpu us/req':>12}"
        f"{'x cpu/req':>11}{'log lines':>11}"
    )
    lines = [f"vs {CONTRACTS_BASE}; all traffic to the baseline", header, "-" * len(header)]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"{r['name']:<{w}}{r['status']}")
            continue
        name = r["name"] + ("*" if _noisy(r) else "")
        log_lines = r.get("access_log", {}).get("lines")
        lines.append(
            f"{name:<{w}}{r['requests_per_s']:>10,.0f}{_fmt(rps.get(r['name']), '.3f'):>9}"
            f"{_fmt(r['p99_ms'], '.2f'):>9}{_fmt(p99.get(r['name']), '.2f'):>8}"
            f"{_fmt(r['proxy_cpu_us_per_request'], '.0f'):>12}{_fmt(cpu.get(r['name']), '.3f'):>11}"
            f"{_fmt(log_lines, ','):>11}"
        )
    return lines + _target_lines(targets)


def _tracing_table(rows: list[dict[str, Any]], ratios: dict[str, dict[str, float | None]]) -> list[str]:
    """Tracing rows against tracing off: throughput, p99, the proxy's CPU per request (and what tracing
    adds to it), and the spans the sink received per request answered."""
    rps, p99 = ratios.get(f"vs_{TRACING_BASE}", {}), ratios.get(f"p99_vs_{TRACING_BASE}", {})
    cpu = ratios.get(f"cpu_vs_{TRACING_BASE}", {})
    base = next((r for r in rows if r["name"] == TRACING_BASE and r["status"] == "ok"), None)
    base_cpu = base["proxy_cpu_us_per_request"] if base else None
    w = _name_width(rows)
    header = (
        f"{'tracing row':<{w}}{'req/s':>10}{'x req/s':>9}{'p99 ms':>9}{'x p99':>8}{'cpu us/req':>12}"
        f"{'+us/req':>9}{'spans/req':>11}"
    )
    lines = [f"vs {TRACING_BASE}; all traffic to the baseline", header, "-" * len(header)]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"{r['name']:<{w}}{r['status']}")
            continue
        own = r["proxy_cpu_us_per_request"]
        added = own - base_cpu if own is not None and base_cpu is not None else None
        sink = r.get("otlp_sink", {})
        requests = r["requests_per_s"] * r["duration_s"] if r["requests_per_s"] else None
        per_req = sink["spans"] / requests if "spans" in sink and requests else None
        lines.append(
            f"{r['name']:<{w}}{r['requests_per_s']:>10,.0f}{_fmt(rps.get(r['name']), '.3f'):>9}"
            f"{_fmt(r['p99_ms'], '.2f'):>9}{_fmt(p99.get(r['name']), '.2f'):>8}"
            f"{_fmt(own, '.0f'):>12}{_fmt(added, '+.1f'):>9}{_fmt(per_req, '.3f'):>11}"
            + (f"  x cpu {_fmt(cpu.get(r['name']), '.3f')}" if r["name"] != TRACING_BASE else "")
        )
    return lines


def _fallback_table(rows: list[dict[str, Any]], summary: dict[str, Any]) -> list[str]:
    """What clients saw while the candidate refused every connection, fallback on and off."""
    base = summary["p99_base"]
    measured = summary["rows"]
    w = _name_width([r for r in rows if r["name"] in FALLBACK_ROWS])
    header = (
        f"{'fallback row':<{w}}{'req/s':>10}{'p99 ms':>9}{'x p99':>8}{'non-2xx':>9}{'err %':>8}"
        f"{'socket':>8}{'fallbacks':>11}{'weight':>8}"
    )
    lines = [
        f"canary {FALLBACK_WEIGHT} to a candidate that refuses connections; "
        f"p99 vs {base or '(no base ran)'}; client errors = wrk's non-2xx",
        header,
        "-" * len(header),
    ]
    for r in rows:
        if r["name"] not in FALLBACK_ROWS:
            continue
        if r["status"] != "ok":
            lines.append(f"{r['name']:<{w}}{r['status']}")
            continue
        m = measured[r["name"]]
        name = r["name"] + ("*" if _noisy(r) else "")
        lines.append(
            f"{name:<{w}}{r['requests_per_s']:>10,.0f}{_fmt(r['p99_ms'], '.2f'):>9}"
            f"{_fmt(m['p99_ratio'], '.2f'):>8}{m['client_errors']:>9,}{_fmt(m['client_error_pct'], '.2f'):>8}"
            f"{m['socket_errors']:>8,}{_fmt(m['fallbacks'], ','):>11}{_fmt(m['weight_at_end'], 'g'):>8}"
        )
    return lines


def _overload_table(rows: list[dict[str, Any]], summary: dict[str, Any]) -> list[str]:
    """wrk's view of every answer next to rollguard's view of the admitted ones, per overload row."""
    measured = summary["rows"]
    names = (OVERLOAD_BASE, *OVERLOAD_ROWS)
    w = _name_width([r for r in rows if r["name"] in names])
    header = (
        f"{'overload row':<{w}}{'conns':>6}{'limit':>7}{'req/s':>9}{'non-2xx':>9}{'%':>6}{'p99 ms':>8}"
        f"{'adm/s':>8}{'adm p50':>9}{'adm p99':>9}{'x p99':>7}{'shed 503':>10}{'in flight':>10}"
    )
    lines = [
        "req/s, non-2xx, p99: wrk, every answer; adm: the admitted requests, from rollguard's "
        f'{overload.DURATION}{{role="baseline"}} over the window; x p99: adm p99 over {OVERLOAD_BASE}',
        header,
        "-" * len(header),
    ]
    for r in rows:
        if r["name"] not in names:
            continue
        if r["status"] != "ok":
            lines.append(f"{r['name']:<{w}}{r['status']}")
            continue
        m = measured[r["name"]]
        name = r["name"] + ("*" if _noisy(r) else "")
        limit = "-" if m["max_concurrency"] is None else str(m["max_concurrency"])
        lines.append(
            f"{name:<{w}}{m['connections']:>6}{limit:>7}"
            f"{m['requests_per_s']:>9,.0f}{m['non_2xx']:>9,}{_fmt(m['non_2xx_pct'], '.1f'):>6}"
            f"{_fmt(m['wrk_p99_ms'], '.2f'):>8}{_fmt(m['admitted_per_s'], ',.0f'):>8}"
            f"{_fmt(m['admitted_p50_ms'], '.2f'):>9}{_fmt(m['admitted_p99_ms'], '.2f'):>9}"
            f"{_fmt(m['admitted_p99_ratio'], '.2f'):>7}{_fmt(m['shed_503'], ','):>10}"
            f"{_fmt(m['mean_in_flight'], '.1f'):>10}"
        )
        if m["error"]:
            lines.append(f"    {r['name']}: could not read /metrics: {m['error']}")
    lines.append(
        "limit: limits.max_concurrency ('-': the default, 1024); in flight: admitted requests inside the "
        "proxy at once, mean over the window"
    )
    if timed_out := [r["name"] for r in rows if r["name"] in names and r.get("errors", {}).get("timeout")]:
        lines.append(f"client timeouts (over wrk's 2 s, left out of its p99) in {', '.join(timed_out)}")
    return lines


def _mirror_counts(row: dict[str, Any]) -> str:
    """What the proxy says it mirrored (rollguard's metrics, the naive proxy's counters), else '-'."""
    if counts := row.get("shadow_counts"):
        req = counts["requests"]
        return f"{req.get('sent', 0)}/{req.get('dropped', 0)}/{req.get('failed', 0)}"
    if naive := row.get("server_stats", {}).get("minimal_mirror_proxy"):
        outcomes = naive["outcomes"]
        sent = sum(outcomes.values()) + naive["in_flight_at_exit"]
        return f"{sent}/0/{sum(outcomes.values()) - outcomes.get('answered', 0)}"
    return "-"


def write_results(doc: dict[str, Any], out: Path) -> Path | None:
    """Write the result; one written into results/ also becomes results/latest.json (returned). A file
    written elsewhere (`--out /tmp/before.json`) is a side experiment and leaves latest.json alone."""
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(doc, indent=2) + "\n"
    out.write_text(text)
    latest = RESULTS_DIR / "latest.json"
    if out.resolve().parent != RESULTS_DIR.resolve():
        return None
    if out.resolve() != latest.resolve():
        latest.write_text(text)
    return latest


# --- entry point ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="rollguard proxy benchmark against its anchors")
    parser.add_argument("--duration", type=float, default=None, help="seconds per row (default 10)")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections (default 50)")
    parser.add_argument("--quick", action="store_true", help="3-second smoke run per row")
    parser.add_argument(
        "--only",
        default="",
        help=f"comma-separated rows or groups ({', '.join(GROUPS)}); rows: {','.join(ROW_NAMES)}",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="result file (default results/bench-<UTC>.json)"
    )
    parser.add_argument("--keep-tmp", action="store_true", help="keep configs and server logs for debugging")
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 3.0 if args.quick else 10.0
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(only) - set(ROW_NAMES) - set(GROUPS))
    if unknown:
        parser.error(
            f"unknown rows {unknown}; choose groups {','.join(GROUPS)} or rows {','.join(ROW_NAMES)}"
        )
    chosen = {name for item in only for name in GROUPS.get(item, (item,))}
    args.rows = [row for row in ROWS if not only or row.name in chosen]
    return args


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    # The first signal unwinds the run (every ExitStack stops its servers); further ones are ignored so a
    # second Ctrl-C cannot cut that teardown short and leave servers behind.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def run_dir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="rollguard-bench-"))
    path.chmod(0o711)  # nginx workers may run as "nobody" and must traverse to their prefix
    try:
        yield path
    finally:
        if keep:
            print(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def _print_row(index: int, total: int, row: dict[str, Any]) -> None:
    if row["status"] == "ok":
        print(
            f"[{index}/{total}] {row['name']}: {row['requests_per_s']:,.0f} req/s, "
            f"p99 {_fmt(row['p99_ms'], '.2f')} ms, {row['errors']['total']} errors"
        )
        if "shadow" in row["groups"]:
            print(
                f"    RSS {_fmt(row['rss_start_mib'], '.1f')} -> {_fmt(row['rss_end_mib'], '.1f')} MiB, "
                f"mirrors sent/dropped/failed {_mirror_counts(row)}"
            )
        if (log := row.get("access_log")) and log.get("lines"):
            print(f"    access log: {log['lines']:,} lines, {log['bytes'] / log['lines']:.0f} bytes per line")
        if counts := row.get("fallback_counts"):
            failures = ", ".join(f"{k} {n:,}" for k, n in counts["candidate_failures"].items()) or "none"
            print(
                f"    non-2xx {row['errors']['non_2xx_3xx']:,}; "
                f"rollguard: fallbacks {counts['fallbacks']:,}, failed candidate attempts ({failures}), "
                f"retries {counts['retries']:,}, "
                f"weight at end {_fmt(counts.get('weight_at_end'), 'g')} ({counts.get('phase_at_end')})"
            )
        if (adm := row.get("admitted")) is not None:
            if "error" in adm:
                print(f"    rollguard /metrics: {adm['error']}")
            else:
                print(
                    f"    {row['connections']} connections; non-2xx {row['errors']['non_2xx_3xx']:,}; "
                    f"rollguard: {adm['requests']:,} admitted, p50 {_fmt(adm['p50_ms'], '.2f')} ms, "
                    f"p99 {_fmt(adm['p99_ms'], '.2f')} ms, {_fmt(adm['mean_in_flight'], '.1f')} in flight; "
                    f"shed (503) {adm['shed_503']:,}"
                )
        _warn_if_noisy(row)
        return
    print(f"[{index}/{total}] {row['name']}: {row['status'].upper()}: {row['reason']}")
    if row.get("detail"):
        print("\n".join(f"    {line}" for line in row["detail"].splitlines()))


def _noisy(row: dict[str, Any]) -> bool:
    """Two cores leave no slack: a neighbour using a tenth of one during the row moves its numbers."""
    return bool(row["status"] == "ok" and row["neighbours"]["cpu_s"] > NOISE_CPU_SHARE * row["duration_s"])


def _warn_if_noisy(row: dict[str, Any]) -> None:
    if not _noisy(row):
        return
    others = row["neighbours"]
    names = ", ".join(f"{p['comm']} {p['cpu_s']:.1f} s" for p in others["top"] if p["cpu_s"] >= 0.1)
    print(f"    noisy: other processes used {others['cpu_s']:.1f} CPU-s during this row ({names})")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            print(f"error: {tool} not found (apt-get install {tool})", file=sys.stderr)
            return 2
    problems = check_fixtures()
    for problem in problems:
        print(problem, file=sys.stderr)
    if any(p.startswith("error:") for p in problems):
        return 2
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    started = datetime.now(UTC)
    pinning = choose_pinning()
    info = machine.info(REPO)
    heavy = [r.name for r in args.rows if r.load_factor != 1]
    print(
        f"{len(args.rows)} rows x {args.duration:g} s, {args.connections} connections"
        + (f" ({OVERLOAD_FACTOR * args.connections} in {', '.join(heavy)})" if heavy else "")
        + f"; {pinning.note}"
    )
    rows: list[dict[str, Any]] = []
    try:
        with run_dir(args.keep_tmp) as tmp:
            for index, row in enumerate(args.rows, 1):
                row_dir = tmp / row.name
                row_dir.mkdir(mode=0o711)
                ctx = RunContext(row_dir, pinning, args.connections)
                rows.append(run_row(row, ctx, args.connections, args.duration))
                _print_row(index, len(args.rows), rows[-1])
                # Loopback sockets from the last row linger in TIME_WAIT; a short pause keeps rows apart.
                time.sleep(0.5)
    except KeyboardInterrupt:
        print("\ninterrupted: servers stopped, no result written", file=sys.stderr)
        return 130
    info["loadavg_at_end"] = os.getloadavg()  # a busy neighbour during the run shows up here
    ratios = compute_ratios(rows)
    fallback = fallback_summary(rows, ratios)
    overloaded = overload_summary(rows)
    targets = {
        "shadow": shadow_targets(rows, ratios),
        "contracts": contracts_targets(rows, ratios),
        "fallback": fallback_targets(fallback, rows),
        "overload": overload_targets(overloaded, rows),
    }
    print()
    print(render_table(rows, ratios, targets, fallback, overloaded))
    out = args.out or RESULTS_DIR / f"bench-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    doc = {
        "format": 1,
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "machine": info,
        "parameters": {
            "duration_s": args.duration,
            "connections": args.connections,
            "wrk_threads": 1,
            "warmup_s": WARMUP_S,
            "quick": args.quick,
            "rows": [r.name for r in args.rows],
            "canary_weight": CANARY_WEIGHT,
            "groups": {group: list(names) for group, names in GROUPS.items()},
            "shadow": {
                "rollguard_section": shadow_section(1.0) | {"sample": "per row"},
                "canary_weight": 0,
                "timeout_s": SHADOW_TIMEOUT_S,
                "max_in_flight_rollguard": SHADOW_MAX_IN_FLIGHT,
                "rss_sample_s": RSS_SAMPLE_S,
            },
            "contracts": {
                "base": CONTRACTS_BASE,
                "canary_weight": 0,
                "shadow_sample": 0,
                "request_schema": str(REQUEST_SCHEMA.relative_to(REPO)),
                "response_schema": str(RESPONSE_SCHEMA.relative_to(REPO)),
                "logged": "access log to a file, logging.pii.key: file:<32-byte secret>, sample_success 1",
                "min_rps_ratio_full": CONTRACTS_MIN_RPS_RATIO,
            },
            "fallback": {
                "canary_weight": FALLBACK_WEIGHT,
                "candidate": "a bound, never-listening port: every connect is refused",
                "canary_keys": {"shadow_samples": 0, "fallback_to_baseline": "true / false per row"},
                "otherwise": CONTRACTS_BASE,
            },
            "overload": {
                "base": OVERLOAD_BASE,
                "config": f"{CONTRACTS_BASE}'s (canary 0, shadow sample 0, no contracts, access log off)",
                "connections": {
                    OVERLOAD_BASE: args.connections,
                    **{name: OVERLOAD_FACTOR * args.connections for name in OVERLOAD_ROWS},
                },
                "max_concurrency": {
                    OVERLOAD_BASE: "default (1024)",
                    OVERLOAD_ROWS[0]: overload.ceil_pow2(args.connections),
                    OVERLOAD_ROWS[1]: OVERLOAD_NO_LIMIT,
                },
                "admitted_latency": f'{overload.DURATION}{{role="baseline"}}: /metrics after minus before '
                "the window, PromQL histogram_quantile",
                "max_admitted_p99_ratio_shed": OVERLOAD_MAX_P99_RATIO,
            },
            "path": PATH,
            "request": str(wrk.POST_LUA.relative_to(REPO)),
            "pinning": {"proxy_cpu": pinning.proxy_cpu, "load_cpu": pinning.load_cpu, "note": pinning.note},
        },
        "rows": rows,
        "ratios": ratios,
        "shadow_targets": targets["shadow"],
        "contracts_targets": targets["contracts"],
        "fallback": fallback,
        "fallback_targets": targets["fallback"],
        "overload": overloaded,
        "overload_targets": targets["overload"],
        "reference_requests_per_s": {"source": "ARCHITECTURE.md §1", **REFERENCE_RPS},
    }
    latest = write_results(doc, out)
    print(f"\nwrote {out}" + (f" and {latest}" if latest and latest != out else ""))
    return 1 if any(r["status"] == "failed" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
