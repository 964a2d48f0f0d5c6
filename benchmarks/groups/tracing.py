"""The tracing rows (the "Observability" issue): the per-request price of OpenTelemetry tracing.
rollguard_bare's config with tracing off, then exporting over OTLP/HTTP to a loopback sink
(anchors/otlp_sink.py) that counts the spans and discards them, at three sample ratios."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

import harness
import procs
from harness import Row, RunContext, Start, Target
from report import Ratios, Results, by_row, fmt, group_table, name_width, over

from groups import Group

TRACING_BASE = "rollguard_tracing_off"  # the tracing rows' base: rollguard_bare's config, tracing off
TRACING_RATIOS = (0.0, 0.01, 1.0)  # tracing.sample_ratio of the rows that export to the loopback sink


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


def tracing_row(ratio: float | None) -> Start:
    """rollguard_bare's config (all traffic to the baseline, no contracts, access log off) with tracing off
    (`ratio` None), or exporting over OTLP/HTTP to a loopback sink that counts and discards, at that
    `tracing.sample_ratio` (0: every request gets a trace id and a traceparent, nothing is recorded)."""

    def start(ctx: RunContext, stack: contextlib.ExitStack) -> Target:
        tracing, sink = None, None
        if ratio is not None:
            sink = harness.start_helper(ctx, stack, "otlp_sink.py", "the OTLP sink")
            tracing = {
                "exporter": "otlp",
                "endpoint": f"http://{procs.HOST}:{sink}/v1/traces",
                "sample_ratio": ratio,
            }
        target = harness.start_bare(ctx, stack, tracing=tracing)
        if sink is not None:
            window = SinkWindow(sink, target.after_window)
            target.before_window, target.after_window = window.before, window.after
        return target

    return start


ROWS = (
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


def add_ratios(rows: Results, ratios: Ratios) -> None:
    """The tracing rows against tracing off: throughput, p99, and the proxy's CPU per request."""
    if tracing := [r["name"] for r in rows if "tracing" in r["groups"]]:
        cpu = by_row(rows, "proxy_cpu_us_per_request")
        ratios[f"vs_{TRACING_BASE}"] = over(by_row(rows, "requests_per_s"), TRACING_BASE, tracing)
        ratios[f"p99_vs_{TRACING_BASE}"] = over(by_row(rows, "p99_ms"), TRACING_BASE, tracing)
        ratios[f"cpu_vs_{TRACING_BASE}"] = over(cpu, TRACING_BASE, tracing)


def table(rows: Results, ratios: Ratios, entries: dict[str, Any]) -> list[str]:
    """Tracing rows against tracing off: throughput, p99, the proxy's CPU per request (and what tracing
    adds to it), and the spans the sink received per request answered."""
    rows = [r for r in rows if "tracing" in r["groups"]]
    if not rows:
        return []
    rps, p99 = ratios.get(f"vs_{TRACING_BASE}", {}), ratios.get(f"p99_vs_{TRACING_BASE}", {})
    cpu = ratios.get(f"cpu_vs_{TRACING_BASE}", {})
    base = next((r for r in rows if r["name"] == TRACING_BASE and r["status"] == "ok"), None)
    base_cpu = base["proxy_cpu_us_per_request"] if base else None
    w = name_width(rows)
    header = (
        f"{'tracing row':<{w}}{'req/s':>10}{'x req/s':>9}{'p99 ms':>9}{'x p99':>8}{'cpu us/req':>12}"
        f"{'+us/req':>9}{'spans/req':>11}"
    )

    def line(r: dict[str, Any]) -> list[str]:
        own = r["proxy_cpu_us_per_request"]
        added = own - base_cpu if own is not None and base_cpu is not None else None
        sink = r.get("otlp_sink", {})
        requests = r["requests_per_s"] * r["duration_s"] if r["requests_per_s"] else None
        per_req = sink["spans"] / requests if "spans" in sink and requests else None
        return [
            f"{r['name']:<{w}}{r['requests_per_s']:>10,.0f}{fmt(rps.get(r['name']), '.3f'):>9}"
            f"{fmt(r['p99_ms'], '.2f'):>9}{fmt(p99.get(r['name']), '.2f'):>8}"
            f"{fmt(own, '.0f'):>12}{fmt(added, '+.1f'):>9}{fmt(per_req, '.3f'):>11}"
            + (f"  x cpu {fmt(cpu.get(r['name']), '.3f')}" if r["name"] != TRACING_BASE else "")
        ]

    return group_table(f"vs {TRACING_BASE}; all traffic to the baseline", header, rows, w, line)


GROUP = Group("tracing", ROWS, add_ratios, table=table)
