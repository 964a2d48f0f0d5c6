"""What ``rollguard demo`` shows: the live view, the plain status line, the final summary.

Read-only over a :class:`proxy.demo.Demo`: nothing here changes the run, and every figure is formatted so
that a value the proxy has not produced yet (no window judged, no pair compared) shows as ``-`` instead of
failing the view. Every figure comes from the admin API: the rollout, the gates and the controller's window
from ``GET /status``, the timeline from ``GET /decisions``, the shadow's figures from ``shadow_eval.json``
and the ``rollguard_shadow_*`` counters; the view never computes its own statistics. Only the
``clients`` line is the traffic generator's own count (what the clients saw).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import RenderableType
from rich.text import Text

from proxy.demo.rollout_view import FitHeight, gates_table, line, rollout_lines, where, window_table
from proxy.demo.scenarios import num, outcome_lines, share, step_lines, timeline_lines
from proxy.demo.traffic import TrafficStats
from proxy.reports.artifacts import ARTIFACTS
from proxy.rollout.timeline import timeline

if TYPE_CHECKING:
    from proxy.demo.run import Demo

TOP_SEGMENTS = 3
PLAIN_REASON = 110  # characters of the last decision's reason on a plain line


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


def shadow_panel(demo: Demo) -> list[Text]:
    """The shadow's figures, refreshed from the admin API, one terminal line each; none before the shadow
    phase began. Once the shadow has ended, one line of its last figures (the summary has them all)."""
    if demo.shadow_from is None:
        return []
    snap = demo.shadow
    ev = {} if snap is None else snap.evaluation
    if demo.shadow_until is not None:
        div = ev.get("decision_divergence_pp", {})
        return [
            line(
                ("shadow", "bold magenta"),
                f" {demo.shadow_from:.1f}s-{demo.shadow_until:.1f}s (off now): {ev.get('compared', 0)} "
                f"compared, divergence {num(div.get('value'), '.2f')} pp {_interval(div.get('ci95'))}, "
                f"PSI {num(ev.get('distribution_shift', {}).get('psi'), '.4f')}, real {_names(ev, 'real')}",
            )
        ]
    mirror = demo.mirror_status or {}
    title = line(
        ("shadow", "bold magenta"),
        f"  sample {num(mirror.get('sample'), 'g')}  in flight {mirror.get('in_flight', '-')}"
        f"/{mirror.get('max_in_flight', '-')}  ({demo.versions[1]} answers copies; clients never wait)",
    )
    if snap is None:
        return [title, line(("  waiting for the first evaluation", "dim"))]
    # The latency row is left to the gates and the window, which show both versions' p95 already.
    rows = shadow_rows(ev, demo.versions, snap.requests)[:-1]
    return [title, *(line(f"  {row}") for row in rows)]


# -- the live view ---------------------------------------------------------------------------------


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


def doors_note(demo: Demo) -> str | None:
    """The doors in the live view's width: the token file as a path from here when it is under here."""
    if demo.admin_url is None:
        return None
    token = demo.files.token
    with contextlib.suppress(ValueError):
        token = token.relative_to(Path.cwd())
    return f"status page {demo.admin_url}/ui  token in {token}"


def render(demo: Demo) -> RenderableType:
    """The live view, within the terminal's height: the demo's line, the rollout (from ``/status``), the
    fault and the doors, the gates, the controller's window, the shadow panel, the clients' count, and as
    much of the decision timeline as there are rows left."""
    title = line(
        ("rollguard demo", "bold"),
        f"  scenario {demo.scenario.name}  {demo.phase}  {demo.elapsed:.1f}s",
        f" (at most {demo.args.duration:g}s)",
    )
    notes = [line((f.strip(), "bold yellow")) for f in fault_lines(demo)]
    if (door := doors_note(demo)) is not None:
        notes.append(line((door, "dim")))
    ctl = demo.controller
    parts: list[RenderableType] = [title, *rollout_lines(demo.status), *notes]
    if ctl.get("gates"):
        parts.append(gates_table(ctl))
    parts += [window_table(ctl, demo.versions), *shadow_panel(demo), clients_line(demo.stats)]
    return FitHeight(parts, timeline(demo.decisions))


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
        f"[{demo.elapsed:6.1f}s] {where(demo.proxy_phase, demo.step, demo.steps)} weight {weight} | "
        f"last {decided} | "
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
