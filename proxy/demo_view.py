"""What ``rollguard demo`` shows: the live view, the plain status line, the final summary.

Read-only over a :class:`proxy.demo.Demo`: nothing here changes the run, and every figure is formatted so
that a value the proxy has not produced yet (no pair compared, a field still undecided) shows as ``-``
instead of failing the view. The shadow figures come from ``shadow_eval.json`` (PRODUCT §4) as the admin
API serves it, and from the ``rollguard_shadow_*`` counters; the view never computes its own statistics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.logging import RichHandler
from rich.table import Table
from rich.text import Text

from .demo_traffic import TrafficStats

if TYPE_CHECKING:
    from .demo import Demo

TOP_SEGMENTS = 3
LIVE_CHANGES = 4  # the live view fits a 24-line terminal; the summary and decision log have them all


# -- formatting ---------------------------------------------------------------------------------------


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def fmt_pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


def _num(value: Any, spec: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-"
    return format(value, spec)


def _share(rate: Any) -> str:
    """A rate in [0, 1] as a percentage."""
    return "-" if isinstance(rate, bool) or not isinstance(rate, int | float) else f"{100 * rate:.1f}%"


def _interval(ci: Any) -> str:
    if not isinstance(ci, list) or len(ci) != 2:
        return "-"
    return f"[{_num(ci[0], '.2f')}, {_num(ci[1], '.2f')}]"


def _count(counts: Mapping[str, float], key: str) -> str:
    return f"{counts.get(key, 0):.0f}"


def field_names(ev: Mapping[str, Any], verdict: str) -> list[str]:
    """The fields ``shadow_eval.json`` lists as ``real``, ``noise`` or ``undecided``, most different first."""
    entries = ev.get("fields", {}).get(verdict, [])
    return [str(e.get("field")) for e in entries if isinstance(e, dict)]


def _names(ev: Mapping[str, Any], verdict: str, sep: str = ", ", *, rates: bool = False) -> str:
    if not rates:
        return sep.join(field_names(ev, verdict)) or "-"
    entries = [e for e in ev.get("fields", {}).get(verdict, []) if isinstance(e, dict)]
    return (
        sep.join(
            f"{e.get('field')} ({_share(e.get('candidate_rate'))} vs {_share(e.get('noise_rate'))})"
            for e in entries
        )
        or "-"
    )


def shadow_compact(ev: Mapping[str, Any], versions: tuple[str, str], requests: Mapping[str, float]) -> str:
    """The shadow figures on one plain line."""
    base, cand = versions
    div, delta = ev.get("decision_divergence_pp", {}), ev.get("score_delta", {})
    shift, lat = ev.get("distribution_shift", {}), ev.get("latency_ms", {})
    return (
        f"shadow sent={_count(requests, 'sent')} compared={ev.get('compared', 0)} "
        f"div={_num(div.get('value'), '.2f')}pp{_interval(div.get('ci95'))} "
        f"dmean={_num(delta.get('mean'), '+.4f')} dp95={_num(delta.get('p95'), '+.4f')} "
        f"psi={_num(shift.get('psi'), '.4f')} ks_p={_num(shift.get('ks', {}).get('p_value'), '.3g')} "
        f"p95 {cand}={fmt_ms(lat.get('candidate', {}).get('p95'))}ms "
        f"{base}={fmt_ms(lat.get('baseline', {}).get('p95'))}ms "
        f"dropped={_count(requests, 'dropped')} failed={_count(requests, 'failed')} "
        f"real={_names(ev, 'real', ',')} noise={_names(ev, 'noise', ',')}"
    )


# -- live and plain views -----------------------------------------------------------------------------


def window_table(stats: TrafficStats, candidate_weight: float | None) -> Table:
    """Baseline and candidate over the recent window, each beside the weight configured for it."""
    window = stats.window()
    table = Table(
        title=f"last {stats.window_s:.2g}s (latency in ms)", title_justify="left", box=box.SIMPLE_HEAD
    )
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
        f"{v} n={stats.by_version[v]} share{stats.window_s:.2g}s={fmt_pct(window[v].share)} "
        f"p95={fmt_ms(window[v].p95)}ms"
        for v in stats.versions
    ]
    parts.append(f"errors={stats.errors} rejected={stats.rejected} shed={stats.shed}")
    return " | ".join(parts)


def shadow_rows(
    ev: Mapping[str, Any],
    versions: tuple[str, str],
    requests: Mapping[str, float],
    *,
    field_rates: bool = False,
) -> list[str]:
    """One route's shadow evaluation in six short rows (the live panel fits a 24-line terminal); with
    ``field_rates`` (the summary), each field verdict gets its own row with both difference rates."""
    base, cand = versions
    div, rate = ev.get("decision_divergence_pp", {}), ev.get("decision_rate", {})
    delta, shift, lat = ev.get("score_delta", {}), ev.get("distribution_shift", {}), ev.get("latency_ms", {})
    segments = [s for s in ev.get("segments", []) if not s.get("other")][:TOP_SEGMENTS]
    errors = sum(ev.get("errors", {}).get("candidate", {}).values())
    if field_rates:
        fields = ["fields     % of (candidate vs baseline) pairs differing vs % of (baseline vs baseline)"]
        fields += [f"  {v:<10}{_names(ev, v, rates=True)}" for v in ("real", "noise", "undecided")]
    else:  # undecided only while there is one
        verdicts = [v for v in ("real", "noise", "undecided") if v != "undecided" or field_names(ev, v)]
        fields = ["fields     " + "   ".join(f"{v} {_names(ev, v)}" for v in verdicts)]
    return [
        f"mirrored   {_count(requests, 'sent')} sent  {ev.get('compared', 0)} compared  "
        f"{ev.get('noise_pairs', 0)} noise pairs   dropped {_count(requests, 'dropped')}  "
        f"failed {_count(requests, 'failed')}  skipped {_count(requests, 'skipped')}",
        f"decisions  divergence {_num(div.get('value'), '.2f')} pp {_interval(div.get('ci95'))} 95%   "
        f"positive {base} {_share(rate.get('baseline'))}  {cand} {_share(rate.get('candidate'))}",
        f"scores     delta mean {_num(delta.get('mean'), '+.4f')} p95 {_num(delta.get('p95'), '+.4f')}   "
        f"PSI {_num(shift.get('psi'), '.4f')}   KS p {_num(shift.get('ks', {}).get('p_value'), '.3g')}",
        *fields,
        "segments   "
        + (
            "   ".join(
                f"{s['segment']} {base} {_share(s.get('baseline_decision_rate'))} "
                f"{cand} {_share(s.get('candidate_decision_rate'))}"
                for s in segments
            )
            or "-"
        ),
        f"latency    p95 {cand} {fmt_ms(lat.get('candidate', {}).get('p95'))} ms  "
        f"{base} {fmt_ms(lat.get('baseline', {}).get('p95'))} ms   {cand} errors {errors}  "
        f"schema violations {ev.get('schema_violations', {}).get('candidate', 0)}  "
        f"status mismatches {ev.get('status_mismatches', 0)}",
    ]


def shadow_panel(demo: Demo) -> RenderableType | None:
    """The shadow's figures, refreshed from the admin API; None before the shadow phase began. Once the
    shadow has ended, two lines of its last figures (the summary has them all)."""
    if demo.shadow_from is None:
        return None
    snap = demo.shadow
    ev = {} if snap is None else snap.evaluation
    if demo.shadow_until is not None:
        div = ev.get("decision_divergence_pp", {})
        return Text.assemble(
            ("shadow", "bold magenta"),
            f" {demo.shadow_from:.1f}s-{demo.shadow_until:.1f}s (off now): {ev.get('compared', 0)} compared, "
            f"divergence {_num(div.get('value'), '.2f')} pp {_interval(div.get('ci95'))}, "
            f"PSI {_num(ev.get('distribution_shift', {}).get('psi'), '.4f')}\n"
            f"  real {_names(ev, 'real')}   noise {_names(ev, 'noise')}",
        )
    mirror = demo.mirror_status or {}
    title = Text.assemble(
        ("shadow", "bold magenta"),
        f"  sample {_num(mirror.get('sample'), 'g')}  in flight {mirror.get('in_flight', '-')}"
        f"/{mirror.get('max_in_flight', '-')}  ({demo.versions[1]} answers copies; clients never wait)",
    )
    if snap is None:
        return Group(title, Text("  waiting for the first evaluation", style="dim"))
    return Group(title, Text("\n".join(f"  {row}" for row in shadow_rows(ev, demo.versions, snap.requests))))


def render(demo: Demo) -> RenderableType:
    """The live view: header, one row per version over the recent window, the shadow panel, contract line,
    errors and the log of changes made through the admin API."""
    s, w = demo.stats, demo.weight
    header = Text.assemble(
        ("rollguard demo", "bold"),
        f"  scenario {demo.scenario.name}  {demo.phase}  {demo.elapsed:.1f}s / {demo.args.duration:g}s\n",
        "candidate weight ",
        ("-" if w is None else f"{w:g}%", "bold cyan"),
        f"  proxy phase {demo.proxy_phase}  revision {demo.revision or '-'}",
    )
    checks = Text.assemble(
        f"rejected by contract: {s.rejected} (400 problem+json, not forwarded)   ",
        (f"errors: {s.errors}", "bold red" if s.errors else ""),
        f"   shed: {s.shed}",
    )
    changes = Text("\n".join(list(demo.changes)[-LIVE_CHANGES:]) or "(none yet)", style="dim")
    parts: list[RenderableType] = [header, window_table(s, w)]
    if (panel := shadow_panel(demo)) is not None:
        parts.append(panel)
    return Group(*parts, checks, "latest changes through the admin API:", changes)


def plain_line(demo: Demo) -> str:
    """One status line; while the shadow runs it ends with the shadow's figures."""
    weight = "-" if demo.weight is None else f"{demo.weight:g}%"
    line = f"[{demo.elapsed:6.1f}s] {demo.phase} weight {weight} | {status_line(demo.stats)}"
    if demo.shadow_from is not None and demo.shadow_until is None and demo.shadow is not None:
        line += " | " + shadow_compact(demo.shadow.evaluation, demo.versions, demo.shadow.requests)
    return line


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


