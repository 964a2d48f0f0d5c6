"""The fallback rows: what the clients see while the candidate fails every request. rollguard_bare's
config at canary 10 to a candidate port that refuses every connection, with fallback to the baseline on
and off. No rollout runs, so the configured weight stays; the rows read it from `/metrics` to show it."""

from __future__ import annotations

import contextlib
import socket
from typing import Any

import harness
import procs
from harness import Row, RunContext, Start, Target
from report import Ratios, Results, by_row, fmt, group_table, name_width, noisy, over, target_lines

from groups import Group
from groups.contracts import CONTRACTS_BASE
from groups.shadow import SHADOW_BASE

FALLBACK_ROWS = ("rollguard_candidate_down_fallback", "rollguard_candidate_down_nofallback")
FALLBACK_WEIGHT = 10


def refusing_url(stack: contextlib.ExitStack) -> str:
    """A URL whose port refuses connections: a socket bound to it but never listening, held for the row,
    so nobody else on a shared machine can take the port meanwhile (a connect gets RST, not a timeout)."""
    sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    sock.bind((procs.HOST, 0))
    return f"http://{procs.HOST}:{sock.getsockname()[1]}"


def candidate_down_row(fallback: bool) -> Start:
    """rollguard_bare's config with canary 10 (no rollout: the weight is the configured one and nothing
    moves it) to a candidate whose port refuses every connection, with fallback to the baseline on or off."""

    def start(ctx: RunContext, stack: contextlib.ExitStack) -> Target:
        return harness.start_bare(
            ctx,
            stack,
            canary_weight=FALLBACK_WEIGHT,
            candidate_url=refusing_url(stack),
            canary={"fallback_to_baseline": fallback, "shadow_samples": 0},
            probe_may_fail=not fallback,
        )

    return start


ROWS = (
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
)


def fallback_base(rows: Results) -> str | None:
    """The no-failure row the fallback rows' p99 is read against: rollguard_bare (same config, canary 0)
    when it ran, else the shadow group's no-shadow row, else none."""
    ok = {r["name"] for r in rows if r["status"] == "ok" and r["p99_ms"]}
    return next((name for name in (CONTRACTS_BASE, SHADOW_BASE) if name in ok), None)


def add_ratios(rows: Results, ratios: Ratios) -> None:
    """The fallback rows' throughput against rollguard_bare (their config otherwise) and their p99 against
    the no-failure row; both extend the contracts or shadow group's ratio of that base when it has one."""
    if fallback := [r["name"] for r in rows if r["name"] in FALLBACK_ROWS]:
        rps = over(by_row(rows, "requests_per_s"), CONTRACTS_BASE, fallback)
        ratios.setdefault(f"vs_{CONTRACTS_BASE}", {}).update(rps)
        if (base := fallback_base(rows)) is not None:
            ratios.setdefault(f"p99_vs_{base}", {}).update(over(by_row(rows, "p99_ms"), base, fallback))


def fallback_summary(rows: Results, ratios: Ratios) -> dict[str, Any]:
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


def fallback_targets(summary: dict[str, Any], rows: Results) -> list[dict[str, Any]]:
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


def results(rows: Results, ratios: Ratios) -> dict[str, Any]:
    summary = fallback_summary(rows, ratios)
    return {"fallback": summary, "fallback_targets": fallback_targets(summary, rows)}


def table(rows: Results, ratios: Ratios, entries: dict[str, Any]) -> list[str]:
    """What clients saw while the candidate refused every connection, fallback on and off."""
    rows = [r for r in rows if r["name"] in FALLBACK_ROWS]
    if not rows:
        return []
    base = entries["fallback"]["p99_base"]
    measured = entries["fallback"]["rows"]
    w = name_width(rows)
    header = (
        f"{'fallback row':<{w}}{'req/s':>10}{'p99 ms':>9}{'x p99':>8}{'non-2xx':>9}{'err %':>8}"
        f"{'socket':>8}{'fallbacks':>11}{'weight':>8}"
    )

    def line(r: dict[str, Any]) -> list[str]:
        m = measured[r["name"]]
        name = r["name"] + ("*" if noisy(r) else "")
        return [
            f"{name:<{w}}{r['requests_per_s']:>10,.0f}{fmt(r['p99_ms'], '.2f'):>9}"
            f"{fmt(m['p99_ratio'], '.2f'):>8}{m['client_errors']:>9,}{fmt(m['client_error_pct'], '.2f'):>8}"
            f"{m['socket_errors']:>8,}{fmt(m['fallbacks'], ','):>11}{fmt(m['weight_at_end'], 'g'):>8}"
        ]

    title = (
        f"canary {FALLBACK_WEIGHT} to a candidate that refuses connections; "
        f"p99 vs {base or '(no base ran)'}; client errors = wrk's non-2xx"
    )
    return group_table(title, header, rows, w, line) + target_lines(entries["fallback_targets"])


def progress(row: dict[str, Any]) -> list[str]:
    if not (counts := row.get("fallback_counts")):
        return []
    failures = ", ".join(f"{k} {n:,}" for k, n in counts["candidate_failures"].items()) or "none"
    return [
        f"    non-2xx {row['errors']['non_2xx_3xx']:,}; "
        f"rollguard: fallbacks {counts['fallbacks']:,}, failed candidate attempts ({failures}), "
        f"retries {counts['retries']:,}, "
        f"weight at end {fmt(counts.get('weight_at_end'), 'g')} ({counts.get('phase_at_end')})"
    ]


def parameters(connections: int) -> dict[str, Any]:
    return {
        "fallback": {
            "canary_weight": FALLBACK_WEIGHT,
            "candidate": "a bound, never-listening port: every connect is refused",
            "canary_keys": {"shadow_samples": 0, "fallback_to_baseline": "true / false per row"},
            "otherwise": CONTRACTS_BASE,
        }
    }


GROUP = Group("fallback", ROWS, add_ratios, results, table, progress, parameters)
