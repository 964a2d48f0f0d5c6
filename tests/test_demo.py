"""``rollguard demo`` end to end, as a user runs it: a child process, plain output, its files on disk."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

STEP = re.compile(r"step (\d+)/(\d+)\s+weight ([\d.]+)%\s+candidate share ([\d.]+)% of (\d+) requests")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("demo") / "demo"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "proxy",
            "demo",
            "--duration",
            "6",
            "--rps",
            "100",
            "--plain",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc, out


def test_demo_exits_cleanly_and_both_versions_served(
    demo_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    proc, _ = demo_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "result: OK" in proc.stdout
    served = {
        m[0]: int(m[1])
        for m in re.findall(r"^\s+(?:baseline|candidate) (v\d): (\d+) requests$", proc.stdout, re.M)
    }
    assert served.keys() == {"v1", "v2"}, proc.stdout
    assert served["v1"] > 0 and served["v2"] > 0
    assert re.search(r"\b0 errors\b", proc.stdout), proc.stdout
    assert re.search(r"\b[1-9]\d* rejected by contract\b", proc.stdout), (
        "the ~2% invalid requests were not rejected"
    )
    # One plain status line per second while traffic runs (what CI sees instead of the live view).
    assert len(re.findall(r"^\[\s*\d+\.\d+s\] ", proc.stdout, re.M)) >= 4


def test_observed_share_matches_the_weight_at_both_ends(
    demo_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    proc, _ = demo_run
    steps = {float(weight): (float(share), int(n)) for _, _, weight, share, n in STEP.findall(proc.stdout)}
    assert list(steps) == [0, 1, 5, 25, 50, 100], proc.stdout
    # Every request in a step's tally was routed under that step's weight, so the ends are exact.
    assert steps[0][0] == 0.0 and steps[0][1] > 0
    assert steps[100][0] == 100.0 and steps[100][1] > 0


def test_state_decision_log_and_summary_on_disk(
    demo_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    proc, out = demo_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    state = json.loads((out / "state" / "rollguard-state.json").read_text())
    assert state["weight_bp"] == 10_000 and state["candidate_version"] == "v2"
    lines = (out / "state" / "rollguard-state.decisions.jsonl").read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    assert [e["weight"] for e in entries] == [0, 1, 5, 25, 50, 100]
    assert all(e["actor"] == "demo" and e["action"] == "set_weight" for e in entries)
    assert (out / "access.log").stat().st_size > 0
    summary = json.loads((out / "demo-summary.json").read_text())
    assert summary["ok"] is True and summary["errors"] == 0
    # The proxy's own count (GET /metrics) agrees with what the client saw.
    assert {v: summary["proxy_requests_total"][v] for v in ("v1", "v2")} == summary["answered"]
    token = (out / "demo-token").read_text().strip()
    assert token and token not in proc.stdout + proc.stderr + (out / "rollguard.yaml").read_text()


def test_a_rerun_starts_from_a_clean_state(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    (out / "state").mkdir(parents=True)
    # What an earlier run leaves behind: the candidate at 100% and a long decision log.
    stale = {
        "revision": 40,
        "rollout_id": "0123456789abcdef",
        "phase": "paused",
        "weight_bp": 10_000,
        "candidate_version": "v2",
    }
    (out / "state" / "rollguard-state.json").write_text(json.dumps(stale))
    (out / "state" / "rollguard-state.decisions.jsonl").write_text(json.dumps({"state": stale}) + "\n")
    (out / "notes.txt").write_text("not the demo's")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "proxy",
            "demo",
            "--duration",
            "1.2",
            "--rps",
            "50",
            "--plain",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    entries = [
        json.loads(x) for x in (out / "state" / "rollguard-state.decisions.jsonl").read_text().splitlines()
    ]
    assert [(e["before"]["revision"], e["weight"]) for e in entries][0] == (1, 0)  # from a fresh state
    assert len(entries) == 6
    assert (out / "notes.txt").read_text() == "not the demo's"  # only the demo's own files are replaced


def test_bad_usage_is_exit_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "proxy", "demo", "--duration", "0", "--plain", "--out", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "--duration" in proc.stderr
