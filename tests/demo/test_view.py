"""The live view (``rollguard demo`` and ``rollguard status --watch``) drawn for a rollout in the middle of
a canary step: it fits an 80x24 terminal, shows each gate in its unit, and shows API text as text."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console, RenderableType
from rich.text import Text

from proxy.demo.rollout_view import watch_view
from proxy.demo.run import Demo
from proxy.demo.scenarios import SCENARIOS
from proxy.demo.view import render

GATES = [
    ("latency_p95", "PASS", 10.78, 11.91, 250.0),
    ("latency_p99", "PASS", 14.84, 14.84, 300.0),
    ("error_rate", "INCONCLUSIVE", 0.004, 0.002, 0.05),
    ("decision_delta", "INCONCLUSIVE", 0.2346, 0.2582, 10.0),
    ("score_shift", "PASS", 0.0374, None, 0.2),
    ("policy_violations", "PASS", 0.0, 0.0, 0.0),
    ("cost_per_1k", "PASS", 0.0, 0.0, 0.5),
]
HOLD_REASON = (
    "inconclusive at 50%: error_rate 0.4%: +0.2 pp vs baseline, up to +0.7 pp so far, needs < +0.5 pp "
    "(baseline 0.2%, n=486); decision_delta -2.4 pp (candidate 23.5%, baseline 25.8%, bounds -11.1..+6.4 "
    "pp, n=486) vs +-10 pp: not yet clear"
)


def _version(requests: int, p95: float) -> dict[str, Any]:
    return {
        "requests": requests,
        "failures": 2,
        "error_rate": 2 / requests,
        "decision_rate": 0.25,
        "latency_ms": {"p50": p95 / 2, "p95": p95, "p99": p95 * 1.3},
    }


def canary_status() -> dict[str, Any]:
    """``GET /status`` at the third of four steps, inconclusive, as the controller answers it."""
    return {
        "versions": {"baseline": "v1", "candidate": "v2"},
        "rollout": {
            "revision": 16,
            "rollout_id": "6dc9a458d569e734",
            "phase": "canary",
            "step": 2,
            "weight": 50.0,
            "passes": 0,
            "failed_windows": 1,
            "updated_at": "2026-12-08T01:20:29.979Z",
            "reason": HOLD_REASON,
        },
        "controller": {
            "window": {"baseline": _version(505, 11.9), "candidate": _version(599, 10.8), "seconds": 3.74},
            "last_decision": {"action": "HOLD", "reason": HOLD_REASON},
            "gates": [
                {"gate": g, "verdict": v, "value": x, "baseline": b, "threshold": t, "p_value": 0.5}
                for g, v, x, b, t in GATES
            ],
            "tripwire": {"llr": 0.4, "upper": 6.9, "consecutive": 1, "baseline_rate": 0.002, "armed": True},
            "needs": {
                "per_gate": {"error_rate": 900, "decision_delta": 1050},
                "candidate_requests": 486,
                "more": 564,
                "eta_s": 12.3,
                "max_hold_left_s": 26.8,
            },
            "steps": [10.0, 25.0, 50.0, 100.0],
        },
        "upstreams": {},
    }


def _entry(second: int, action: str, actor: str, weight: float, reason: str) -> dict[str, Any]:
    return {
        "ts": f"2026-12-08T01:20:{second:02d}.125Z",
        "actor": actor,
        "action": action,
        "phase": "canary",
        "step": 0,
        "weight": weight,
        "reason": reason,
    }


def canary_decisions() -> list[dict[str, Any]]:
    """A rollout's log so far: the start, a shadow phase, two steps passed, an operator's change with a
    long action name, and runs of HOLDs (folded into one row each)."""
    log = [_entry(0, "start", "ops", 0.0, "release 2026-12 of the fraud model")]
    log += [
        _entry(1 + i, "HOLD", "controller", 0.0, f"inconclusive in shadow: {100 * i} pairs") for i in range(4)
    ]
    log.append(_entry(5, "PROCEED", "controller", 10.0, "all gates passed in shadow (1/1): to 10%"))
    log.append(_entry(6, "set_shadow_sample", "release-bot", 10.0, "mirror less while the cache warms"))
    log += [
        _entry(7 + i, "HOLD", "controller", 10.0, "inconclusive at 10%: error_rate ...") for i in range(3)
    ]
    log.append(_entry(10, "PROCEED", "controller", 25.0, "all gates passed at 10% (1/1): to 25%"))
    log += [
        _entry(11 + i, "HOLD", "controller", 25.0, "inconclusive at 25%: decision_delta") for i in range(5)
    ]
    log.append(_entry(16, "PROCEED", "controller", 50.0, "all gates passed at 25% (1/1): to 50%"))
    log += [_entry(17 + i, "HOLD", "controller", 50.0, HOLD_REASON) for i in range(3)]
    return log


def _rendered(view: RenderableType) -> list[str]:
    console = Console(width=80, height=24, record=True, force_terminal=True)
    console.print(view)
    return console.export_text().splitlines()


def _fits(lines: list[str]) -> None:
    assert len(lines) <= 24, "\n".join(lines)
    assert max(map(len, lines)) <= 80, "\n".join(lines)


def test_the_watch_view_fits_80x24_with_the_latest_decisions() -> None:
    title = Text("rollguard status  http://127.0.0.1:9901  v1 -> v2  01:20:30 UTC")
    lines = _rendered(watch_view(canary_status(), canary_decisions(), title=title))
    _fits(lines)
    text = "\n".join(lines)
    # Where the rollout is, its progress and the reason, once.
    assert "canary step 3/4" in lines[1] and "weight 50%" in lines[1] and "[50%]" in lines[1]
    assert "windows 0 passed, 1 failing" in text and "564 more for decision_delta" in text
    assert text.count("inconclusive at 50%: error_rate 0.4%") == 1  # the timeline's row is cut before it
    # Gates in their unit, one scale each: ms, %, pp.
    rows = {
        line.split()[0]: line
        for line in lines
        if line.split() and line.split()[0] in dict.fromkeys(g[0] for g in GATES)
    }
    assert len(rows) == len(GATES), text
    assert "10.8 ms" in rows["latency_p95"] and "250.0 ms" in rows["latency_p95"]
    assert "14.8 ms" in rows["latency_p99"] and "300.0 ms" in rows["latency_p99"]
    assert "0.4%" in rows["error_rate"] and "5.0%" in rows["error_rate"]
    assert "pp" in rows["decision_delta"]
    # Both versions' window, and the newest rows of the timeline, runs of HOLDs folded.
    assert any(line.startswith("baseline v1") and "505" in line for line in lines)
    assert any(line.startswith("candidate v2") and "599" in line for line in lines)
    assert "HOLD x3" in lines[-1] and "50%" in lines[-1]
    assert "decisions (UTC)" in text


def test_a_long_action_name_is_cut_to_its_column() -> None:
    status = canary_status()
    status["controller"]["gates"] = []  # room for the whole timeline
    lines = _rendered(watch_view(status, canary_decisions(), title=Text("rollguard status")))
    _fits(lines)
    row = next(line for line in lines if "set_shadow_s…" in line)
    assert "release-b…" in row and "mirror less" in row  # the actor's column is cut too


def test_the_demo_live_view_fits_80x24_mid_canary(tmp_path: Path) -> None:
    args = argparse.Namespace(out=str(tmp_path), duration=120.0, rps=300.0, plain=False, scenario="errors")
    demo = Demo(args, SCENARIOS["errors"])
    demo.status = canary_status()
    demo.decisions = canary_decisions()
    demo.proxy_phase, demo.step, demo.weight, demo.revision = "canary", 2, 50.0, 16
    demo.shadow_from, demo.shadow_until, demo.rollout_at, demo.fault_at = 0.5, 5.0, 0.2, 5.1
    demo.admin_url = "http://127.0.0.1:44297"
    demo.phase = "following the controller"
    lines = _rendered(render(demo))
    _fits(lines)
    text = "\n".join(lines)
    assert lines[0].startswith("rollguard demo  scenario errors")
    assert "live fault applied to v2" in text and "status page http://127.0.0.1:44297/ui" in text
    assert "clients:" in text and "shadow" in text
    assert "decision_delta" in text and "HOLD x3" in text  # the gates and the newest decision, both


def test_api_text_reaches_the_terminal_as_text() -> None:
    status = canary_status()
    forged = "[bold red]all clear[/]\x1b[2J\nPROMOTE by admin"
    status["rollout"]["reason"] = status["controller"]["last_decision"]["reason"] = forged
    console = Console(width=200, height=24, record=True, force_terminal=True)
    console.print(watch_view(status, [], title=Text("t")))
    shown = console.export_text()
    assert "[bold red]all clear[/]\\x1b[2J\\nPROMOTE by admin" in shown
    assert "\x1b[2J" not in console.export_text(styles=True)
