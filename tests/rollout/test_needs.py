"""What a step still needs: candidate requests per undecided gate, and the time at the step's rate."""

from __future__ import annotations

import math

from proxy.config.model import CanaryConfig
from proxy.rollout.decide import GateResult
from proxy.rollout.evidence import Evidence, VersionWindow
from proxy.rollout.gates import GatePolicy, judge
from proxy.rollout.needs import Needs, eta_seconds, evidence_needed

POLICY = GatePolicy.from_config(CanaryConfig())


def window(n: int, *, failures: int = 0, positives: int = 0, latency_s: float = 0.03) -> VersionWindow:
    w = VersionWindow()
    for i in range(n):
        w.add(
            latency_s=latency_s,
            failed=i < failures,
            score=0.9 if i < positives else 0.1,
            decision=i < positives,
        )
    return w


def undecided(*gates: str) -> list[GateResult]:
    return [GateResult(g, "INCONCLUSIVE", None, None, 0.0, None, "") for g in gates]


def test_a_clean_error_gate_needs_the_rule_of_three() -> None:
    ev = Evidence(baseline=window(20000), candidate=window(250))
    needs = evidence_needed(ev, POLICY, undecided("error_rate"), 0.05)
    assert needs.per_gate == {"error_rate": math.ceil(-math.log(0.05) / 0.005)}  # 600 clean requests
    assert needs.more == 600 - 250


def test_the_decision_gate_needs_its_interval_within_the_margin() -> None:
    ev = Evidence(baseline=window(20000, positives=5000), candidate=window(1000, positives=250))
    needed = evidence_needed(ev, POLICY, undecided("decision_delta"), 1000 / 21000).per_gate["decision_delta"]
    z2 = 1.6448536269514722**2
    assert needed == math.ceil(z2 * (0.1875 + 0.1875 / 20) / 0.01**2)  # ~5,300 decided candidate requests


def test_a_gate_the_candidate_is_beyond_cannot_be_waited_out() -> None:
    ev = Evidence(baseline=window(20000), candidate=window(1000, failures=10))  # 1% against a 0.5% gate
    needs = evidence_needed(ev, POLICY, undecided("error_rate", "latency_p95"), 0.05)
    assert needs.per_gate["error_rate"] is None and needs.total is None and needs.more is None
    assert needs.per_gate["latency_p95"] is not None  # 30 ms, far under 120 ms


def test_time_is_the_missing_requests_at_the_steps_candidate_rate() -> None:
    assert eta_seconds(Needs({"error_rate": 600}, have=200), 60.0, 4000, 0.05) == 120.0
    # Before the candidate has requests, its rate is the step's traffic times the weight.
    assert eta_seconds(Needs({"error_rate": 600}, have=0), 60.0, 600, 0.01) == 6000.0
    assert eta_seconds(Needs({}, have=10), 60.0, 1000, 0.01) is None


def test_before_the_candidate_has_samples_the_baselines_rates_stand_in() -> None:
    ev = Evidence(baseline=window(20000, positives=5000), candidate=window(3, positives=1))
    needs = evidence_needed(ev, POLICY, undecided("error_rate", "decision_delta"), 0.01)
    assert needs.per_gate["min_samples"] == 200
    assert needs.per_gate["error_rate"] == 600  # a clean baseline: the rule of three at 0.5%
    assert needs.per_gate["decision_delta"] is not None and needs.per_gate["decision_delta"] > 5000


def test_decided_gates_need_nothing() -> None:
    ev = Evidence(baseline=window(20000), candidate=window(3000))
    gates = judge(ev, POLICY)
    needs = evidence_needed(ev, POLICY, gates, 3000 / 23000)
    assert set(needs.per_gate) == {g.gate for g in gates if g.verdict in ("INCONCLUSIVE", "NODATA")} - {
        "score_shift",
        "policy_violations",
        "cost_per_1k",
    }