# -- summary ------------------------------------------------------------------------------------------


def traffic_lines(stats: TrafficStats) -> list[str]:
    """The summary's traffic part: totals, requests per version, observed candidate share per step."""
    baseline, candidate = stats.versions
    lines = [
        f"traffic: {stats.sent} requests sent: {stats.answered} answered by a model, {stats.rejected} "
        f"rejected by contract (400 problem+json), {stats.errors} errors, {stats.shed} shed",
        f"  baseline {baseline}: {stats.by_version[baseline]} requests",
        f"  candidate {candidate}: {stats.by_version[candidate]} requests",
        "observed candidate share per step (requests routed entirely under that step's weight):",
    ]
    lines += [
        f"  {st.label:<8}  weight {f'{st.weight:g}%':>4}  candidate share {fmt_pct(st.share(candidate)):>6} "
        f"of {st.answered} requests  errors {st.errors}  rejected {st.rejected}"
        for st in stats.steps
    ]
    return lines + [f"error: {why}" for why in stats.error_samples]


def _shadow_summary(demo: Demo) -> list[str]:
    ev = demo.shadow_final
    if demo.shadow_from is None:
        return []
    until = "the end of the run" if demo.shadow_until is None else f"{demo.shadow_until:.1f}s"
    head = (
        f"shadow phase ({demo.shadow_from:.1f}s to {until}, weight 0%, every baseline-answered request "
        f"mirrored to {demo.versions[1]}):"
    )
    if ev is None:
        return [head, "  no shadow evaluation was written (see the result above)"]
    if not ev:
        return [head, f"  no mirrored pair was evaluated; {demo.files.shadow_eval} has no route figures"]
    rows = shadow_rows(ev, demo.versions, demo.shadow_requests, field_rates=True)
    return [
        head,
        *(f"  {row}" for row in rows),
        f"  written by `rollguard report` to {demo.files.shadow_eval}",
    ]


