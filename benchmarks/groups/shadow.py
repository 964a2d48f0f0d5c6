"""The shadow rows: client traffic 100 % to the baseline, a share of it mirrored to the candidate or to a
server that never answers, each proxy with the same mirror budget (harness.SHADOW_*). Compared with
rollguard's own no-shadow row, with the proxy's resident memory watched over the window."""

from __future__ import annotations

import contextlib
from typing import Any

import harness
import nginx_conf
import procs
from harness import Row, RunContext, Start, Target
from report import NAME_W, Ratios, Results, by_row, fmt, noisy, over, target_lines

from groups import Group

SHADOW_BASE = "rollguard_shadow_0"  # the no-shadow row the shadow rows are compared with
# Targets from the shadow issue, checked under the table (and in the JSON) on every run with these rows.
SHADOW_HEALTHY_MIN_RPS_RATIO = 0.5  # rollguard_shadow_1.0 req/s over rollguard_shadow_0
SHADOW_HUNG_MAX_P99_RATIO = 1.10  # rollguard_shadow_hung p99 over rollguard_shadow_0
# "Flat": the same run's no-shadow rollguard moves a fraction of a MiB over a window; a backlog of parked
# mirrors (the naive proxy) grows by tens to hundreds.
RSS_FLAT_MIB = 2.0


def nginx_mirror(hung: bool) -> Start:
    """nginx to the baseline only, with `mirror` of every request to the candidate or the hung server."""

    def start(ctx: RunContext, stack: contextlib.ExitStack) -> Target:
        assert ctx.upstreams is not None
        mirror_url = harness.mirror_target(ctx, stack, hung)
        [port], prefix = procs.free_ports(1), ctx.tmp / "nginx-mirror"
        conf = nginx_conf.mirror_conf(
            prefix,
            port,
            ctx.upstreams.baseline_port,
            int(mirror_url.rsplit(":", 1)[1]),
            harness.SHADOW_TIMEOUT_S,
        )
        nginx_conf.write_prefix(prefix, conf)
        cmd = procs.pin(ctx.pinning.proxy_cpu) + nginx_conf.nginx_cmd(prefix)
        server = harness.serve(ctx, stack, "nginx-mirror", cmd)
        harness.wait_for_proxy(ctx, server, port)
        return Target(port, cmd, {"nginx_conf": conf, "mirror_url": mirror_url}, proxy=server)

    return start


def shadow_row(sample: float, hung: bool = False) -> Start:
    """`rollguard serve` with all traffic to the baseline (only baseline-answered requests are mirrored)
    and that share mirrored to the candidate, or to the hung server."""

    def start(ctx: RunContext, stack: contextlib.ExitStack) -> Target:
        return harness.start_rollguard(
            ctx,
            stack,
            canary_weight=0,
            candidate_url=harness.start_hung_upstream(ctx, stack) if hung else None,
            shadow=harness.shadow_section(sample),
        )

    return start


ROWS = (
    Row(SHADOW_BASE, "rollguard, canary 0, shadow sample 0 (the no-shadow base)", shadow_row(0.0), "shadow"),
    Row(
        "rollguard_shadow_0.1",
        "rollguard, canary 0, 10 % mirrored to the candidate",
        shadow_row(0.1),
        "shadow",
    ),
    Row("rollguard_shadow_1.0", "rollguard, canary 0, every request mirrored", shadow_row(1.0), "shadow"),
    Row(
        "rollguard_shadow_hung",
        "rollguard, canary 0, every request mirrored to a shadow that never answers",
        shadow_row(1.0, hung=True),
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
        harness.python_anchor("minimal_mirror_proxy.py", canary_weight=0, mirror="candidate"),
        "shadow",
    ),
    Row(
        "minimal_mirror_hung",
        "minimal_asgi + bare-task mirror of every request to a shadow that never answers",
        harness.python_anchor("minimal_mirror_proxy.py", canary_weight=0, mirror="hung"),
        "shadow",
    ),
)


def add_ratios(rows: Results, ratios: Ratios) -> None:
    """The shadow rows (minimal_asgi among them) against rollguard's own no-shadow row: throughput and p99."""
    if shadow := [r["name"] for r in rows if "shadow" in r["groups"]]:
        ratios[f"vs_{SHADOW_BASE}"] = over(by_row(rows, "requests_per_s"), SHADOW_BASE, shadow)
        ratios[f"p99_vs_{SHADOW_BASE}"] = over(by_row(rows, "p99_ms"), SHADOW_BASE, shadow)


def shadow_targets(rows: Results, ratios: Ratios) -> list[dict[str, Any]]:
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


def results(rows: Results, ratios: Ratios) -> dict[str, Any]:
    return {"shadow_targets": shadow_targets(rows, ratios)}


def table(rows: Results, ratios: Ratios, entries: dict[str, Any]) -> list[str]:
    """Shadow rows against rollguard's no-shadow row, with the proxy's resident memory over the window."""
    rows = [r for r in rows if "shadow" in r["groups"] and r["status"] == "ok"]
    if not any(r["groups"][0] == "shadow" for r in rows):
        return []  # only the shared anchor ran (e.g. --only core or contracts): no shadow table
    rps, p99 = ratios.get(f"vs_{SHADOW_BASE}", {}), ratios.get(f"p99_vs_{SHADOW_BASE}", {})
    header = (
        f"{'shadow row':<{NAME_W}}{'x req/s':>9}{'x p99':>8}{'RSS start':>11}{'RSS end':>9}{'growth':>8}"
        f"{'2nd half':>10}{'cpu us/req':>12}{'  mirrors sent/dropped/failed'}"
    )
    lines = [f"vs {SHADOW_BASE}; RSS in MiB over the measured window", header, "-" * len(header)]
    for r in rows:
        name = r["name"] + ("*" if noisy(r) else "")
        lines.append(
            f"{name:<{NAME_W}}{fmt(rps.get(r['name']), '.3f'):>9}{fmt(p99.get(r['name']), '.2f'):>8}"
            f"{fmt(r['rss_start_mib'], '.1f'):>11}{fmt(r['rss_end_mib'], '.1f'):>9}"
            f"{fmt(r['rss_growth_mib'], '+.1f'):>8}{fmt(r['rss_late_growth_mib'], '+.1f'):>10}"
            f"{fmt(r['proxy_cpu_us_per_request'], '.0f'):>12}"
            f"  {_mirror_counts(r)}"
        )
    if timed_out := [r["name"] for r in rows if r["errors"]["timeout"]]:
        lines.append(
            f"client timeouts in {', '.join(timed_out)}: wrk leaves requests over its 2 s timeout out of "
            "the latency percentiles, so their p99 reads low"
        )
    return lines + target_lines(entries["shadow_targets"])


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


def progress(row: dict[str, Any]) -> list[str]:
    if "shadow" not in row["groups"]:
        return []
    return [
        f"    RSS {fmt(row['rss_start_mib'], '.1f')} -> {fmt(row['rss_end_mib'], '.1f')} MiB, "
        f"mirrors sent/dropped/failed {_mirror_counts(row)}"
    ]


def parameters(connections: int) -> dict[str, Any]:
    return {
        "shadow": {
            "rollguard_section": harness.shadow_section(1.0) | {"sample": "per row"},
            "canary_weight": 0,
            "timeout_s": harness.SHADOW_TIMEOUT_S,
            "max_in_flight_rollguard": harness.SHADOW_MAX_IN_FLIGHT,
            "rss_sample_s": harness.RSS_SAMPLE_S,
        }
    }


GROUP = Group("shadow", ROWS, add_ratios, results, table, progress, parameters)
