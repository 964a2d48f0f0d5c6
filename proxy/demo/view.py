"""What ``rollguard demo`` shows: the live view, the plain status line, the final summary.

Read-only over a :class:`proxy.demo.Demo`: nothing here changes the run, and every figure is formatted so
that a value the proxy has not produced yet (no window judged, no pair compared) shows as ``-`` instead of
failing the view. Every figure comes from the admin API: the rollout, the gates and the controller's window
from ``GET /status``, the timeline from ``GET /decisions``, the shadow's figures from ``shadow_eval.json``
(PRODUCT §4) and the ``rollguard_shadow_*`` counters; the view never computes its own statistics. Only the
``clients`` line is the traffic generator's own count (what the clients saw).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from proxy.demo.scenarios import (
    TimelineRow,
    gate_cells,
    ms,
    num,
    outcome_lines,
    share,
    step_lines,
    timeline,
    timeline_cells,
    timeline_lines,
    tripwire_line,
)
from proxy.demo.traffic import TrafficStats
from proxy.reports.artifacts import ARTIFACTS

if TYPE_CHECKING:
    from proxy.demo.run import Demo

TOP_SEGMENTS = 3
LIVE_DECISIONS = 8  # timeline rows in the live view; the summary and rollout_decision.txt have them all
PLAIN_REASON = 110  # characters of the last decision's reason on a plain line
_VERDICT_STYLE = {"PASS": "green", "HIGH": "bold red", "LOW": "bold red", "INCONCLUSIVE": "yellow"}


# -- formatting ---------------------------------------------------------------------------------------


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _interval(ci: Any) -> str:
    if not isinstance(ci, list) or len(ci) != 2:
        return "-"
    return f"[{num(ci[0], '.2f')}, {num(ci[1], '.2f')}]"


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
            f"{e.get('field')} ({share(e.get('candidate_rate'))} vs {share(e.get('noise_rate'))})"
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
        f"div={num(div.get('value'), '.2f')}pp{_interval(div.get('ci95'))} "
        f"dmean={num(delta.get('mean'), '+.4f')} dp95={num(delta.get('p95'), '+.4f')} "
        f"psi={num(shift.get('psi'), '.4f')} ks_p={num(shift.get('ks', {}).get('p_value'), '.3g')} "
        f"p95 {cand}={fmt_ms(lat.get('candidate', {}).get('p95'))}ms "
        f"{base}={fmt_ms(lat.get('baseline', {}).get('p95'))}ms "
        f"dropped={_count(requests, 'dropped')} failed={_count(requests, 'failed')} "
        f"real={_names(ev, 'real', ',')} noise={_names(ev, 'noise', ',')}"
    )


# -- the shadow panel ---------------------------------------------------------------------------------


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
        f"decisions  divergence {num(div.get('value'), '.2f')} pp {_interval(div.get('ci95'))} 95%   "
        f"positive {base} {share(rate.get('baseline'))}  {cand} {share(rate.get('candidate'))}",
        f"scores     delta mean {num(delta.get('mean'), '+.4f')} p95 {num(delta.get('p95'), '+.4f')}   "
        f"PSI {num(shift.get('psi'), '.4f')}   KS p {num(shift.get('ks', {}).get('p_value'), '.3g')}",
        *fields,
        "segments   "
        + (
            "   ".join(
                f"{s['segment']} {base} {share(s.get('baseline_decision_rate'))} "
                f"{cand} {share(s.get('candidate_decision_rate'))}"
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
            f"divergence {num(div.get('value'), '.2f')} pp {_interval(div.get('ci95'))}, "
            f"PSI {num(ev.get('distribution_shift', {}).get('psi'), '.4f')}\n"
            f"  real {_names(ev, 'real')}   noise {_names(ev, 'noise')}",
        )
    mirror = demo.mirror_status or {}
    title = Text.assemble(
        ("shadow", "bold magenta"),
        f"  sample {num(mirror.get('sample'), 'g')}  in flight {mirror.get('in_flight', '-')}"
        f"/{mirror.get('max_in_flight', '-')}  ({demo.versions[1]} answers copies; clients never wait)",
    )
    if snap is None:
        return Group(title, Text("  waiting for the first evaluation", style="dim"))
    return Group(title, Text("\n".join(f"  {row}" for row in shadow_rows(ev, demo.versions, snap.requests))))


# -- the rollout: phase, gates, window, timeline ------------------------------------------------------


def steps_strip(demo: Demo) -> str:
    """``shadow > 10% > [25%] > 50% > 100%``: the plan, the current stage in brackets."""
    stages = ["shadow", *(f"{w:g}%" for w in demo.steps)]
    at = 0 if demo.proxy_phase == "shadow" else demo.step + 1 if demo.step >= 0 else None
    return " > ".join(f"[{s}]" if i == at else s for i, s in enumerate(stages))


def where(demo: Demo) -> str:
    """``shadow``, ``canary step 2/4``, ``paused at step 2/4``, or the phase."""
    n, i = len(demo.steps), demo.step
    if demo.proxy_phase == "canary" and i >= 0:
        return f"canary step {i + 1}/{n}"
    if demo.proxy_phase == "paused" and i >= 0:
        return f"paused at step {i + 1}/{n}"
    return demo.proxy_phase


def gates_table(ctl: Mapping[str, Any]) -> Table:
    last = ctl.get("last_decision") or {}
    title = "gates" + (f" (last judgement: {last.get('action')})" if last else " (no window judged yet)")
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1))
    for col in ("gate", "verdict", "candidate", "baseline", "threshold"):
        table.add_column(col, justify="left" if col in ("gate", "verdict") else "right", no_wrap=True)
    for g in ctl.get("gates") or []:
        verdict = str(g.get("verdict", "-"))
        table.add_row(
            str(g.get("gate")), Text(verdict, style=_VERDICT_STYLE.get(verdict, "dim")), *gate_cells(g)
        )
    return table


def window_table(ctl: Mapping[str, Any], versions: tuple[str, str]) -> Table:
    """The controller's evidence per version since the step (or shadow phase) began."""
    window = ctl.get("window") or {}
    seconds = window.get("seconds")
    title = f"controller window: {num(seconds, '.1f')}s since the step began (upstream attempts)"
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1))
    for col in ("", "requests", "failures", "error rate", "p50", "p95", "p99", "positive"):
        table.add_column(col, justify="right" if col else "left", no_wrap=True)
    for role, version in zip(("baseline", "candidate"), versions, strict=True):
        w = window.get(role) or {}
        lat = w.get("latency_ms") or {}
        table.add_row(
            f"{role} {version}",
            num(w.get("requests"), "d"),
            num(w.get("failures"), "d"),
            share(w.get("error_rate")),
            ms(lat.get("p50")),
            ms(lat.get("p95")),
            ms(lat.get("p99")),
            share(w.get("decision_rate")),
        )
    return table


