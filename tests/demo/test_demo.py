"""``rollguard demo`` end to end, as a user runs it: child processes, plain output, their files on disk.

Every scenario runs once per module, one after the other: models, proxy and clients of one run share one
process, so two runs at once on two cores slow each other's answers, which is what the latency gates
measure. ``good`` promotes in ~10-15 s and the others roll back within a few seconds of the start, so the
module takes about a minute. The controller, not the demo, moves the rollout: the assertions read its
decisions back from the output, the decision log and the artifacts that ``rollguard report`` wrote.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(300)  # the module fixture runs every scenario before the first test

RPS = "300"
EXPECTED = {
    "good": ("PROMOTED", ()),
    "latency": ("ROLLED BACK", ("latency_p95",)),
    "errors": ("ROLLED BACK", ("error_rate", "trip-wire")),
    "drift": ("ROLLED BACK", ("decision_delta",)),
    "schema": ("ROLLED BACK", ("error_rate", "trip-wire")),
}
OUTCOME = re.compile(
    r"^outcome: (PROMOTED|ROLLED BACK) after ([\d.]+)s by (\S+)(?: on (.+?))? \((.+)\)$", re.M
)
PLAIN = re.compile(r"^\[\s*(\d+\.\d+)s\] (.*)$", re.M)
# What an earlier run leaves behind in the folder of the run that checks a rerun starts clean.
STALE = {
    "revision": 40,
    "rollout_id": "0123456789abcdef",
    "phase": "promoted",
    "weight_bp": 10_000,
    "candidate_version": "v2",
}


@dataclass(frozen=True)
class Run:
    scenario: str
    returncode: int
    stdout: str
    stderr: str
    out: Path

    @property
    def text(self) -> str:
        return f"exit {self.returncode}\n{self.stdout}\n{self.stderr}"

    def decisions(self) -> list[dict[str, Any]]:
        log = self.out / "state" / "rollguard-state.decisions.jsonl"
        return [json.loads(line) for line in log.read_text().splitlines()]

    def summary(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads((self.out / "demo-summary.json").read_text())
        return doc


def _seed_stale_run(out: Path) -> None:
    (out / "state").mkdir(parents=True)
    (out / "state" / "rollguard-state.json").write_text(json.dumps(STALE))
    (out / "state" / "rollguard-state.decisions.jsonl").write_text(json.dumps({"state": STALE}) + "\n")
    (out / "shadow_eval.json").write_text(json.dumps({"rollout_id": STALE["rollout_id"], "routes": {}}))
    (out / "notes.txt").write_text("not the demo's")


def _demo(scenario: str, out: Path, *extra: str) -> Run:
    proc = subprocess.run(
        [sys.executable, "-m", "proxy", "demo", "--scenario", scenario, "--plain"]
        + ["--rps", RPS, "--duration", "90", "--out", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=150,
    )
    return Run(scenario, proc.returncode, proc.stdout, proc.stderr, out)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    base = tmp_path_factory.mktemp("demo")
    _seed_stale_run(base / "drift")
    return {name: _demo(name, base / name) for name in EXPECTED}


@pytest.mark.parametrize("scenario", list(EXPECTED))
def test_each_scenario_ends_as_its_name_says(runs: dict[str, Run], scenario: str) -> None:
    run = runs[scenario]
    assert run.returncode == 0, run.text
    assert "result: OK" in run.stdout, run.text
    label, causes = EXPECTED[scenario]
    m = OUTCOME.search(run.stdout)
    assert m is not None, run.text
    outcome, _took, actor, named, verdict = m.groups()  # the duration is the demo's --duration to bound
    assert outcome == label and verdict == "as expected", run.text
    assert actor in ("controller", "tripwire"), run.text
    if causes:
        assert named is not None and set(named.split(", ")) & set(causes), run.text
    # The state's reason is the deciding decision's: it names the cause, in its own words.
    state = json.loads((run.out / "state" / "rollguard-state.json").read_text())
    assert state["phase"] == ("promoted" if label == "PROMOTED" else "rolled_back"), state
    reason = {
        "good": "promoting",
        "latency": "p95",
        "errors": "fail",
        "drift": "decisions differ",
        "schema": "fail",
    }[scenario]
    assert reason in state["reason"] or "decision_delta" in state["reason"], state["reason"]
    summary = run.summary()
    assert summary["ok"] is True and summary["time_to_decision_s"] > 0, summary
    assert bool(summary["causes"]) == bool(causes), summary
    assert summary["outcome"] == label and summary["phase"] == state["phase"]


@pytest.mark.parametrize("scenario", list(EXPECTED))
def test_no_client_ever_sees_an_error(runs: dict[str, Run], scenario: str) -> None:
    run = runs[scenario]
    assert re.search(r"^  client errors: 0$", run.stdout, re.M), run.text
    assert re.search(r"\b0 errors\b", run.stdout), run.text
    assert re.search(r"\b[1-9]\d* rejected by contract\b", run.stdout), "the ~2% invalid requests"
    summary = run.summary()
    assert summary["errors"] == 0, summary
    # Shed sends are the client's own limit (64 in flight) after a pause of the shared event loop, never
    # an answer. How many depends on how busy the two cores are (the proxy's throughput is measured by
    # benchmarks/, not here); most of the traffic must still have been sent, or the run proved little.
    assert summary["shed"] <= summary["sent"] // 10, summary
    # The proxy's own count (GET /metrics) agrees with what the clients saw.
    answered = summary["answered"]
    assert isinstance(answered, dict)
    totals = summary["proxy_requests_total"]
    assert isinstance(totals, dict)
    assert {v: totals.get(v, 0) for v in answered} == answered, summary


@pytest.mark.parametrize("scenario", ["errors", "schema"])
def test_a_fault_only_live_traffic_reaches_is_caught_in_canary_and_hidden_by_the_fallback(
    runs: dict[str, Run], scenario: str
) -> None:
    run = runs[scenario]
    assert "live fault applied to v2 as the canary began" in run.stdout, run.text
    fell_back = re.search(r"^fallback: (\d+) failed candidate attempts", run.stdout, re.M)
    assert fell_back is not None and int(fell_back[1]) > 0, run.text
    kind = {"errors": "http_5xx", "schema": "contract"}[scenario]
    assert (
        f"({kind} " in fell_back.string[fell_back.start() : fell_back.string.index("\n", fell_back.start())]
    )
    deciding = [d for d in run.decisions() if d["action"] == "ROLLBACK"]
    assert len(deciding) == 1 and deciding[0]["before"]["phase"] == "canary", deciding


@pytest.mark.parametrize("scenario", ["latency", "drift"])
def test_a_fault_the_shadow_sees_is_caught_before_any_client_meets_it(
    runs: dict[str, Run], scenario: str
) -> None:
    run = runs[scenario]
    rollback = [d for d in run.decisions() if d["action"] == "ROLLBACK"]
    assert len(rollback) == 1 and rollback[0]["actor"] == "controller", rollback
    assert rollback[0]["before"]["phase"] == "shadow", rollback
    assert re.search(r"^  candidate v2: 0 requests$", run.stdout, re.M), run.text


@pytest.mark.parametrize("scenario", list(EXPECTED))
def test_artifacts_are_written_by_rollguard_report(runs: dict[str, Run], scenario: str) -> None:
    run = runs[scenario]
    plan = (run.out / "canary_plan.md").read_text()
    assert "10% -> 25% -> 50% -> 100%" in plan, plan
    assert "500 pairs" in plan and "10 pp" in plan, plan
    decisions = (run.out / "rollout_decision.txt").read_text()
    final = "PROMOTE" if scenario == "good" else "ROLLBACK"
    assert re.search(rf"^\S+\s+{final}\s+by (controller|tripwire)", decisions, re.M), decisions
    assert re.search(r"^\S+\s+start\s+by demo", decisions, re.M), decisions
    assert json.loads((run.out / "shadow_eval.json").read_text())["versions"]["candidate"] == "v2"
    staging = json.loads((run.out / "staging_report.json").read_text())
    assert staging["versions"] == {"baseline": "v1", "candidate": "v2"}
    infer = staging["routes"]["infer"]
    # Every scenario mirrors first; some roll back before the candidate answers a client.
    assert infer["shadow"]["sent"] > 0 and infer["versions"]["baseline"]["requests"] > 0
    assert staging["rollout"]["phase"] == ("promoted" if scenario == "good" else "rolled_back")
    # The proxy wrote the same four files itself the moment the rollout ended (reports.dir's default).
    ended = [
        p for p in (run.out / "state" / "reports").iterdir() if p.name.endswith(staging["rollout"]["phase"])
    ]
    assert len(ended) == 1, ended
    names = {"staging_report.json", "shadow_eval.json", "canary_plan.md", "rollout_decision.txt"}
    assert {p.name for p in ended[0].iterdir()} == names
    for name in sorted(names):
        assert re.search(rf"^  {re.escape(name)}\s+{re.escape(str(run.out / name))}$", run.stdout, re.M)


def test_good_walks_shadow_and_every_step_then_promotes(runs: dict[str, Run]) -> None:
    run = runs["good"]
    entries = run.decisions()
    moves = [(d["action"], d["actor"], d["weight"]) for d in entries if d["action"] != "HOLD"]
    assert moves == [
        ("start", "demo", 0.0),
        ("PROCEED", "controller", 10.0),  # out of the shadow
        ("PROCEED", "controller", 25.0),
        ("PROCEED", "controller", 50.0),
        ("PROMOTE", "controller", 100.0),
    ], moves
    assert all(d["gates"] for d in entries if d["actor"] == "controller")
    # The shadow phase's evidence: the candidate answered no client while it was shadowed.
    proceed = next(d for d in entries if d["action"] == "PROCEED")
    assert proceed["before"]["phase"] == "shadow"
    assert proceed["window"]["candidate"]["requests"] == 0
    steps = re.findall(
        r"^  (shadow|\d+%)\s+[\d.]+s  v1 (\d+) requests .* v2 (\d+) requests", run.stdout, re.M
    )
    assert [s[0] for s in steps] == ["shadow", "10%", "25%", "50%"], run.text
    assert all(int(v2) > 0 for label, _, v2 in steps if label != "shadow"), steps
    # The timeline in the summary lists the same moves, HOLDs folded.
    timeline = run.stdout[run.stdout.index("decision timeline") :]
    assert re.search(r"PROMOTE\s+by controller\s+100%", timeline), timeline


def test_good_shadow_eval_and_noise(runs: dict[str, Run]) -> None:
    run = runs["good"]
    doc = json.loads((run.out / "shadow_eval.json").read_text())
    ev = doc["routes"]["infer"]
    assert ev["compared"] >= 500 and ev["noise_pairs"] >= 50, ev
    fields = {
        verdict: {f["field"] for f in ev["fields"][verdict]} for verdict in ("real", "noise", "undecided")
    }
    # The candidate's small drift moves every score: a real difference, never taken for noise.
    assert "/score" in fields["real"] | fields["undecided"] and "/score" not in fields["noise"], fields
    assert {"/prediction_id", "/served_at"} <= fields["noise"], fields
    lo, hi = ev["decision_divergence_pp"]["ci95"]
    assert 0 <= lo <= ev["decision_divergence_pp"]["value"] <= hi < 10, ev["decision_divergence_pp"]
    assert f"written by `rollguard report` to {run.out / 'shadow_eval.json'}" in run.stdout


def test_plain_mode_prints_a_line_a_second(runs: dict[str, Run]) -> None:
    run = runs["good"]
    lines = PLAIN.findall(run.stdout)
    assert len(lines) >= 5, run.text
    assert all(
        re.match(r"(-|shadow|canary step \d/4|promoted) weight (-|\d+%) \| last ", x) for _, x in lines
    )
    assert any(x.startswith("canary step 1/4 weight 10%") for _, x in lines), lines
    assert any(re.search(r"\| shadow sent=[1-9]\d* compared=[1-9]\d* div=", x) for _, x in lines), lines
    assert not any("shadow sent=" in x for _, x in lines if x.startswith("canary")), lines
    assert any("last PROCEED by controller" in x for _, x in lines), lines
    # Where to look while it runs, printed once: the status page and the file holding its token.
    doors = re.findall(
        r"^status page (http://127\.0\.0\.1:\d+)/ui  token in (\S+)  \(admin API (\S+)\)$", run.stdout, re.M
    )
    assert len(doors) == 1, run.text
    admin, token_file, api = doors[0]
    assert api == admin and token_file == str(run.out / "demo-token")
    assert run.stdout.index("status page") < run.stdout.index("last PROCEED")


def test_a_rerun_starts_from_a_clean_state(runs: dict[str, Run]) -> None:
    run = runs["drift"]  # its folder held a promoted rollout of an earlier run
    entries = run.decisions()
    assert entries[0]["action"] == "start" and entries[0]["before"]["revision"] == 1
    assert json.loads((run.out / "shadow_eval.json").read_text())["rollout_id"] != STALE["rollout_id"]
    assert (run.out / "notes.txt").read_text() == "not the demo's"  # only the demo's own files are replaced
    token = (run.out / "demo-token").read_text().strip()
    assert token and token not in run.stdout + run.stderr + (run.out / "rollguard.yaml").read_text()
    assert "pii:\n    key: file:pii-key" in (run.out / "rollguard.yaml").read_text()


def test_a_rollout_that_does_not_end_in_time_is_exit_1(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "proxy", "demo", "--duration", "1", "--rps", "50", "--plain"]
        + ["--out", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "outcome: UNDECIDED (still shadow)" in proc.stdout and "NOT as expected" in proc.stdout
    assert "result: FAILED (unexpected outcome)" in proc.stdout
    assert "had not ended when --duration (1s) ran out" in proc.stdout


def test_bad_usage_is_exit_2(tmp_path: Path) -> None:
    for bad in (["--duration", "0"], ["--scenario", "nope"]):
        proc = subprocess.run(
            [sys.executable, "-m", "proxy", "demo", *bad, "--plain", "--out", str(tmp_path / "d")],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert proc.returncode == 2
        assert bad[0] in proc.stderr
