"""The rollout as a terminal shows it, read from the admin API's own documents (``GET /status``,
``GET /decisions``): the demo's live view and ``rollguard status`` (once, or ``--watch``) both draw it
here, so they read alike.

What is drawn: where the rollout is (phase, step, weight, the plan), the step's progress and what it
still needs, the last decision's reason (once), the trip-wire, the gates with their values in the gate's
own unit (ms, %, pp), the controller's window per version, and the latest rows of the decision timeline.
Every line is one terminal line: a long value is cut with an ellipsis rather than wrapped, and
:class:`FitHeight` gives the timeline only the rows the terminal has left, so a view refreshed in place
fits an 80x24 terminal and never scrolls it. Every string from the API passes through
:func:`~proxy.content.text.printable` and into :class:`~rich.text.Text` (never markup), so a reason or a
token name cannot restyle or rewrite the terminal.

It lives beside the demo's view because the cell formatting it shares with the demo's summary
(:mod:`proxy.demo.scenarios`) does; ``cli`` sits above every package and may import it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from proxy.content.text import printable
from proxy.demo.scenarios import gate_cells, ms, num, share, tripwire_line
from proxy.rollout.timeline import TimelineRow, timeline

VERDICT_STYLE: Final = {"PASS": "green", "HIGH": "bold red", "LOW": "bold red", "INCONCLUSIVE": "yellow"}
ACTION_STYLE: Final = {"ROLLBACK": "bold red", "PROMOTE": "bold green", "PROCEED": "green"}
ACTION_CHARS: Final = 13  # ``config_reload``; longer actions (``set_shadow_sample``) are cut, not wrapped
ACTOR_CHARS: Final = 10


def shown(value: Any, limit: int = 2000) -> str:
    """A value from the API as inert, one-line text."""
    return printable(str(value), limit)


def _cut(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "…"


def line(*parts: str | tuple[str, str]) -> Text:
    """One terminal line: cut with an ellipsis at the console's width, never wrapped."""
    return Text.assemble(*parts, no_wrap=True, overflow="ellipsis")


def _rollout(status: Mapping[str, Any]) -> Mapping[str, Any]:
    r = status.get("rollout")
    return r if isinstance(r, Mapping) else {}


def _controller(status: Mapping[str, Any]) -> Mapping[str, Any]:
    c = status.get("controller")
    return c if isinstance(c, Mapping) else {}


def versions_of(status: Mapping[str, Any]) -> tuple[str, str]:
    v = status.get("versions")
    v = v if isinstance(v, Mapping) else {}
    return shown(v.get("baseline", "baseline"), 40), shown(v.get("candidate", "candidate"), 40)


def steps_of(status: Mapping[str, Any]) -> tuple[float, ...]:
    steps = _controller(status).get("steps")
    return tuple(float(s) for s in steps if isinstance(s, int | float)) if isinstance(steps, list) else ()


# -- where the rollout is --------------------------------------------------------------------------------


def where(phase: str, step: int, steps: Sequence[float]) -> str:
    """``shadow``, ``canary step 2/4``, ``paused at step 2/4``, or the phase."""
    if phase == "canary" and step >= 0:
        return f"canary step {step + 1}/{len(steps) or '?'}"
    if phase == "paused" and step >= 0:
        return f"paused at step {step + 1}/{len(steps) or '?'}"
    return phase


def steps_strip(phase: str, step: int, steps: Sequence[float]) -> str:
    """``shadow > 10% > [25%] > 50% > 100%``: the plan, the current stage in brackets."""
    stages = ["shadow", *(f"{w:g}%" for w in steps)]
    at = 0 if phase == "shadow" else step + 1 if step >= 0 and phase in ("canary", "paused") else None
    if phase == "promoted":
        at = len(stages) - 1
    return " > ".join(f"[{s}]" if i == at else s for i, s in enumerate(stages))


