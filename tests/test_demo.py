"""``rollguard demo`` end to end, as a user runs it: a child process, plain output, its files on disk.

The module's run lasts 12s at 150 requests/s: its 4s shadow phase mirrors ~590 requests and sends ~120 of
them to the baseline twice (noise_sample 0.2), well above the noise learner's 50 samples per field, so the
fields get a verdict in every run.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

STEP = re.compile(
    r"^  (shadow|step \d+/\d+)\s+weight\s+([\d.]+)%\s+candidate share\s+([\d.]+)% of (\d+) requests", re.M
)
PLAIN = re.compile(r"^\[\s*\d+\.\d+s\] (.*)$", re.M)


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
            "12",
            "--rps",
            "150",
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
    # One plain status line per second while traffic runs (what CI sees instead of the live view); during
    # the shadow phase it carries the shadow's figures, and only then.
    lines = PLAIN.findall(proc.stdout)
    assert len(lines) >= 10, proc.stdout
    shadow_lines = [line for line in lines if line.startswith("shadow weight 0%")]
    assert any(re.search(r"\| shadow sent=[1-9]\d* compared=[1-9]\d* div=", x) for x in shadow_lines), lines
    assert not any("shadow sent=" in line for line in lines if line.startswith("canary")), lines


def test_observed_share_matches_the_weight_at_both_ends(
    demo_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    proc, _ = demo_run
    steps = [
        (label, float(weight), float(share), int(n)) for label, weight, share, n in STEP.findall(proc.stdout)
    ]
    assert [(label, weight) for label, weight, _, _ in steps] == [
        ("shadow", 0),
        ("step 1/5", 1),
        ("step 2/5", 5),
        ("step 3/5", 25),
        ("step 4/5", 50),
        ("step 5/5", 100),
    ], proc.stdout
    # Every request in a step's tally was routed under that step's weight, so the ends are exact: the
    # candidate answered no client while it was shadowed, and every client at 100%.
    assert steps[0][2] == 0.0 and steps[0][3] > 0
    assert steps[-1][2] == 100.0 and steps[-1][3] > 0
    summary = json.loads((demo_run[1] / "demo-summary.json").read_text())
    assert summary["steps"][-1]["weight"] == 100 and summary["steps"][-1]["candidate_share"] == 100.0


def test_state_decision_log_and_summary_on_disk(
    demo_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    proc, out = demo_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    state = json.loads((out / "state" / "rollguard-state.json").read_text())
    assert state["weight_bp"] == 10_000 and state["candidate_version"] == "v2"
    lines = (out / "state" / "rollguard-state.decisions.jsonl").read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    # Shadow on then off at weight 0, both through the admin API, then the canary walk.
    assert [(e["action"], e["state"]["shadow_sample"], e["weight"]) for e in entries] == [
        ("set_shadow_sample", 1.0, 0),
        ("set_shadow_sample", 0.0, 0),
        ("set_weight", 0.0, 1),
        ("set_weight", 0.0, 5),
        ("set_weight", 0.0, 25),
        ("set_weight", 0.0, 50),
        ("set_weight", 0.0, 100),
    ]
    assert all(e["actor"] == "demo" for e in entries)
    assert (out / "access.log").stat().st_size > 0
    summary = json.loads((out / "demo-summary.json").read_text())
    assert summary["ok"] is True and summary["errors"] == 0
    # The proxy's own count (GET /metrics) agrees with what the client saw.
    assert {v: summary["proxy_requests_total"][v] for v in ("v1", "v2")} == summary["answered"]
    token = (out / "demo-token").read_text().strip()
    assert token and token not in proc.stdout + proc.stderr + (out / "rollguard.yaml").read_text()


def test_shadow_eval_written_like_rollguard_report(
    demo_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    proc, out = demo_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads((out / "shadow_eval.json").read_text())
    assert doc["versions"] == {"baseline": "v1", "candidate": "v2"}
    ev = doc["routes"]["infer"]
    assert ev["compared"] > 0 and ev["noise_pairs"] >= 50, ev
    fields = {
        verdict: {f["field"] for f in ev["fields"][verdict]} for verdict in ("real", "noise", "undecided")
    }
    # The candidate's small drift moves every score: a real difference, never taken for noise.
    assert "/score" in fields["real"] | fields["undecided"] and "/score" not in fields["noise"], fields
    # Ids and timestamps differ between two answers of the baseline too: noise.
    assert {"/prediction_id", "/served_at"} <= fields["noise"], fields
    assert ev["errors"]["candidate"] == {} and ev["schema_violations"]["candidate"] == 0
    # A small, real divergence: some decisions flip, far from all.
    lo, hi = ev["decision_divergence_pp"]["ci95"]
    assert 0 <= lo <= ev["decision_divergence_pp"]["value"] <= hi < 20, ev["decision_divergence_pp"]
    assert {s["segment"] for s in ev["segments"]} <= {"br-se", "br-ne", "br-s", "us-east", "eu-west", "other"}
    # The summary names the file and the verdicts, and the demo summary records the same figures.
    assert f"written by `rollguard report` to {out / 'shadow_eval.json'}" in proc.stdout
    assert re.search(r"^    real\s+.*/score", proc.stdout, re.M) or "/score" in fields["undecided"], (
        proc.stdout
    )
    assert re.search(r"^    noise\s+.*/prediction_id", proc.stdout, re.M), proc.stdout
    assert re.search(r"decisions\s+divergence [\d.]+ pp \[[\d.]+, [\d.]+\] 95%", proc.stdout), proc.stdout
    summary = json.loads((out / "demo-summary.json").read_text())["shadow"]
    assert summary["compared"] == ev["compared"] and summary["file"] == str(out / "shadow_eval.json")
    assert summary["requests"]["sent"] >= ev["pairs_total"] and summary["requests"].get("dropped", 0) == 0


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
    (out / "shadow_eval.json").write_text(json.dumps({"rollout_id": stale["rollout_id"], "routes": {}}))
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
    assert [e["action"] for e in entries] == ["set_shadow_sample"] * 2 + ["set_weight"] * 5
    assert json.loads((out / "shadow_eval.json").read_text())["rollout_id"] != stale["rollout_id"]
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