def timeline_table(rows: Sequence[TimelineRow]) -> Table:
    table = Table(title="decisions (UTC)", title_justify="left", box=None, padding=(0, 1), show_header=False)
    # The fixed columns keep their width; the reason gets the rest.
    for width in (12, 7, 9, 10, 5):
        table.add_column(no_wrap=True, min_width=width, justify="right" if width in (7, 5) else "left")
    table.add_column(ratio=1)
    for r in rows:
        cells = timeline_cells(r)
        style = "bold red" if r.action == "ROLLBACK" else "bold green" if r.action == "PROMOTE" else ""
        # A Text measures by its longest word, so a long reason is cut to fit, never the other columns.
        reason = Text(cells[5], no_wrap=True, overflow="ellipsis")
        table.add_row(*cells[:2], Text(cells[2], style=style), *cells[3:5], reason)
    return table


def clients_line(stats: TrafficStats) -> Text:
    """What the clients saw: the traffic generator's own count."""
    base, cand = stats.versions
    return Text.assemble(
        f"clients: {stats.sent} sent  {base} {stats.by_version[base]}  {cand} {stats.by_version[cand]}  "
        f"rejected by contract {stats.rejected}  ",
        (f"errors {stats.errors}", "bold red" if stats.errors else "bold green"),
        f"  shed {stats.shed}",
    )


def doors_line(demo: Demo) -> str | None:
    """Where to look while the demo runs: the status page, and the token it asks for (a file, never
    printed: the terminal's scrollback is not a secret store)."""
    if demo.admin_url is None:
        return None
    return f"status page {demo.admin_url}/ui  token in {demo.files.token}  (admin API {demo.admin_url})"


def render(demo: Demo) -> RenderableType:
    """The live view: header, trip-wire, gates, the controller's window, the shadow panel, the clients'
    count and the decision timeline."""
    w, ctl = demo.weight, demo.controller
    header = Text.assemble(
        ("rollguard demo", "bold"),
        f"  scenario {demo.scenario.name}  {demo.phase}  {demo.elapsed:.1f}s"
        f" (at most {demo.args.duration:g}s)\n",
        "phase ",
        (where(demo), "bold cyan"),
        "  candidate weight ",
        ("-" if w is None else f"{w:g}%", "bold cyan"),
        f"  revision {demo.revision or '-'}   steps {steps_strip(demo)}\n",
        (tripwire_line(ctl), "dim"),
        *(("\n" + line.strip(), "bold yellow") for line in fault_lines(demo)),
        *((("\n" + door, "dim"),) if (door := doors_line(demo)) is not None else ()),
    )
    parts: list[RenderableType] = [header, gates_table(ctl), window_table(ctl, demo.versions)]
    if (panel := shadow_panel(demo)) is not None:
        parts.append(panel)
    parts.append(clients_line(demo.stats))
    parts.append(timeline_table(timeline(demo.decisions)[-LIVE_DECISIONS:]))
    return Group(*parts)