def progress_lines(rollout: Mapping[str, Any], needs: Mapping[str, Any] | None) -> list[str]:
    """The step's progress: its windows and the time max_hold leaves it; then the evidence it has and
    what it still needs, while it is inconclusive. None where there is no step (idle, promoted, ...)."""
    phase = rollout.get("phase")
    step = []
    if phase in ("canary", "paused"):
        passed, failing = num(rollout.get("passes"), "d"), num(rollout.get("failed_windows"), "d")
        step.append(f"windows {passed} passed, {failing} failing")
    if needs is None or phase not in ("shadow", "canary"):
        return ["; ".join(step)] if step else []
    left = needs.get("max_hold_left_s")
    if isinstance(left, int | float):
        step.append(f"max_hold in {max(0.0, left):.0f}s")
    gates = needs.get("per_gate")
    per_gate: Mapping[str, Any] = gates if isinstance(gates, Mapping) else {}
    more, eta = needs.get("more"), needs.get("eta_s")
    evidence = f"evidence {num(needs.get('candidate_requests'), 'd')} candidate requests"
    most = max((n for n in per_gate.values() if isinstance(n, int)), default=None)
    if isinstance(more, int) and most is not None:
        wanting = ", ".join(shown(g, 40) for g, n in per_gate.items() if n == most)
        evidence += f", {more} more for {wanting}"
        if isinstance(eta, int | float):
            evidence += f" (~{eta:.0f}s)"
    stuck = [shown(g, 40) for g, n in per_gate.items() if n is None]
    if stuck:
        evidence += f"; {', '.join(stuck)} cannot pass by waiting"
    return ["; ".join(step), evidence] if step else [evidence]


def rollout_lines(status: Mapping[str, Any]) -> list[Text]:
    """Where the rollout is and its plan, the step's progress, the last decision and its reason (once),
    the trip-wire."""
    r, ctl = _rollout(status), _controller(status)
    phase = shown(r.get("phase", "-"), 40)
    step = r.get("step")
    step = step if isinstance(step, int) else -1
    steps = steps_of(status)
    weight = r.get("weight")
    lines = [
        line(
            (where(phase, step, steps), "bold cyan"),
            "  weight ",
            (f"{weight:g}%" if isinstance(weight, int | float) else "-", "bold cyan"),
            f"  revision {num(r.get('revision'), 'd')}  ",
            (steps_strip(phase, step, steps) if steps else "", "dim"),
        )
    ]
    needs = ctl.get("needs")
    lines += [line(text) for text in progress_lines(r, needs if isinstance(needs, Mapping) else None)]
    # The state's reason is the last decision's, or an operator's move's: shown once, whichever it is.
    last = ctl.get("last_decision") if isinstance(ctl.get("last_decision"), Mapping) else None
    reason = shown(r.get("reason") or "", 500)
    if last is not None and shown(last.get("reason", ""), 500) == reason:
        action = shown(last.get("action", "?"), 20)
        lines.append(line("last ", (action, ACTION_STYLE.get(action, "bold")), f": {reason}"))
    elif reason:
        lines.append(line(f"reason ({shown(r.get('updated_at', ''), 40)}): {reason}"))
    lines.append(line((shown(tripwire_line(ctl), 300), "dim")))
    return lines


# -- gates, window, timeline -----------------------------------------------------------------------------


def gate_values(g: Mapping[str, Any]) -> tuple[str, str, str]:
    """A gate's candidate value, baseline and threshold in its unit; every latency gate in ms."""
    if str(g.get("gate", "")).startswith("latency_p"):
        return ms(g.get("value")), ms(g.get("baseline")), ms(g.get("threshold"))
    return gate_cells(g)


def _table(*columns: str, left: int = 1) -> Table:
    # No box: one line for the header (bold), one per row, nothing drawn around or between them.
    table = Table(box=None, pad_edge=False, padding=(0, 1), header_style="bold")
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i < left else "right", no_wrap=True, overflow="ellipsis")
    return table


def gates_table(ctl: Mapping[str, Any]) -> Table:
    table = _table("gate", "verdict", "candidate", "baseline", "threshold", left=2)
    for g in ctl.get("gates") or []:
        verdict = shown(g.get("verdict", "-"), 20)
        table.add_row(
            Text(shown(g.get("gate"), 40)),
            Text(verdict, style=VERDICT_STYLE.get(verdict, "dim")),
            *(Text(shown(cell, 60)) for cell in gate_values(g)),
        )
    return table


def window_table(ctl: Mapping[str, Any], versions: tuple[str, str]) -> Table:
    """The controller's evidence per version since the step began; in the shadow phase the candidate's
    is what it answered to the mirrors, when ``/status`` carries it."""
    window = ctl.get("window") or {}
    head = f"window {num(window.get('seconds'), '.1f')}s"
    table = _table(head, "requests", "failed", "errors", "p50 ms", "p95 ms", "p99 ms", "positive")
    mirror = window.get("mirror")
    for role, version in zip(("baseline", "candidate"), versions, strict=True):
        w = window.get(role) or {}
        label = f"{role} {version}"
        if role == "candidate" and isinstance(mirror, Mapping):
            w, label = mirror, f"{version} mirrors"
        lat = w.get("latency_ms") or {}
        table.add_row(
            Text(label),
            num(w.get("requests"), "d"),
            num(w.get("failures"), "d"),
            share(w.get("error_rate")),
            *(num(lat.get(q), ".1f") for q in ("p50", "p95", "p99")),
            share(w.get("decision_rate")),
        )
    return table