def summary_lines(demo: Demo) -> list[str]:
    files = demo.files
    result = "INTERRUPTED" if demo.failure == "interrupted" else "OK" if demo.exit_code == 0 else "FAILED"
    lines = [
        f"rollguard demo, scenario {demo.scenario.name}: {demo.scenario.story}",
        f"result: {result}" + (f" ({demo.failure})" if demo.failure not in (None, result.lower()) else ""),
        f"ran {demo.elapsed:.1f}s at {demo.args.rps:g} requests/s",
        *traffic_lines(demo.stats),
        *_shadow_summary(demo),
    ]
    if demo.metrics:
        counted = "  ".join(f"{v} {n:g}" for v, n in sorted(demo.metrics.items()))
        agree = all(demo.metrics.get(v, 0) == demo.stats.by_version[v] for v in demo.versions)
        lines.append(
            f"proxy's rollguard_requests_total by version: {counted} "
            f"({'matches' if agree else 'differs from'} the client's count; local = answered by the proxy)"
        )
    return lines + [
        f"files: config {files.config}",
        f"       state {files.state}",
        f"       decision log {files.decisions}",
        f"       access log {files.access_log}",
        f"       shadow evaluation {files.shadow_eval if demo.shadow_final is not None else '(not written)'}",
        f"       summary {files.summary}",
    ]


def summary_doc(demo: Demo) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "scenario": demo.scenario.name,
        "ok": demo.exit_code == 0,
        "failure": demo.failure,
        "duration_s": round(demo.elapsed, 3),
        **demo.stats.to_json(),
        "proxy_requests_total": demo.metrics,
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