def plain_line(demo: Demo) -> str:
    """One status line: phase, step, weight, the last decision, the clients' count; during the shadow
    phase it ends with the shadow's figures."""
    weight = "-" if demo.weight is None else f"{demo.weight:g}%"
    rows = timeline(demo.decisions)
    last = rows[-1] if rows else None
    decided = "-" if last is None else f"{last.action} by {last.actor}: {_clip(last.reason, PLAIN_REASON)}"
    s = demo.stats
    base, cand = s.versions
    line = (
        f"[{demo.elapsed:6.1f}s] {where(demo)} weight {weight} | last {decided} | "
        f"clients {base}={s.by_version[base]} {cand}={s.by_version[cand]} errors={s.errors} "
        f"rejected={s.rejected} shed={s.shed}"
    )
    if demo.proxy_phase == "shadow" and demo.shadow is not None:
        line += " | " + shadow_compact(demo.shadow.evaluation, demo.versions, demo.shadow.requests)
    return line


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


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


# -- summary ------------------------------------------------------------------------------------------


def artifact_lines(demo: Demo) -> list[str]:
    lines = ["artifacts (`rollguard report --out`):"]
    for name in ARTIFACTS:
        path = demo.files.out / name
        lines.append(f"  {name:<21} {path if path.exists() else 'not available from this proxy'}")
    return lines


def fault_lines(demo: Demo) -> list[str]:
    if not demo.scenario.live_fault:
        return []
    v2 = demo.versions[1]
    if demo.fault_at is None:
        when = (
            "never applied: {v2} took no live traffic" if demo.outcome else "applied when the canary begins"
        )
        return [f"  live fault ({demo.scenario.fault_text}) {when.format(v2=v2)}"]
    at = demo.fault_at - (demo.rollout_at or 0.0)
    return [f"  live fault applied to {v2} as the canary began (+{at:.1f}s): {demo.scenario.fault_text}"]


def summary_lines(demo: Demo) -> list[str]:
    files = demo.files
    result = "INTERRUPTED" if demo.failure == "interrupted" else "OK" if demo.exit_code == 0 else "FAILED"
    why = demo.failure if demo.failure not in (None, "interrupted") else None
    if why is None and result == "FAILED":
        why = f"{demo.stats.errors} client errors" if demo.stats.errors else "unexpected outcome"
    lines = [
        f"rollguard demo, scenario {demo.scenario.name}: {demo.scenario.story}",
        *outcome_lines(demo.scenario, demo.outcome, timed_out=demo.timed_out, bound=demo.args.duration),
        *fault_lines(demo),
        f"result: {result}" + (f" ({why})" if why else ""),
        f"ran {demo.elapsed:.1f}s at {demo.args.rps:g} requests/s (--duration {demo.args.duration:g}s is "
        "the upper bound)",
        *demo.stats.summary_lines(),
    ]
    if demo.metrics:
        counted = "  ".join(f"{v} {n:g}" for v, n in sorted(demo.metrics.items()))
        agree = all(demo.metrics.get(v, 0) == demo.stats.by_version[v] for v in demo.versions)
        lines.append(
            f"proxy's rollguard_requests_total by version: {counted} "
            f"({'matches' if agree else 'differs from'} the client's count; local = answered by the proxy)"
        )
    fell_back = sum(demo.fallbacks.values())
    reasons = ", ".join(f"{k} {n:g}" for k, n in sorted(demo.fallbacks.items()))
    lines.append(
        f"fallback: {fell_back:g} failed candidate attempts answered by the baseline instead"
        + (f" ({reasons})" if reasons else "")
    )
    lines += step_lines(demo.decisions, demo.versions)
    lines.append(f"decision timeline (every entry is in {files.decisions}):")
    lines += timeline_lines(demo.decisions)
    lines += [*_shadow_summary(demo), *artifact_lines(demo)]
    return lines + [
        f"files: config {files.config}",
        f"       state {files.state}",
        f"       decision log {files.decisions}",
        f"       access log {files.access_log}",
        f"       summary {files.summary}",
    ]
