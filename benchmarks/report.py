"""What a run shows and keeps: the common table (every row against the two anchors) with each group's
table under it, the progress line per row, and the result file.

The pieces every group's table uses live here too: number formatting, the name column, the noise mark,
ratios against a base row, and the target lines.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import harness
import wrk

if TYPE_CHECKING:
    from groups import Group

RESULTS_DIR = harness.BENCH_DIR / "results"
NOISE_CPU_SHARE = 0.1  # warn when processes outside the run used more than this share of one CPU
# Measured when the data path was chosen, same machine class and method: what a healthy run looks like,
# for the ratios. The mirror references were measured with a 90/10 split in front of the mirror (ours
# send 100 % to the baseline).
REFERENCE_RPS = {
    "direct": 67_500,
    "nginx_split": 46_400,
    "minimal_asgi": 7_500,
    "starlette_httpx": 312,
    "nginx_mirror": 12_800,
    "minimal_mirror": 3_600,
    "nginx_mirror_hung": 25,
    "minimal_mirror_hung": 2_890,
}
ANCHORS = ("minimal_asgi", "nginx_split")  # the common table's ratios: every row over each
NAME_W = 23

Results = list[dict[str, Any]]  # the rows' results, as run_row returns them, in the order they ran
Ratios = dict[str, dict[str, float | None]]  # "vs_<base>" (and "p99_vs_...", "cpu_vs_..."): row -> ratio


# --- shared by every table -----------------------------------------------------------------------------


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def name_width(rows: Results) -> int:
    """The name column: NAME_W, or wider for a long row name (and its noise mark)."""
    return max([NAME_W] + [len(r["name"]) + 2 for r in rows])


def noisy(row: dict[str, Any]) -> bool:
    """Two cores leave no slack: a neighbour using a tenth of one during the row moves its numbers."""
    return bool(row["status"] == "ok" and row["neighbours"]["cpu_s"] > NOISE_CPU_SHARE * row["duration_s"])


def by_row(rows: Results, key: str) -> dict[str, float]:
    """One number of every row that ran and has it (not None, not 0): what a ratio can be taken of."""
    return {r["name"]: r[key] for r in rows if r["status"] == "ok" and r[key]}


def over(values: dict[str, float], anchor: str, names: list[str]) -> dict[str, float | None]:
    """Each name's value over the anchor's, None where either is missing."""
    base = values.get(anchor)
    return {n: (round(values[n] / base, 4) if base and n in values else None) for n in names}


def anchor_ratios(rows: Results, unanchored: Sequence[str]) -> Ratios:
    """Throughput relative to anchors measured in the same run: the numbers that travel across machines.
    The `unanchored` rows (another load than the anchors': the overload rows, whose shedding row's req/s
    also counts its 503s) get None, shown as "-", whether they ran or not."""
    rps = by_row(rows, "requests_per_s")
    same_load = [r["name"] for r in rows if r["name"] not in unanchored]
    return {
        f"vs_{anchor}": over(rps, anchor, same_load) | dict.fromkeys(unanchored, None) for anchor in ANCHORS
    }


def group_table(
    title: str, header: str, rows: Results, width: int, line: Callable[[dict[str, Any]], list[str]]
) -> list[str]:
    """A group's table: its title, the header and a rule, then `line`'s lines for each row that ran and
    the name and status of each that did not (in a name column `width` wide)."""
    lines = [title, header, "-" * len(header)]
    for r in rows:
        lines += line(r) if r["status"] == "ok" else [f"{r['name']:<{width}}{r['status']}"]
    return lines


def target_lines(targets: list[dict[str, Any]]) -> list[str]:
    """One line per target: the value and met / MISSED / not measured; `report` entries have no verdict."""
    lines = []
    for t in targets:
        spec = "+.1f" if "RSS" in t["target"] else ".0f" if t["target"].startswith("0 ") else ".3f"
        value = fmt(t["value"], spec)
        if t.get("report"):
            lines.append(f"report {t['row']}: {t['target']}: {value}")
            continue
        if bounds := t.get("bounds"):
            value += f" (the buckets allow {bounds[0]:.2f} to {bounds[1]:.2f})"
        if t.get("contrast"):
            verdict = {True: "holds", False: "does not hold", None: "not measured"}[t["met"]]
            lines.append(f"contrast {t['row']}: {t['target']}: {value} -> {verdict} (not a target)")
            continue
        verdict = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        lines.append(f"target {t['row']}: {t['target']}: {value} -> {verdict}")
    return lines


# --- the common table ----------------------------------------------------------------------------------


def render_table(
    rows: Results, ratios: Ratios, groups: Sequence[Group], results: dict[str, dict[str, Any]]
) -> str:
    """The main table, then each group's table (given its `results`) for the groups that have rows in
    this run, in the groups' order."""
    w = name_width(rows)
    header = (
        f"{'row':<{w}}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
        f"{'x minimal':>11}{'x nginx':>9}{'cpu% proxy/load':>17}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        if r["status"] != "ok":
            reason = r["reason"] if len(r["reason"]) <= 90 else r["reason"][:87] + "..."
            lines.append(f"{r['name']:<{w}}{r['status']}: {reason}")
            continue
        name = r["name"] + ("*" if noisy(r) else "")
        lines.append(
            f"{name:<{w}}{r['requests_per_s']:>10,.0f}{fmt(r['p50_ms'], '.2f'):>9}"
            f"{fmt(r['p99_ms'], '.2f'):>9}{r['errors']['total']:>8,}"
            f"{fmt(ratios['vs_minimal_asgi'][r['name']], '.3f'):>11}"
            f"{fmt(ratios['vs_nginx_split'][r['name']], '.3f'):>9}"
            f"{fmt(r['busy_pct']['proxy_cpu'], '.0f') + '/' + fmt(r['busy_pct']['load_cpu'], '.0f'):>17}"
        )
    shown = set()
    for group in groups:
        if table := group.table(rows, ratios, results[group.name]):
            lines += ["", *table]
            shown.add(group.name)
    if any(noisy(r) for r in rows):
        lines.append(
            f"* other processes used over {NOISE_CPU_SHARE:.0%} of a CPU during this row: "
            "rerun on a quiet machine"
        )
    ref = REFERENCE_RPS
    lines.append(
        "reference (when the data path was chosen): "
        f"minimal_asgi = {ref['minimal_asgi'] / ref['nginx_split']:.3f} x nginx, "
        f"starlette_httpx = {ref['starlette_httpx'] / ref['minimal_asgi']:.3f} x minimal"
        # The naive mirror's reference only means something next to the shadow table.
        + (
            f", minimal_mirror = {ref['minimal_mirror'] / ref['minimal_asgi']:.3f} x minimal"
            if "shadow" in shown
            else ""
        )
    )
    return "\n".join(lines)


def print_row(index: int, total: int, row: dict[str, Any], groups: Sequence[Group]) -> None:
    """The progress line of a row that just finished, with what its groups add under it."""
    if row["status"] == "ok":
        print(
            f"[{index}/{total}] {row['name']}: {row['requests_per_s']:,.0f} req/s, "
            f"p99 {fmt(row['p99_ms'], '.2f')} ms, {row['errors']['total']} errors"
        )
        for group in groups:
            for line in group.progress(row):
                print(line)
        _warn_if_noisy(row)
        return
    print(f"[{index}/{total}] {row['name']}: {row['status'].upper()}: {row['reason']}")
    if row.get("detail"):
        print("\n".join(f"    {line}" for line in row["detail"].splitlines()))


def _warn_if_noisy(row: dict[str, Any]) -> None:
    if not noisy(row):
        return
    others = row["neighbours"]
    names = ", ".join(f"{p['comm']} {p['cpu_s']:.1f} s" for p in others["top"] if p["cpu_s"] >= 0.1)
    print(f"    noisy: other processes used {others['cpu_s']:.1f} CPU-s during this row ({names})")


# --- the result file -----------------------------------------------------------------------------------


def result_doc(
    args: argparse.Namespace,
    started: datetime,
    machine_info: dict[str, Any],
    pinning: harness.Pinning,
    groups: Sequence[Group],
    members: dict[str, tuple[str, ...]],
    rows: Results,
    ratios: Ratios,
    results: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """The result file's content: the machine, the parameters (each group's own among them; `members`:
    each group's rows, those it borrows included), every row, the ratios, and each group's results, in
    the groups' order."""
    parameters: dict[str, Any] = {
        "duration_s": args.duration,
        "connections": args.connections,
        "wrk_threads": 1,
        "warmup_s": harness.WARMUP_S,
        "quick": args.quick,
        "rows": [r.name for r in args.rows],
        "canary_weight": harness.CANARY_WEIGHT,
        "groups": {group: list(names) for group, names in members.items()},
    }
    for group in groups:
        parameters |= group.parameters(args.connections)
    parameters |= {
        "path": harness.PATH,
        "request": str(wrk.POST_LUA.relative_to(harness.REPO)),
        "pinning": {"proxy_cpu": pinning.proxy_cpu, "load_cpu": pinning.load_cpu, "note": pinning.note},
    }
    doc: dict[str, Any] = {
        "format": 1,
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "machine": machine_info,
        "parameters": parameters,
        "rows": rows,
        "ratios": ratios,
    }
    for group in groups:
        doc |= results[group.name]
    return doc | {
        "reference_requests_per_s": {"source": "measured when the data path was chosen", **REFERENCE_RPS}
    }


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
