"""The contracts rows: the per-request price of checking the request and the response against their JSON
Schemas, and of writing a masked access-log line, against the same proxy doing neither. All traffic goes
to the baseline (canary 0, shadow sample 0), so only the two features differ between the rows."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Any

import harness
from harness import Row, RunContext, Start, Target
from report import Ratios, Results, by_row, fmt, group_table, name_width, noisy, over, target_lines

from groups import Group

# The data plane alone, the base of these rows; the fallback, overload and tracing rows share its config.
CONTRACTS_BASE = "rollguard_bare"
CONTRACTS_MIN_RPS_RATIO = 0.85  # rollguard_full req/s over rollguard_bare: the contracts issue's target


def write_pii_key(work: Path) -> Path:
    """A fresh 32-byte PII key in a file only we can read (rollguard wants >= 16 bytes)."""
    path = work / "pii.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(16) + "\n")
    return path


def contracts_row(contracts: bool, logged: bool) -> Start:
    """A contracts row: all traffic to the baseline (canary 0, shadow sample 0), with or without the
    route's request and response contracts and score, and with the access log off or written masked to a
    file with the PII key read from a secret file."""

    def start(ctx: RunContext, stack: contextlib.ExitStack) -> Target:
        return harness.start_bare(
            ctx,
            stack,
            contracts="all" if contracts else "none",
            access_log=logged,
            pii_key_file=write_pii_key(ctx.tmp) if logged else None,
        )

    return start


ROWS = (
    Row(
        CONTRACTS_BASE,
        "rollguard, canary 0, no contracts, no score, access log off (the base)",
        contracts_row(contracts=False, logged=False),
        "contracts",
        also_in=("fallback",),  # the fallback rows' p99 is read against it
    ),
    Row(
        "rollguard_contracts",
        "rollguard_bare + request and response schema + score",
        contracts_row(contracts=True, logged=False),
        "contracts",
    ),
    Row(
        "rollguard_logged",
        "rollguard_bare + masked access log to a file, PII key from a file",
        contracts_row(contracts=False, logged=True),
        "contracts",
    ),
    Row(
        "rollguard_full",
        "rollguard_bare + contracts + masked access log",
        contracts_row(contracts=True, logged=True),
        "contracts",
    ),
)


def add_ratios(rows: Results, ratios: Ratios) -> None:
    """The contracts rows (minimal_asgi among them) against rollguard_bare: throughput, the proxy's CPU per
    request (which a neighbour on its core moves far less), and p99."""
    if contracts := [r["name"] for r in rows if "contracts" in r["groups"]]:
        ratios[f"vs_{CONTRACTS_BASE}"] = over(by_row(rows, "requests_per_s"), CONTRACTS_BASE, contracts)
        cpu = by_row(rows, "proxy_cpu_us_per_request")
        ratios[f"cpu_vs_{CONTRACTS_BASE}"] = over(cpu, CONTRACTS_BASE, contracts)
        ratios[f"p99_vs_{CONTRACTS_BASE}"] = over(by_row(rows, "p99_ms"), CONTRACTS_BASE, contracts)


def contracts_targets(rows: Results, ratios: Ratios) -> list[dict[str, Any]]:
    """The contracts issue's target: contracts plus masked access logging cost at most 15 % of the data
    plane's throughput, judged on this run; `met` is None when a row is missing."""
    if not any(r["name"] == "rollguard_full" for r in rows):
        return []
    value = ratios.get(f"vs_{CONTRACTS_BASE}", {}).get("rollguard_full")
    return [
        {
            "row": "rollguard_full",
            "target": f"req/s >= {CONTRACTS_MIN_RPS_RATIO:g} x {CONTRACTS_BASE}",
            "value": value,
            "met": None if value is None else value >= CONTRACTS_MIN_RPS_RATIO,
        }
    ]


def results(rows: Results, ratios: Ratios) -> dict[str, Any]:
    return {"contracts_targets": contracts_targets(rows, ratios)}


def table(rows: Results, ratios: Ratios, entries: dict[str, Any]) -> list[str]:
    """Contracts rows against rollguard_bare: throughput, p99, and the proxy's CPU per request."""
    rows = [r for r in rows if r["name"] != "minimal_asgi" and "contracts" in r["groups"]]
    if all(r["name"] == CONTRACTS_BASE for r in rows):
        return []  # only the base ran, as the fallback rows' p99 base: no contracts table
    rps = ratios.get(f"vs_{CONTRACTS_BASE}", {})
    p99 = ratios.get(f"p99_vs_{CONTRACTS_BASE}", {})
    cpu = ratios.get(f"cpu_vs_{CONTRACTS_BASE}", {})
    w = name_width(rows)
    header = (
        f"{'contracts row':<{w}}{'req/s':>10}{'x req/s':>9}{'p99 ms':>9}{'x p99':>8}{'cpu us/req':>12}"
        f"{'x cpu/req':>11}{'log lines':>11}"
    )

    def line(r: dict[str, Any]) -> list[str]:
        name = r["name"] + ("*" if noisy(r) else "")
        log_lines = r.get("access_log", {}).get("lines")
        return [
            f"{name:<{w}}{r['requests_per_s']:>10,.0f}{fmt(rps.get(r['name']), '.3f'):>9}"
            f"{fmt(r['p99_ms'], '.2f'):>9}{fmt(p99.get(r['name']), '.2f'):>8}"
            f"{fmt(r['proxy_cpu_us_per_request'], '.0f'):>12}{fmt(cpu.get(r['name']), '.3f'):>11}"
            f"{fmt(log_lines, ','):>11}"
        ]

    title = f"vs {CONTRACTS_BASE}; all traffic to the baseline"
    return group_table(title, header, rows, w, line) + target_lines(entries["contracts_targets"])


def progress(row: dict[str, Any]) -> list[str]:
    if (log := row.get("access_log")) and log.get("lines"):
        return [f"    access log: {log['lines']:,} lines, {log['bytes'] / log['lines']:.0f} bytes per line"]
    return []


def parameters(connections: int) -> dict[str, Any]:
    return {
        "contracts": {
            "base": CONTRACTS_BASE,
            "canary_weight": 0,
            "shadow_sample": 0,
            "request_schema": str(harness.REQUEST_SCHEMA.relative_to(harness.REPO)),
            "response_schema": str(harness.RESPONSE_SCHEMA.relative_to(harness.REPO)),
            "logged": "access log to a file, logging.pii.key: file:<32-byte secret>, sample_success 1",
            "min_rps_ratio_full": CONTRACTS_MIN_RPS_RATIO,
        }
    }


GROUP = Group("contracts", ROWS, add_ratios, results, table, progress, parameters)