def timeline_table(rows: Sequence[TimelineRow]) -> Table:
    """Time, offset from the start, action (``HOLD x3`` for a run), actor, weight, and the reason in
    whatever width is left."""
    cells = [
        (
            r.clock[:8],
            f"+{num(r.offset, '.1f')}s",
            _cut(shown(r.action if r.count == 1 else f"{r.action} x{r.count}"), ACTION_CHARS),
            _cut(shown(r.actor), ACTOR_CHARS),
            "-" if r.weight is None else f"{r.weight:g}%",
        )
        for r in rows
    ]
    table = Table(box=None, padding=(0, 1), pad_edge=False, show_header=False)
    # The fixed columns keep the width of their longest cell; the reason is cut to what is left.
    for i, justify in enumerate(("left", "right", "left", "left", "right")):
        width = max((len(c[i]) for c in cells), default=1)
        table.add_column(no_wrap=True, justify=justify, min_width=width)  # type: ignore[arg-type]
    # The reason's Text carries no_wrap, not its column: a no_wrap column measures the whole reason and
    # squeezes the others out.
    table.add_column(ratio=1, overflow="ellipsis")
    for r, (clock, offset, action, actor, weight) in zip(rows, cells, strict=True):
        table.add_row(
            clock,
            offset,
            Text(action, style=ACTION_STYLE.get(r.action, "")),
            Text(actor),
            weight,
            Text(shown(r.reason, 500), no_wrap=True, overflow="ellipsis"),
        )
    return table


def upstreams_table(status: Mapping[str, Any]) -> Table:
    table = _table("upstream", "version", "url", "in flight", "pool limit", "circuit", left=3)
    for role, up in (status.get("upstreams") or {}).items():
        circuit = (up.get("circuit") or {}).get("state", "-")
        table.add_row(
            Text(shown(role, 40)),
            Text(shown(up.get("version"), 40)),
            Text(shown(up.get("url"), 200)),
            num(up.get("in_flight"), "d"),
            num(up.get("limit"), "d"),
            Text(shown(circuit, 20)),
        )
    return table


def rollout_parts(status: Mapping[str, Any]) -> list[RenderableType]:
    """The rollout's lines, its gates (when any was judged) and its window."""
    ctl = _controller(status)
    parts: list[RenderableType] = [*rollout_lines(status)]
    if ctl.get("gates"):
        parts.append(gates_table(ctl))
    if ctl.get("window"):
        parts.append(window_table(ctl, versions_of(status)))
    return parts


# -- fitting the terminal --------------------------------------------------------------------------------


class FitHeight:
    """``parts`` stacked top to bottom, then the latest ``timeline`` rows the console's height leaves
    room for (under a ``decisions`` line; none when fewer than two lines are left).

    A view refreshed in place must not be taller than the terminal: the top would scroll away and every
    refresh would repeat the bottom. The timeline is the one part whose length has no bound, so it takes
    what is left.
    """

    def __init__(self, parts: Sequence[RenderableType], rows: Sequence[TimelineRow]) -> None:
        self.parts, self.rows = list(parts), list(rows)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        flowing = options.update(height=None)
        lines: list[list[Segment]] = []
        for part in self.parts:
            lines += console.render_lines(part, flowing, pad=False)
        room = options.max_height - len(lines)
        if room >= 2 and self.rows:
            lines.append([Segment("decisions (UTC)", console.get_style("bold"))])
            lines += console.render_lines(timeline_table(self.rows[-(room - 1) :]), flowing, pad=False)
        for segments in lines:
            yield from segments
            yield Segment.line()


def watch_view(
    status: Mapping[str, Any],
    decisions: Iterable[Mapping[str, Any]],
    *,
    title: Text,
    notes: Sequence[Text] = (),
) -> FitHeight:
    """``rollguard status --watch``: a title, notes (one line each), the rollout, and the timeline."""
    return FitHeight([title, *notes, *rollout_parts(status)], timeline(decisions))
