"""The overload rows (the "Resilience" issue): rollguard_bare's config at the usual load, then at
OVERLOAD_FACTOR x the connections with the data listener's max_concurrency near the normal row's
connections (shedding) and with it practically off. wrk is a closed loop: it cannot offer 3x a saturated
proxy's rate, only 3x the requests outstanding at once, which is what a limit on requests in flight sees.
The admitted requests' latency comes from rollguard's own histogram. See README.md."""

from __future__ import annotations

import contextlib
from typing import Any

import harness
import overload  # benchmarks/overload.py: the admitted requests' window, read from rollguard's /metrics
from harness import Row, RunContext, Start, Target
from report import Ratios, Results, fmt, group_table, name_width, noisy, target_lines

from groups import Group
from groups.contracts import CONTRACTS_BASE

OVERLOAD_BASE = "rollguard_normal"
OVERLOAD_ROWS = ("rollguard_overload_shed", "rollguard_overload_noshed")
OVERLOAD_FACTOR = 3
OVERLOAD_NO_LIMIT = 100_000  # max_concurrency of the no-shedding row: never reached
OVERLOAD_MAX_P99_RATIO = 2.0  # admitted p99 under overload over the normal row's, with shedding


def overload_row(shed: bool | None) -> Start:
    """rollguard_bare's config (all traffic to the baseline, no contracts, access log off) with the data
    listener's `limits.max_concurrency` left at its default (`shed` None: the normal row), set near the
    normal row's connections (the smallest power of two at or above them: 64 for 50), or set out of reach
    (100000). Every one reads the admitted requests' latency from rollguard's own histogram."""

    def start(ctx: RunContext, stack: contextlib.ExitStack) -> Target:
        limits = None
        if shed is not None:
            limit = overload.ceil_pow2(ctx.connections) if shed else OVERLOAD_NO_LIMIT
            limits = {"max_concurrency": limit}
        return harness.start_bare(ctx, stack, limits=limits, admitted_window=True)

    return start


# The 3x rows get no anchor ratios in the common table (another load, and the shed row's req/s counts its
# 503s): report.anchor_ratios leaves out every row whose load_factor is not 1.
ROWS = (
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


def overload_summary(rows: Results) -> dict[str, Any]:
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


def overload_targets(summary: dict[str, Any], rows: Results) -> list[dict[str, Any]]:
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


def results(rows: Results, ratios: Ratios) -> dict[str, Any]:
    summary = overload_summary(rows)
    return {"overload": summary, "overload_targets": overload_targets(summary, rows)}


def table(rows: Results, ratios: Ratios, entries: dict[str, Any]) -> list[str]:
    """wrk's view of every answer next to rollguard's view of the admitted ones, per overload row."""
    names = (OVERLOAD_BASE, *OVERLOAD_ROWS)
    rows = [r for r in rows if r["name"] in names]
    if not rows:
        return []
    measured = entries["overload"]["rows"]
    w = name_width(rows)
    header = (
        f"{'overload row':<{w}}{'conns':>6}{'limit':>7}{'req/s':>9}{'non-2xx':>9}{'%':>6}{'p99 ms':>8}"
        f"{'adm/s':>8}{'adm p50':>9}{'adm p99':>9}{'x p99':>7}{'shed 503':>10}{'in flight':>10}"
    )

    def line(r: dict[str, Any]) -> list[str]:
        m = measured[r["name"]]
        name = r["name"] + ("*" if noisy(r) else "")
        limit = "-" if m["max_concurrency"] is None else str(m["max_concurrency"])
        lines = [
            f"{name:<{w}}{m['connections']:>6}{limit:>7}"
            f"{m['requests_per_s']:>9,.0f}{m['non_2xx']:>9,}{fmt(m['non_2xx_pct'], '.1f'):>6}"
            f"{fmt(m['wrk_p99_ms'], '.2f'):>8}{fmt(m['admitted_per_s'], ',.0f'):>8}"
            f"{fmt(m['admitted_p50_ms'], '.2f'):>9}{fmt(m['admitted_p99_ms'], '.2f'):>9}"
            f"{fmt(m['admitted_p99_ratio'], '.2f'):>7}{fmt(m['shed_503'], ','):>10}"
            f"{fmt(m['mean_in_flight'], '.1f'):>10}"
        ]
        if m["error"]:
            lines.append(f"    {r['name']}: could not read /metrics: {m['error']}")
        return lines

    title = (
        "req/s, non-2xx, p99: wrk, every answer; adm: the admitted requests, from rollguard's "
        f'{overload.DURATION}{{role="baseline"}} over the window; x p99: adm p99 over {OVERLOAD_BASE}'
    )
    lines = group_table(title, header, rows, w, line)
    lines.append(
        "limit: limits.max_concurrency ('-': the default, 1024); in flight: admitted requests inside the "
        "proxy at once, mean over the window"
    )
    if timed_out := [r["name"] for r in rows if r.get("errors", {}).get("timeout")]:
        lines.append(f"client timeouts (over wrk's 2 s, left out of its p99) in {', '.join(timed_out)}")
    return lines + target_lines(entries["overload_targets"])


def progress(row: dict[str, Any]) -> list[str]:
    if (adm := row.get("admitted")) is None:
        return []
    if "error" in adm:
        return [f"    rollguard /metrics: {adm['error']}"]
    return [
        f"    {row['connections']} connections; non-2xx {row['errors']['non_2xx_3xx']:,}; "
        f"rollguard: {adm['requests']:,} admitted, p50 {fmt(adm['p50_ms'], '.2f')} ms, "
        f"p99 {fmt(adm['p99_ms'], '.2f')} ms, {fmt(adm['mean_in_flight'], '.1f')} in flight; "
        f"shed (503) {adm['shed_503']:,}"
    ]


def parameters(connections: int) -> dict[str, Any]:
    return {
        "overload": {
            "base": OVERLOAD_BASE,
            "config": f"{CONTRACTS_BASE}'s (canary 0, shadow sample 0, no contracts, access log off)",
            "connections": {
                OVERLOAD_BASE: connections,
                **{name: OVERLOAD_FACTOR * connections for name in OVERLOAD_ROWS},
            },
            "max_concurrency": {
                OVERLOAD_BASE: "default (1024)",
                OVERLOAD_ROWS[0]: overload.ceil_pow2(connections),
                OVERLOAD_ROWS[1]: OVERLOAD_NO_LIMIT,
            },
            "admitted_latency": f'{overload.DURATION}{{role="baseline"}}: /metrics after minus before '
            "the window, PromQL histogram_quantile",
            "max_admitted_p99_ratio_shed": OVERLOAD_MAX_P99_RATIO,
        }
    }


GROUP = Group("overload", ROWS, results=results, table=table, progress=progress, parameters=parameters)
