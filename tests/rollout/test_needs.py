"""What a step still needs: candidate requests per undecided gate, and the time at the step's rate."""

from __future__ import annotations

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


def verdict(ev: Evidence, gate: str) -> str:
    return next(g.verdict for g in judge(ev, POLICY) if g.gate == gate)


def test_a_clean_error_gate_needs_what_then_passes_it() -> None:
    base = window(20000)
    needs = evidence_needed(Evidence(base, window(250)), POLICY, undecided("error_rate"), 1.0)
    n = needs.per_gate["error_rate"]
    assert n is not None and needs.more == n - 250
    # The prediction holds the candidate's rate (none failed) and shrinks the variance: at that many
    # clean requests the gate passes; at half of them it does not yet.
    assert verdict(Evidence(base, window(n * 21 // 20)), "error_rate") == "PASS"
    assert verdict(Evidence(base, window(n // 2)), "error_rate") == "INCONCLUSIVE"


def test_the_decision_gate_needs_its_interval_within_the_margin() -> None:
    base = window(20000, positives=5000)
    ev = Evidence(base, window(1000, positives=250))
    n = evidence_needed(ev, POLICY, undecided("decision_delta"), 1.0).per_gate["decision_delta"]
    # Two unpaired groups at 25%, the baseline held at its 20,000: over a hundred thousand for +-1 pp.
    assert n is not None and n > 100_000
    m = n * 21 // 20  # the prediction is within a few percent (the shares' 1/2-count adjustments)
    assert verdict(Evidence(base, window(m, positives=m // 4)), "decision_delta") == "PASS"
    assert verdict(Evidence(base, window(n // 2, positives=n // 8)), "decision_delta") == "INCONCLUSIVE"


def test_a_gate_the_candidate_is_beyond_cannot_be_waited_out() -> None:
    ev = Evidence(baseline=window(20000), candidate=window(1000, failures=10))  # 1% against a 0.5% gate
    needs = evidence_needed(ev, POLICY, undecided("error_rate", "latency_p95"), 1.0)
    assert needs.per_gate["error_rate"] is None and needs.total is None and needs.more is None
    assert needs.per_gate["latency_p95"] is not None  # 30 ms, far under 120 ms


def test_a_wider_step_margin_needs_less() -> None:
    ev = Evidence(window(20000, positives=5000), window(1000, positives=250))
    full = evidence_needed(ev, POLICY, undecided("decision_delta"), 1.0).per_gate["decision_delta"]
    wide = evidence_needed(ev, POLICY, undecided("decision_delta"), 10.0).per_gate["decision_delta"]
    assert full is not None and wide is not None and wide < full / 10


def test_time_is_the_missing_requests_at_the_steps_candidate_rate() -> None:
    assert eta_seconds(Needs({"error_rate": 600}, have=200), 60.0, 4000, 0.05) == 120.0
    # Before the candidate has requests, its rate is the step's traffic times the weight.
    assert eta_seconds(Needs({"error_rate": 600}, have=0), 60.0, 600, 0.01) == 6000.0
    assert eta_seconds(Needs({}, have=10), 60.0, 1000, 0.01) is None


def test_before_the_candidate_has_samples_the_baselines_rates_stand_in() -> None:
    ev = Evidence(baseline=window(20000, positives=5000), candidate=window(3, positives=1))
    needs = evidence_needed(ev, POLICY, undecided("error_rate", "decision_delta"), 1.0)
    assert needs.per_gate["min_samples"] == 200
    clean = evidence_needed(Evidence(window(20000), window(250)), POLICY, undecided("error_rate"), 1.0)
    assert needs.per_gate["error_rate"] == clean.per_gate["error_rate"]  # a clean baseline stands in
    assert needs.per_gate["decision_delta"] is not None and needs.per_gate["decision_delta"] > 5000


def test_decided_gates_need_nothing() -> None:
    ev = Evidence(baseline=window(20000), candidate=window(3000))
    gates = judge(ev, POLICY)
    needs = evidence_needed(ev, POLICY, gates, 1.0)
    assert set(needs.per_gate) == {g.gate for g in gates if g.verdict in ("INCONCLUSIVE", "NODATA")} - {
        "score_shift",
        "policy_violations",
        "cost_per_1k",
    }
