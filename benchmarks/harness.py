"""What every row group builds on: the targets a row hands back, starting the processes a row needs (the
static upstreams, the Python anchors, `rollguard serve` with a generated config), and running one row.

A row is measured the same way whatever it starts: fresh upstreams, the proxy under test, a warm-up, then
wrk's measured window with the proxy's memory and CPU watched. Only the start functions differ, and those
live with their group (groups/*.py) unless several groups share them.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import machine
import nginx_conf
import overload
import probes
import procs
import wrk
import yaml

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
REQUEST_SCHEMA = REPO / "config" / "schemas" / "infer_request.json"
RESPONSE_SCHEMA = REPO / "config" / "schemas" / "infer_response.json"
PATH = "/v1/infer"
CANARY_WEIGHT = 10
WARMUP_S = 1.0
READY_TIMEOUT_S = 15.0
PROBE_BODY = wrk.request_body()
PROBE_HEADERS = {"Content-Type": "application/json"}
# Every proxy that mirrors gets the same mirror budget. rollguard's keys are the `shadow:` config section.
SHADOW_TIMEOUT_S = 2.0
SHADOW_MAX_IN_FLIGHT = 256

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


Start = Callable[[RunContext, contextlib.ExitStack], Target]  # a row's start function


class RowSkipped(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class Row:
    name: str
    description: str
    start: Start
    group: str = "core"  # the group it is listed under
    also_in: tuple[str, ...] = ()  # other groups that run it, as an anchor for their ratios
    load_factor: int = 1  # wrk connections = --connections x this (overload rows: 3)

    @property
    def groups(self) -> tuple[str, ...]:
        return (self.group, *self.also_in)


# --- servers -------------------------------------------------------------------------------------------


def serve(
    ctx: RunContext, stack: contextlib.ExitStack, name: str, cmd: list[str], cwd: Path | None = None
) -> procs.Server:
    """Start a process whose teardown is registered before anything can fail."""
    server = procs.start(name, cmd, ctx.tmp, cwd)
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
    server = serve(
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


def wait_for_proxy(ctx: RunContext, server: procs.Server, port: int) -> None:
    assert ctx.upstreams is not None
    procs.wait_until(
        lambda: _answers_like_model(port),
        [server, *ctx.upstreams.servers],
        READY_TIMEOUT_S,
        f"{server.name} answered POST {PATH}",
    )


def anchor_cmd(cpu: int | None, script: str, port: int, *args: str) -> list[str]:
    """One of benchmarks/anchors/*.py on `port`, pinned to `cpu`, with the same interpreter as the harness."""
    return procs.pin(cpu) + [sys.executable, str(BENCH_DIR / "anchors" / script), "--port", str(port), *args]


def start_helper(ctx: RunContext, stack: contextlib.ExitStack, script: str, what: str) -> int:
    """One of benchmarks/anchors/*.py that only has to accept connections (the hung upstream, the OTLP
    sink), on the load generator's CPU; returns its port."""
    [port] = procs.free_ports(1)
    server = serve(ctx, stack, Path(script).stem, anchor_cmd(ctx.pinning.load_cpu, script, port))
    procs.wait_until(lambda: procs.accepts(port), [server], READY_TIMEOUT_S, f"{what} accepted")
    return port


def start_hung_upstream(ctx: RunContext, stack: contextlib.ExitStack) -> str:
    """A shadow that accepts and reads but never answers, on the load generator's CPU; returns its URL."""
    port = start_helper(ctx, stack, "hung_upstream.py", "the hung upstream")
    return f"http://{procs.HOST}:{port}"


def mirror_target(ctx: RunContext, stack: contextlib.ExitStack, hung: bool) -> str:
    assert ctx.upstreams is not None
    return start_hung_upstream(ctx, stack) if hung else ctx.upstreams.candidate_url


def python_anchor(script: str, canary_weight: float = CANARY_WEIGHT, mirror: str | None = None) -> Start:
    """A row that runs one of benchmarks/anchors/*.py as the proxy under test; `mirror`
    ("candidate" or "hung") also hands it a mirror target (minimal_mirror_proxy.py)."""

    def start(ctx: RunContext, stack: contextlib.ExitStack) -> Target:
        assert ctx.upstreams is not None
        up, extra = ctx.upstreams, {}
        args = ["--baseline", up.baseline_url, "--candidate", up.candidate_url]
        args += ["--canary-weight", f"{canary_weight:g}"]
        if mirror is not None:
            extra["mirror_url"] = mirror_target(ctx, stack, mirror == "hung")
            args += ["--mirror", extra["mirror_url"], "--mirror-timeout", f"{SHADOW_TIMEOUT_S:g}"]
        [port] = procs.free_ports(1)
        cmd = anchor_cmd(ctx.pinning.proxy_cpu, script, port, *args)
        server = serve(ctx, stack, Path(script).stem, cmd)
        wait_for_proxy(ctx, server, port)
        return Target(port, cmd, extra, proxy=server)

    return start


# --- rollguard -----------------------------------------------------------------------------------------


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
    """The config, only the keys a deployment must set; everything else stays at rollguard's defaults.
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
    """`rollguard serve` with a config from `rollguard_config` (the defaults: the core row), with the
    readers of its `/metrics` and access log that the config calls for attached to the measured window."""
    # `python -m proxy` from the repo root this file is in: the proxy measured is this checkout's, even where
    # the venv's `rollguard` script (an editable install) points at another checkout, e.g. a git worktree.
    if not (REPO / "proxy" / "__main__.py").exists():
        raise RowSkipped(f"{REPO / 'proxy'} has no __main__.py (`python -m proxy serve`)")
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
    serve_cmd = [sys.executable, "-m", "proxy", "serve", "--config", str(config_path)]
    cmd = procs.pin(ctx.pinning.proxy_cpu) + serve_cmd
    server = serve(ctx, stack, "rollguard", cmd, cwd=REPO)  # -m puts the cwd first on sys.path
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
        readers.append(functools.partial(probes.rollguard_shadow_counts, admin_port))
    if canary is not None:
        readers.append(functools.partial(probes.rollguard_fallback_counts, admin_port))
    if access_log and pii_key_file is not None:
        readers.append(functools.partial(probes.access_log_summary, work / "access.log"))
    before = None
    if admitted_window:  # /metrics right before and right after the window: the admitted requests' latency
        meter = overload.AdmittedWindow(functools.partial(probes.rollguard_metrics, admin_port))
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


def start_bare(ctx: RunContext, stack: contextlib.ExitStack, **overrides: Any) -> Target:
    """rollguard_bare's config, the data plane alone: all traffic to the baseline (canary 0, shadow sample
    0), no contracts, no score, access log off. The contracts, fallback, overload and tracing rows start
    from it; `overrides` are start_rollguard's keywords that they change or add."""
    bare = {"canary_weight": 0, "shadow": shadow_section(0.0), "contracts": "none", "access_log": False}
    return start_rollguard(ctx, stack, **(bare | overrides))


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


# --- before the first row ------------------------------------------------------------------------------


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
