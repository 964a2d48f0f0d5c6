"""rollguard benchmark harness: the proxy against its anchors, in one run, pinned the same way on every row.

    .venv/bin/python benchmarks/run.py [--duration 10] [--connections 50] [--quick] [--only a,b] [--out F]

Each row starts a static nginx "model server" pair (baseline v1, candidate v2), the proxy under test, waits
until they answer, warms up, runs wrk with a small JSON POST, and stops everything again. See README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import signal
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
# ARCHITECTURE.md §1, same machine class and method: what a healthy run looks like, for the ratios.
REFERENCE_RPS = {"direct": 67_500, "nginx_split": 46_400, "minimal_asgi": 7_500, "starlette_httpx": 312}
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
    upstreams: Upstreams | None = None
    servers: list[procs.Server] = field(default_factory=list)  # everything this row started


@dataclass
class Target:
    """What a row's start function hands back: where to send load, and how it was started."""

    port: int
    cmd: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


class RowSkipped(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class Row:
    name: str
    description: str
    start: Callable[[RunContext, contextlib.ExitStack], Target]


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
    _wait_for_proxy(ctx, _serve(ctx, stack, "nginx-split", cmd), port)
    return Target(port, cmd, {"nginx_conf": conf})


def python_anchor(script: str) -> Callable[[RunContext, contextlib.ExitStack], Target]:
    """A row that runs one of benchmarks/anchors/*.py with the same interpreter as the harness."""

    def start(ctx: RunContext, stack: contextlib.ExitStack) -> Target:
        assert ctx.upstreams is not None
        up, [port] = ctx.upstreams, procs.free_ports(1)
        cmd = procs.pin(ctx.pinning.proxy_cpu) + [
            sys.executable,
            str(BENCH_DIR / "anchors" / script),
            "--port",
            str(port),
            "--baseline",
            up.baseline_url,
            "--candidate",
            up.candidate_url,
            "--canary-weight",
            str(CANARY_WEIGHT),
        ]
        _wait_for_proxy(ctx, _serve(ctx, stack, Path(script).stem, cmd), port)
        return Target(port, cmd)

    return start


def rollguard_config(ctx: RunContext, port: int, admin_port: int) -> dict[str, Any]:
    """PRODUCT.md §2, only the keys a deployment must set; everything else stays at rollguard's defaults."""
    assert ctx.upstreams is not None
    up, work = ctx.upstreams, ctx.tmp
    return {
        "listen": f"{procs.HOST}:{port}",
        "admin": {"listen": f"{procs.HOST}:{admin_port}"},
        "state": {"url": f"file:{work}/state.json"},
        "upstreams": {
            "baseline": {"url": up.baseline_url, "version": "v1"},
            "candidate": {"url": up.candidate_url, "version": "v2"},
        },
        "routes": [
            {
                "name": "infer",
                "path": PATH,
                "methods": ["POST"],
                "response_schema": str(RESPONSE_SCHEMA),
                "score": "/score",
                "decision_threshold": 0.5,
                "sticky_key": "header:x-user-id",
            }
        ],
        "canary": {"weight": CANARY_WEIGHT},
        "logging": {"access_log": f"{work}/access.log"},
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


def start_rollguard(ctx: RunContext, stack: contextlib.ExitStack) -> Target:
    exe = Path(sys.executable).parent / "rollguard"
    if not exe.exists():
        raise RowSkipped(f"{exe} is not installed (pip install -e . in the venv)")
    port, admin_port = procs.free_ports(2)
    work = ctx.tmp
    config = rollguard_config(ctx, port, admin_port)
    config_path = work / "rollguard.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    if not RESPONSE_SCHEMA.exists():
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
    # Up but answering the call with an error is measured anyway (the errors column shows it), with a warning.
    status, body = procs.http_call(port, "POST", PATH, PROBE_BODY, PROBE_HEADERS)
    if status != 200:
        print(f"  warning: rollguard answered the probe POST with {status}: {body[:300]!r}")
    return Target(port, cmd, {"config": config, "probe_status": status})


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
    ),
    Row(
        "starlette_httpx",
        "Starlette catch-all route + shared httpx.AsyncClient (what people write first)",
        python_anchor("starlette_httpx_proxy.py"),
    ),
    Row("rollguard", "`rollguard serve --config <generated>`, the real proxy", start_rollguard),
)
ROW_NAMES = tuple(row.name for row in ROWS)


# --- running -------------------------------------------------------------------------------------------


