"""``rollguard backtest``: a trace replayed through the live controller code, as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from proxy.app.backtest import backtest
from proxy.config.load import load_config
from proxy.errors import TraceError
from proxy.rollout.trace import Outcome, TracedRequest, parse_line
from tests.helpers.config import config_doc, write_config
from tests.helpers.traces import traced_requests, write_trace

# Small windows and loose absolute gates, so a healthy candidate walks every step in a short trace.
CANARY = {
    "weight": 0,
    "interval": "10s",
    "steps": [10, 50, 100],
    "shadow_samples": 0,
    "min_samples": 20,
    "gates": {"error_rate": 0.05, "latency_p95_ms": 1000, "decision_delta_pp": 25},
}


def _config(tmp_path: Path, **canary: Any) -> Path:
    doc = config_doc(tmp_path, "http://127.0.0.1:9", "http://127.0.0.1:10", canary={**CANARY, **canary})
    return write_config(tmp_path, doc)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", "backtest", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ},
        check=False,
    )


def _json_lines(out: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    docs = [orjson.loads(line) for line in out.splitlines()]
    assert docs and docs[-1].get("summary") is True
    return docs[:-1], docs[-1]


def test_a_healthy_candidate_is_promoted_step_by_step(tmp_path: Path) -> None:
    trace = write_trace(tmp_path / "aa.jsonl", traced_requests(seconds=300, rps=100, seed=1))
    res = _run("--config", str(_config(tmp_path)), str(trace), "--json")
    assert res.returncode == 0, res.stderr
    decisions, summary = _json_lines(res.stdout)
    assert summary["outcome"] == "promoted" and summary["rolled_back_by"] is None
    moves = [(d["action"], d["weight"]) for d in decisions if d["action"] in ("start", "PROCEED", "PROMOTE")]
    assert moves == [("start", 10.0), ("PROCEED", 50.0), ("PROMOTE", 100.0)]
    assert all(d["t"] % 10 == 0 for d in decisions if d["actor"] == "controller")  # one per window end
    assert summary["windows"] == len([d for d in decisions if d["actor"] == "controller"])
    assert summary["observed"]["candidate"] > 0 and summary["observed"]["baseline"] > 0


def test_a_candidate_that_fails_everything_is_rolled_back_by_the_trip_wire_within_a_second(
    tmp_path: Path,
) -> None:
    trace = write_trace(
        tmp_path / "broken.jsonl", traced_requests(seconds=120, rps=100, seed=2, candidate_error=1)
    )
    res = _run("--config", str(_config(tmp_path)), str(trace), "--json")
    assert res.returncode == 0, res.stderr
    decisions, summary = _json_lines(res.stdout)
    assert summary["outcome"] == "rolled_back" and summary["rolled_back_by"] == "tripwire"
    assert summary["ended_at"] < 1.0  # the rollout started at t=0 at 10%
    assert decisions[-1]["actor"] == "tripwire" and decisions[-1]["weight"] == 0


def test_a_slower_candidate_is_rolled_back_by_the_gates(tmp_path: Path) -> None:
    trace = write_trace(
        tmp_path / "slow.jsonl", traced_requests(seconds=300, rps=100, seed=3, candidate_slowdown=3.0)
    )
    res = _run("--config", str(_config(tmp_path, gates={"latency_p95_ms": 120})), str(trace))
    assert res.returncode == 0, res.stderr
    last = res.stdout.strip().splitlines()[-1]
    assert last.startswith("outcome: rolled_back by the gates (latency_p95, latency_p99)"), res.stdout


def test_the_replay_is_a_function_of_the_trace_and_the_seed(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path))
    requests = traced_requests(seconds=60, rps=50, seed=4)
    for r in requests[::2]:  # half without a sticky key: routed by the seeded draw
        requests[requests.index(r)] = r._replace(key=None)
    lines = [r.to_line() for r in requests]

    async def run(seed: int) -> dict[str, Any]:
        return (await backtest(config, lines, seed=seed)).to_json()

    import asyncio

    first, again, other = asyncio.run(run(1)), asyncio.run(run(1)), asyncio.run(run(2))
    assert first == again
    assert first["observed"] != other["observed"]


async def test_sticky_keys_are_routed_by_the_live_hash(tmp_path: Path) -> None:
    # At 10% every request of one user goes to the same version: the observed split moves by users.
    config = load_config(_config(tmp_path, gates={"error_rate": 0.05, "latency_p95_ms": 1000}))
    one_user = [
        TracedRequest(i * 0.01, "u-same", None, Outcome(200, 20.0, 0.3), Outcome(200, 20.0, 0.3))
        for i in range(500)
    ]
    summary = await backtest(config, [r.to_line() for r in one_user])
    assert sorted(summary.observed.values()) == [0, 500]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"{not json", "trace line 2: not JSON"),
        (
            b'{"t": 1, "baseline": {"status": 200, "latency_ms": 1}}',
            "trace line 2: candidate must be an object",
        ),
        (b'{"t": 1, "baseline": {"status": 99, "latency_ms": 1}, "candidate": {}}', "baseline.status"),
        (b'{"t": 1, "baseline": {"status": 200, "latency_ms": -1}, "candidate": {}}', "baseline.latency_ms"),
        (b'{"t": "1", "baseline": {}, "candidate": {}}', "trace line 2: t must be"),
        (
            b'{"t": 0.5, "baseline": {"status": 200, "latency_ms": 1}, "candidate": {"status": 200, '
            b'"latency_ms": 1}}',
            "trace line 2: t 0.5 is before the previous line's 1",
        ),
        (
            b'{"t": 2, "route": "nope", "baseline": {"status": 200, "latency_ms": 1}, '
            b'"candidate": {"status": 200, "latency_ms": 1}}',
            "route 'nope' is not in the config's routes",
        ),
    ],
)
def test_a_bad_trace_line_is_named_by_its_number_and_exits_2(
    tmp_path: Path, line: bytes, message: str
) -> None:
    good = b'{"t": 1, "baseline": {"status": 200, "latency_ms": 1}, '
    good += b'"candidate": {"status": 200, "latency_ms": 1}}'
    trace = tmp_path / "bad.jsonl"
    trace.write_bytes(good + b"\n" + line + b"\n")
    res = _run("--config", str(_config(tmp_path)), str(trace))
    assert res.returncode == 2
    assert message in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


def test_trace_lines_round_trip_and_keep_optional_fields() -> None:
    req = TracedRequest(
        1.5, "u-1", "infer", Outcome(200, 12.0, 0.4, True, 0.002, 1), Outcome(0, 2000.0, None, False)
    )
    again = parse_line(req.to_line(), 1)
    assert again == req
    assert again.candidate.failure_kind == "connect"
    assert Outcome(502, 1.0).failure_kind == "http_5xx"
    assert Outcome(200, 1.0, contract_ok=False).failure_kind == "contract"
    assert Outcome(200, 1.0).failure_kind is None
    with pytest.raises(TraceError, match="trace line 7: not JSON"):
        parse_line(b'{"t": 0, "baseline": {"status": 200, "latency_ms": 1e999}, "candidate": {}}', 7)
    with pytest.raises(TraceError, match="trace line 8: baseline.latency_ms"):
        parse_line(b'{"t": 0, "baseline": {"status": 200, "latency_ms": true}, "candidate": {}}', 8)


def test_a_step_that_cannot_decide_in_max_hold_says_so_at_its_first_window(tmp_path: Path) -> None:
    # 20 requests a minute at 1%: the gates would need days; the operator reads it in the first HOLD.
    config = _config(
        tmp_path, interval="60s", steps=[1, 5, 25, 50, 100], min_samples=1, gates={"error_rate": 0.005}
    )
    trace = write_trace(tmp_path / "quiet.jsonl", traced_requests(seconds=600, rps=20 / 60, seed=5))
    res = _run("--config", str(config), str(trace), "--json")
    assert res.returncode == 0, res.stderr
    decisions, _ = _json_lines(res.stdout)
    holds = [d for d in decisions if d["action"] == "HOLD" and d["reason"].startswith("inconclusive")]
    assert holds, decisions
    assert "more candidate requests" in holds[0]["reason"] or "waiting will not decide" in holds[0]["reason"]
    assert any("more than max_hold leaves" in d["reason"] for d in holds), [d["reason"] for d in holds]


def test_paired_decisions_prove_a_tight_decision_gate_that_unpaired_groups_cannot(tmp_path: Path) -> None:
    # The same model on both sides, +-1 pp on decisions: two unpaired groups of a few thousand requests
    # cannot bound their difference that tightly, pairs of the same requests can (they never disagree).
    trace = write_trace(tmp_path / "aa.jsonl", traced_requests(seconds=300, rps=100, seed=3))
    tight = {"error_rate": 0.05, "latency_p95_ms": 1000, "decision_delta_pp": 1}

    def outcome(**canary: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        res = _run("--config", str(_config(tmp_path, gates=tight, **canary)), str(trace), "--json")
        assert res.returncode == 0, res.stderr
        decisions, summary = _json_lines(res.stdout)
        return summary, decisions

    unpaired, decisions = outcome()
    assert unpaired["outcome"] != "promoted"
    assert any("decision_delta" in d["reason"] and "n=" in d["reason"] for d in decisions)
    paired, decisions = outcome(paired_sample=0.5)
    assert paired["outcome"] == "promoted", paired
    assert any("paired" in str(d.get("gates")) for d in decisions)


def test_users_who_always_fail_are_counted_by_user_not_by_request(tmp_path: Path) -> None:
    # Sticky traffic where 5% of users fail every request on both versions: the replayed evidence knows
    # the failures came in clumps (the sticky key reaches the clustered variance), and the error gate
    # says by how much the counts were discounted.
    reqs = []
    for i in range(30_000):
        user = i % 500
        out = Outcome(503 if user < 25 else 200, 20.0, 0.3)
        reqs.append(TracedRequest(i * 0.01, f"u-{user}", None, out, out))
    trace = write_trace(tmp_path / "sticky.jsonl", reqs)
    config = _config(tmp_path, gates={"error_rate": 0.5, "latency_p95_ms": 1000}, steps=[50, 100])
    res = _run("--config", str(config), str(trace), "--json")
    assert res.returncode == 0, res.stderr
    decisions, summary = _json_lines(res.stdout)
    details = [g["detail"] for d in decisions for g in d.get("gates") or [] if g["gate"] == "error_rate"]
    assert any("clustered x" in text for text in details), details
    assert summary["rolled_back_by"] != "gates", summary