def run_row(row: Row, ctx: RunContext, connections: int, duration_s: float) -> dict[str, Any]:
    result: dict[str, Any] = {"name": row.name, "description": row.description}
    # Fresh upstreams per row: no row inherits another's connections, buffers or warm caches.
    with contextlib.ExitStack() as stack:
        try:
            ctx.upstreams = start_upstreams(ctx, stack)
            target = row.start(ctx, stack)
            url = f"http://{procs.HOST}:{target.port}{PATH}"
            wrk.run(url, connections, WARMUP_S, ctx.pinning.load_cpu)  # pools filled, code paths hot
            cpu_before, procs_before = machine.cpu_times(), machine.process_cpu()
            measured, raw = wrk.run(url, connections, duration_s, ctx.pinning.load_cpu)
            usage = machine.cpu_usage(cpu_before, machine.cpu_times())
            own = {server.popen.pid for server in ctx.servers}  # each server leads its own session
            others = machine.neighbours(procs_before, machine.process_cpu(), own)
            # A server that died under load leaves numbers that describe the crash, not the proxy.
            if crashed := [s.name for s in ctx.servers if s.exited()]:
                raise procs.NotReady(f"{', '.join(crashed)} exited during the run")
        except RowSkipped as exc:
            return result | {"status": "skipped", "reason": exc.reason, "detail": exc.detail}
        except (procs.NotReady, wrk.WrkFailed, OSError) as exc:
            return result | {"status": "failed", "reason": str(exc), "detail": _server_logs(ctx.tmp)}
        finally:
            ctx.upstreams = None
    return result | {
        "status": "ok",
        "url": url,
        "server_cmd": target.cmd,
        "requests_per_s": measured.requests_per_s,
        "p50_ms": measured.latency_ms.get("p50"),
        "p99_ms": measured.latency_ms.get("p99"),
        **measured.to_json(),
        "cpu_usage": usage,
        "busy_pct": _busy(usage, ctx.pinning),
        "neighbours": others,
        **target.extra,
        "wrk_output": raw,
    }


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
    """Throughput relative to anchors measured in the same run: the numbers that travel across machines."""
    rps = {r["name"]: r["requests_per_s"] for r in rows if r["status"] == "ok" and r["requests_per_s"]}
    ratios: dict[str, dict[str, float | None]] = {}
    for anchor in ("minimal_asgi", "nginx_split"):
        base = rps.get(anchor)
        ratios[f"vs_{anchor}"] = {
            r["name"]: (round(rps[r["name"]] / base, 4) if base and r["name"] in rps else None) for r in rows
        }
    return ratios


# --- output --------------------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render_table(rows: list[dict[str, Any]], ratios: dict[str, dict[str, float | None]]) -> str:
    header = (
        f"{'row':<16}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'x minimal':>11}{'x nginx':>9}"
        f"{'cpu% proxy/load':>17}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        if r["status"] != "ok":
            reason = r["reason"] if len(r["reason"]) <= 90 else r["reason"][:87] + "..."
            lines.append(f"{r['name']:<16}{r['status']}: {reason}")
            continue
        name = r["name"] + ("*" if _noisy(r) else "")
        lines.append(
            f"{name:<16}{r['requests_per_s']:>10,.0f}{_fmt(r['p50_ms'], '.2f'):>9}"
            f"{_fmt(r['p99_ms'], '.2f'):>9}{r['errors']['total']:>8,}"
            f"{_fmt(ratios['vs_minimal_asgi'][r['name']], '.3f'):>11}"
            f"{_fmt(ratios['vs_nginx_split'][r['name']], '.3f'):>9}"
            f"{_fmt(r['busy_pct']['proxy_cpu'], '.0f') + '/' + _fmt(r['busy_pct']['load_cpu'], '.0f'):>17}"
        )
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
    )
    return "\n".join(lines)


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
    parser.add_argument("--only", default="", help=f"comma-separated rows: {','.join(ROW_NAMES)}")
    parser.add_argument(
        "--out", type=Path, default=None, help="result file (default results/bench-<UTC>.json)"
    )
    parser.add_argument("--keep-tmp", action="store_true", help="keep configs and server logs for debugging")
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 3.0 if args.quick else 10.0
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(only) - set(ROW_NAMES))
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {','.join(ROW_NAMES)}")
    args.rows = [row for row in ROWS if not only or row.name in only]
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
    print(f"{len(args.rows)} rows x {args.duration:g} s, {args.connections} connections; {pinning.note}")
    rows: list[dict[str, Any]] = []
    try:
        with run_dir(args.keep_tmp) as tmp:
            for index, row in enumerate(args.rows, 1):
                row_dir = tmp / row.name
                row_dir.mkdir(mode=0o711)
                rows.append(run_row(row, RunContext(row_dir, pinning), args.connections, args.duration))
                _print_row(index, len(args.rows), rows[-1])
                # Loopback sockets from the last row linger in TIME_WAIT; a short pause keeps rows apart.
                time.sleep(0.5)
    except KeyboardInterrupt:
        print("\ninterrupted: servers stopped, no result written", file=sys.stderr)
        return 130
    info["loadavg_at_end"] = os.getloadavg()  # a busy neighbour during the run shows up here
    ratios = compute_ratios(rows)
    print()
    print(render_table(rows, ratios))
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
            "path": PATH,
            "request": str(wrk.POST_LUA.relative_to(REPO)),
            "pinning": {"proxy_cpu": pinning.proxy_cpu, "load_cpu": pinning.load_cpu, "note": pinning.note},
        },
        "rows": rows,
        "ratios": ratios,
        "reference_requests_per_s": {"source": "ARCHITECTURE.md §1", **REFERENCE_RPS},
    }
    latest = write_results(doc, out)
    print(f"\nwrote {out}" + (f" and {latest}" if latest and latest != out else ""))
    return 1 if any(r["status"] == "failed" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
