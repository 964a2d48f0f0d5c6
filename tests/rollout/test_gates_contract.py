"""Reference windows and what the gates say about them, number for number: the verdict, the estimate,
the baseline's, the fail p-value and the sentence the decision log and /status show, for every branch
of every gate (pass, fail on the threshold, fail against the baseline, a breach both versions share,
not yet clear, too few, no data, a step of less exposure).

The windows are built as in ``test_gates.py`` (exactly known content, no randomness). The verdicts
follow from the module docstring; the numbers and sentences are this implementation's, pinned so that a
change to any of them is deliberate: a different p-value is a different rollback, a different sentence
a different explanation to an operator. After an intended change, print ``report(name)`` for the
scenarios that moved and review the differences before replacing them.
"""

from __future__ import annotations

import math
import textwrap
from typing import Any

import pytest

from proxy.config.model import CanaryConfig
from proxy.rollout.decide import GATES, Gate, GateResult
from proxy.rollout.evidence import Evidence, VersionWindow, cluster_of
from proxy.rollout.gates import MIN_STEP_SAMPLES, GatePolicy, judge, judge_with_plan
from tests.rollout.test_gates import BASE, users, window


def _costly(n: int, mean: float) -> VersionWindow:
    w = VersionWindow()
    for i in range(n):
        w.add(latency_s=0.03, failed=False, score=None, decision=None, cost=mean * (0.5 + (i % 2)))
    return w


def _mildly_clustered() -> VersionWindow:
    """800 sticky users of 10 requests: every 5th fails a third of its requests (design effect ~1.5)."""
    w = VersionWindow()
    for u in range(800):
        for r in range(10):
            failed = (u % 5 == 0 and r % 3 == 0) or (r == 0 and u % 7 == 0)
            w.add(latency_s=0.03, failed=failed, score=None, decision=None, cluster=cluster_of(f"m{u}"))
    return w


def _clustered_decisions() -> VersionWindow:
    """400 sticky users of 10 decided requests: every 4th user is always positive, the rest never."""
    w = VersionWindow()
    for u in range(400):
        for _ in range(10):
            w.add(latency_s=0.03, failed=False, score=None, decision=u % 4 == 0, cluster=cluster_of(f"d{u}"))
    return w


def _pairs_both_ways(b: VersionWindow, c: VersionWindow, n: int, up: int, down: int) -> Evidence:
    """``n`` pairs: ``up`` where only the candidate said yes, ``down`` where only the baseline did."""
    ev = Evidence(b, c)
    for i in range(n):
        ev.pairs.add(i < up or i % 4 == 0, up <= i < up + down or i % 4 == 0)
    return ev


def _pairs(b: VersionWindow, c: VersionWindow, pairs: list[tuple[bool, bool]]) -> Evidence:
    ev = Evidence(b, c)
    for candidate, baseline in pairs:
        ev.pairs.add(candidate, baseline)
    return ev


def _paired(b: VersionWindow, c: VersionWindow, pairs: int, discordant: int = 0) -> Evidence:
    ev = Evidence(b, c)
    for i in range(pairs):
        ev.pairs.add(i % 4 == 0 or i < discordant, i % 4 == 0)
    return ev


# name: (evidence, policy overrides, scale, the gates it is about); windows shared where they repeat.
_B40K = window(40000, failures=40, positives=9200)
_B3800 = window(3800, failures=38, positives=874)
SCENARIOS: dict[str, tuple[Evidence, dict[str, Any], float, tuple[Gate, ...]]] = {
    "aa-large-paired": (_paired(_B40K, window(20000, failures=20, positives=4600), 2000), {}, 1.0, GATES),
    "aa-large-paired-discordant": (
        _paired(_B40K, window(20000, failures=20, positives=4600), 400, 60),
        {},
        1.0,
        GATES,
    ),
    "aa-small": (Evidence(BASE, window(200, positives=46)), {}, 1.0, GATES),
    "aa-small-first-step": (Evidence(BASE, window(200, positives=46)), {}, 50.0, GATES),
    "too-few": (Evidence(BASE, window(25, positives=6)), {}, 50.0, GATES),
    "errors-absolute": (Evidence(BASE, window(200, failures=8, positives=46)), {}, 1.0, ("error_rate",)),
    "errors-relative": (
        Evidence(_B3800, window(1000, failures=40, positives=230)),
        {"error_rate": 0.05},
        1.0,
        ("error_rate",),
    ),
    "errors-relative-early": (
        Evidence(_B3800, window(200, failures=10, positives=46)),
        {"error_rate": 0.05},
        1.0,
        ("error_rate",),
    ),
    "errors-relative-widened": (
        Evidence(_B3800, window(1000, failures=40, positives=230)),
        {"error_rate": 0.05},
        5.0,
        ("error_rate",),
    ),
    "errors-small-significant": (
        Evidence(window(50000, failures=50), window(50000, failures=150)),
        {},
        1.0,
        ("error_rate",),
    ),
    "errors-shared": (
        Evidence(window(40000, failures=400), window(4000, failures=44)),
        {},
        1.0,
        ("error_rate",),
    ),
    "errors-shared-worse": (
        Evidence(window(40000, failures=400), window(4000, failures=200)),
        {},
        1.0,
        ("error_rate",),
    ),
    "errors-none-allowed": (
        Evidence(BASE, window(300, failures=1, positives=69)),
        {"error_rate": 0.0},
        1.0,
        ("error_rate",),
    ),
    "errors-none-allowed-clean": (
        Evidence(BASE, window(300, positives=69)),
        {"error_rate": 0.0},
        1.0,
        ("error_rate",),
    ),
    "errors-four-steps": (
        Evidence(_B3800, window(1000, failures=30, positives=230)),
        {"error_rate": 0.05, "steps_judged": 4},
        1.0,
        ("error_rate",),
    ),
    "errors-clustered": (
        Evidence(users(400, 40, first=1000), users(40, 8)),
        {"error_rate": 0.5},
        1.0,
        ("error_rate",),
    ),
    "latency-relative": (
        Evidence(BASE, window(200, median_ms=45, positives=46)),
        {},
        1.0,
        ("latency_p95", "latency_p99"),
    ),
    "latency-rank-shift": (
        Evidence(BASE, window(600, slow_share=0.06, slow_factor=4.05, positives=138)),
        {},
        1.0,
        ("latency_p95", "latency_p99"),
    ),
    "latency-absolute": (
        Evidence(window(40000, median_ms=58), window(4000, median_ms=66)),
        {},
        1.0,
        ("latency_p95", "latency_p99"),
    ),
    "latency-shared": (
        Evidence(window(4000, median_ms=80), window(200, median_ms=80)),
        {},
        1.0,
        ("latency_p95", "latency_p99"),
    ),
    "latency-under-a-missed-threshold": (
        Evidence(window(4000, median_ms=80), window(2000, median_ms=30)),
        {},
        1.0,
        ("latency_p95", "latency_p99"),
    ),
    "latency-slightly-slower": (
        Evidence(BASE, window(2000, median_ms=33, positives=460)),
        {},
        1.0,
        ("latency_p95", "latency_p99"),
    ),
    "latency-tail-only": (
        Evidence(window(40000, median_ms=30), window(2000, median_ms=30, slow_share=0.02, slow_factor=8.0)),
        {},
        1.0,
        ("latency_p95", "latency_p99"),
    ),
    "latency-p99-absolute": (
        Evidence(window(40000, median_ms=100), window(4000, median_ms=140)),
        {},
        1.0,
        ("latency_p95", "latency_p99"),
    ),
    "latency-fast": (
        Evidence(window(4000, median_ms=3), window(400, median_ms=3)),
        {},
        1.0,
        ("latency_p95", "latency_p99"),
    ),
    "latency-no-threshold": (
        Evidence(BASE, window(400, positives=92)),
        {"latency_p95_ms": 0.0, "latency_p99_ms": 0.0},
        1.0,
        ("latency_p95", "latency_p99"),
    ),
    "decisions-high": (
        Evidence(window(20000, positives=4600), window(20000, positives=5600)),
        {},
        1.0,
        ("decision_delta",),
    ),
    "decisions-low": (
        Evidence(window(20000, positives=4600), window(20000, positives=3600)),
        {},
        1.0,
        ("decision_delta",),
    ),
    "decisions-few": (Evidence(BASE, window(400, decided=150, positives=35)), {}, 1.0, ("decision_delta",)),
    "decisions-none": (
        Evidence(window(4000, decided=0), window(400, decided=0)),
        {},
        1.0,
        ("decision_delta",),
    ),
    "decisions-no-margin": (
        Evidence(window(20000, positives=4600), window(20000, positives=4600)),
        {"decision_delta_pp": 0.0},
        1.0,
        ("decision_delta",),
    ),
    "scores-high": (
        Evidence(window(4000, positives=920), window(1000, positives=230, score_mu=0.6)),
        {},
        1.0,
        ("score_shift",),
    ),
    "scores-pass": (
        Evidence(window(4000, positives=920), window(1000, positives=230, score_mu=-0.7)),
        {},
        1.0,
        ("score_shift",),
    ),
    "scores-open": (
        Evidence(window(4000, positives=920), window(1000, positives=230, score_mu=-0.35)),
        {},
        1.0,
        ("score_shift",),
    ),
    "policy-violation": (Evidence(BASE, window(200, violations=1)), {}, 1.0, ("policy_violations",)),
    "cost-constant-high": (Evidence(BASE, window(200, cost=0.001)), {}, 1.0, ("cost_per_1k",)),
    "cost-varying-pass": (Evidence(_costly(4000, 0.0001), _costly(400, 0.0001)), {}, 1.0, ("cost_per_1k",)),
    "cost-varying-high": (Evidence(_costly(4000, 0.0001), _costly(400, 0.0006)), {}, 1.0, ("cost_per_1k",)),
    "cost-varying-open": (Evidence(_costly(4000, 0.0001), _costly(400, 0.0005)), {}, 1.0, ("cost_per_1k",)),
    "cost-varying-widened": (
        Evidence(_costly(4000, 0.0001), _costly(400, 0.0005)),
        {},
        5.0,
        ("cost_per_1k",),
    ),
    # No baseline at all (its window empty) or a baseline of two requests: the relative tests stand down.
    "no-baseline": (Evidence(VersionWindow(), window(400, failures=1, positives=92)), {}, 1.0, GATES),
    "no-baseline-clean": (
        Evidence(VersionWindow(), window(4000, positives=920)),
        {},
        1.0,
        ("latency_p95", "error_rate"),
    ),
    "baseline-of-two": (Evidence(window(2), window(400, positives=92)), {}, 1.0, ("latency_p95",)),
    # A baseline exactly at the threshold is not over it: the candidate's breach is its own.
    "errors-baseline-at-threshold": (
        Evidence(window(4000, failures=20), window(200, failures=8)),
        {},
        1.0,
        ("error_rate",),
    ),
    "errors-slightly-better": (
        Evidence(window(3800, failures=38), window(1010, failures=10)),
        {"error_rate": 0.05},
        1.0,
        ("error_rate",),
    ),
    "errors-clustered-baseline": (
        Evidence(users(400, 40, first=1000), window(2000, failures=200)),
        {"error_rate": 0.5},
        1.0,
        ("error_rate",),
    ),
    "errors-mildly-clustered": (
        Evidence(window(8000, failures=732), _mildly_clustered()),
        {"error_rate": 0.5},
        1.0,
        ("error_rate",),
    ),
    "latency-threshold-of-10-ms": (
        Evidence(window(4000, median_ms=3), window(400, median_ms=3)),
        {"latency_p95_ms": 10.0},
        1.0,
        ("latency_p95",),
    ),
    "paired-both-ways": (
        _pairs_both_ways(_B40K, window(20000, positives=4600), 400, 30, 10),
        {},
        1.0,
        ("decision_delta",),
    ),
    "paired-all-discordant": (
        _pairs_both_ways(_B40K, window(20000, positives=4600), 300, 300, 0),
        {},
        1.0,
        ("decision_delta",),
    ),
    "paired-without-window-decisions": (
        _pairs_both_ways(window(4000, decided=0), window(400, decided=0), 400, 0, 0),
        {},
        1.0,
        ("decision_delta",),
    ),
    "decisions-clustered": (
        Evidence(window(4000, positives=1000), _clustered_decisions()),
        {},
        1.0,
        ("decision_delta",),
    ),
    "decisions-slightly-high": (
        Evidence(window(20000, positives=4600), window(20000, positives=4900)),
        {},
        1.0,
        ("decision_delta",),
    ),
    "decisions-slightly-low": (
        Evidence(window(20000, positives=4600), window(20000, positives=4300)),
        {},
        1.0,
        ("decision_delta",),
    ),
    "decisions-one-sided-open": (
        Evidence(window(20000, positives=4600), window(4000, positives=980)),
        {},
        1.0,
        ("decision_delta",),
    ),
    "decisions-two-pp": (
        Evidence(window(20000, positives=4600), window(20000, positives=5000)),
        {"decision_delta_pp": 2.0},
        1.0,
        ("decision_delta",),
    ),
    "decisions-no-margin-different": (
        Evidence(window(20000, positives=4600), window(20000, positives=4800)),
        {"decision_delta_pp": 0.0},
        1.0,
        ("decision_delta",),
    ),
    "decisions-candidate-none": (
        Evidence(BASE, window(400, decided=0)),
        {},
        1.0,
        ("decision_delta", "score_shift"),
    ),
    "scores-few": (Evidence(BASE, window(400, decided=150, positives=35)), {}, 1.0, ("score_shift",)),
    "scores-small-but-significant": (
        Evidence(window(4000, positives=920), window(1000, positives=230, score_mu=-0.5)),
        {},
        1.0,
        ("score_shift",),
    ),
    "scores-under-half-the-threshold": (
        Evidence(window(4000, positives=920), window(1000, positives=230, score_mu=-0.45)),
        {},
        1.0,
        ("score_shift",),
    ),
    "cost-constant-at-threshold": (Evidence(BASE, window(200, cost=0.0005)), {}, 1.0, ("cost_per_1k",)),
    "cost-varying-scale-1.5": (
        Evidence(_costly(4000, 0.0001), _costly(400, 0.0005)),
        {},
        1.5,
        ("cost_per_1k",),
    ),
    # Edges: a step of one or two requests (min_samples 1), a threshold below 1 ms, a threshold exactly at
    # the baseline's p95, a baseline without enough latency samples, pairs exactly at the minimum.
    "cost-one-request": (Evidence(BASE, window(1, cost=0.0002)), {"min_samples": 1}, 1.0, ("cost_per_1k",)),
    "cost-two-requests": (Evidence(BASE, _costly(2, 0.0001)), {"min_samples": 1}, 1.0, ("cost_per_1k",)),
    "no-baseline-near-the-threshold": (
        Evidence(VersionWindow(), window(200, median_ms=58)),
        {},
        1.0,
        ("latency_p95",),
    ),
    "latency-sub-ms-threshold": (
        Evidence(window(4000, median_ms=0.3), window(400, median_ms=0.3)),
        {"latency_p95_ms": 0.7},
        1.0,
        ("latency_p95",),
    ),
    "latency-baseline-at-threshold": (
        Evidence(BASE, window(200, median_ms=45, positives=46)),
        {"latency_p95_ms": 1000 * BASE.latency.quantile(0.95)},
        1.0,
        ("latency_p95",),
    ),
    "errors-relative-ratio-3": (
        Evidence(_B3800, window(1000, failures=40, positives=230)),
        {"error_rate": 0.05, "error_ratio": 3.0},
        1.0,
        ("error_rate",),
    ),
    "paired-at-the-floor": (_paired(_B40K, window(20000, positives=4600), 200), {}, 1.0, ("decision_delta",)),
    "paired-every-pair-discordant": (
        _pairs(_B40K, window(20000, positives=4600), [(True, False)] * 300),
        {},
        1.0,
        ("decision_delta",),
    ),
    "decisions-no-margin-far": (
        Evidence(window(20000, positives=4600), window(20000, positives=5600)),
        {"decision_delta_pp": 0.0},
        1.0,
        ("decision_delta",),
    ),
    "decisions-low-two-pp": (
        Evidence(window(20000, positives=4600), window(20000, positives=4200)),
        {},
        1.0,
        ("decision_delta",),
    ),
    "decisions-clustered-baseline": (
        Evidence(_clustered_decisions(), window(4000, positives=1000)),
        {},
        1.0,
        ("decision_delta",),
    ),
    # A baseline that never failed: the gap is the candidate's whole rate, not its rate minus 100%.
    "errors-zero-baseline": (Evidence(window(4000), window(200)), {}, 1.0, ("error_rate",)),
    # Five-request users, a tenth of them failing everything, against independent baseline failures: the
    # relative count is divided by the clustering on both sides.
    "errors-clustered-candidate": (
        Evidence(window(20000, failures=1000), users(400, 40, per_user=5)),
        {"error_rate": 0.5},
        1.0,
        ("error_rate",),
    ),
    # Worse than the baseline for certain, and the bound at the configured margin straddling it.
    "errors-near-the-margin-1.5": (
        Evidence(window(20000, failures=200), window(20000, failures=300)),
        {"error_rate": 0.5},
        1.0,
        ("error_rate",),
    ),
    "errors-near-the-margin-1.58": (
        Evidence(window(20000, failures=200), window(20000, failures=316)),
        {"error_rate": 0.5},
        1.0,
        ("error_rate",),
    ),
    # A whole distribution a third slower on 200 requests: the p95's own bound is unsure, the rank shift
    # (beyond what half the margin would move it) is not.
    "latency-shift-only": (
        Evidence(window(4000), window(200, median_ms=40.0)),
        {"latency_p95_ms": 10000.0, "latency_p99_ms": 10000.0},
        1.0,
        ("latency_p95",),
    ),
    # 15% slower, inside the x1.2 margin: the rank shift is significant, but not beyond half the margin's
    # shift, so it holds for evidence instead of failing a candidate that may be within the margin.
    "latency-shift-inside-margin": (
        Evidence(window(4000), window(200, median_ms=34.5)),
        {"latency_p95_ms": 10000.0, "latency_p99_ms": 10000.0},
        1.0,
        ("latency_p95",),
    ),
    # Two requests (min_samples 1) are enough for a p95 to pass a threshold far above them.
    "latency-two-requests": (
        Evidence(window(4000, median_ms=0.5), window(2, median_ms=0.5)),
        {"min_samples": 1},
        1.0,
        ("latency_p95", "latency_p99"),
    ),
    # 5,000 pairs, 30 where only the baseline said yes: a decrease that is certain *and* shown to be
    # smaller than the margin passes; it is not a regression.
    "paired-a-small-sure-decrease": (
        _pairs_both_ways(_B40K, window(20000, positives=4600), 5000, 0, 30),
        {},
        1.0,
        ("decision_delta",),
    ),
    # A 3x slow path on 5% of requests: the tail test fails it whatever the error margin (its power is
    # tuned to a doubled tail share, not to error_ratio).
    "tail-whatever-the-error-ratio": (
        Evidence(window(4000), window(200, slow_share=0.05, slow_factor=3)),
        {"latency_p95_ms": 10000.0, "latency_p99_ms": 10000.0, "error_ratio": 1.2},
        1.0,
        ("latency_p95", "latency_p99"),
    ),
}


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.6g}"


def line(r: GateResult) -> str:
    head = (
        f"{r.gate} {r.verdict} value={_num(r.value)} baseline={_num(r.baseline)} "
        f"threshold={_num(r.threshold)} p={_num(r.p_value)}"
    )
    return textwrap.fill(f"{head} | {r.detail}", width=100, subsequent_indent="    ")


def report(name: str) -> str:
    evidence, overrides, scale, gates = SCENARIOS[name]
    policy = GatePolicy.from_config(CanaryConfig(), **overrides)
    results = judge(evidence, policy, scale)
    assert [r.gate for r in results] == list(GATES)
    return "\n".join(line(r) for r in results if r.gate in gates)


EXPECTED = {
    "aa-large-paired": """
        latency_p95 PASS value=60.1963 baseline=60.1963 threshold=120 p=1 | latency_p95 60 ms <= 120 ms,
            within x1.2 of the baseline (baseline 60 ms, n=20000)
        latency_p99 PASS value=79.6483 baseline=79.6483 threshold=300 p=1 | latency_p99 80 ms <= 300 ms,
            within x1.5 of the baseline (baseline 80 ms, n=20000)
        error_rate PASS value=0.001 baseline=0.001 threshold=0.005 p=1 | error_rate 0.1% <= 0.5%, within
            +0.5 pp of the baseline (baseline 0.1%, n=20000)
        decision_delta PASS value=0.23 baseline=0.23 threshold=1 p=1 | decision_delta +0.0 pp (candidate
            23.0%, baseline 23.0%, bounds -0.1..+0.1 pp, paired, 2000 pairs) within +-1 pp
        score_shift PASS value=0.0015411 baseline=- threshold=0.2 p=1 | score_shift PSI 0.002, KS D 0.012
            within PSI 0.2 (n=4096)
        policy_violations PASS value=0 baseline=0 threshold=0 p=- | policy_violations 0 <= 0
        cost_per_1k PASS value=0.1 baseline=0.1 threshold=0.5 p=- | cost_per_1k 0.1 vs 0.5 (baseline 0.1,
            n=20000)
    """,
    "aa-large-paired-discordant": """
        latency_p95 PASS value=60.1963 baseline=60.1963 threshold=120 p=1 | latency_p95 60 ms <= 120 ms,
            within x1.2 of the baseline (baseline 60 ms, n=20000)
        latency_p99 PASS value=79.6483 baseline=79.6483 threshold=300 p=1 | latency_p99 80 ms <= 300 ms,
            within x1.5 of the baseline (baseline 80 ms, n=20000)
        error_rate PASS value=0.001 baseline=0.001 threshold=0.005 p=1 | error_rate 0.1% <= 0.5%, within
            +0.5 pp of the baseline (baseline 0.1%, n=20000)
        decision_delta HIGH value=0.23 baseline=0.23 threshold=1 p=0.0452992 | decision_delta +11.2 pp
            (candidate 23.0%, baseline 23.0%, bounds +3.8..+18.7 pp, paired, 400 pairs) beyond +1 pp,
            p=0.045
        score_shift PASS value=0.0015411 baseline=- threshold=0.2 p=1 | score_shift PSI 0.002, KS D 0.012
            within PSI 0.2 (n=4096)
        policy_violations PASS value=0 baseline=0 threshold=0 p=- | policy_violations 0 <= 0
        cost_per_1k PASS value=0.1 baseline=0.1 threshold=0.5 p=- | cost_per_1k 0.1 vs 0.5 (baseline 0.1,
            n=20000)
    """,
    "aa-small": """
        latency_p95 INCONCLUSIVE value=60.1963 baseline=60.1963 threshold=120 p=1 | latency_p95 60 ms: up to
            x1.26 the baseline's so far, needs < x1.2 (baseline 60 ms, n=200)
        latency_p99 INCONCLUSIVE value=81.2574 baseline=79.6483 threshold=300 p=1 | latency_p99 81 ms: up to
            x1.74 the baseline's so far, needs < x1.5 (baseline 80 ms, n=200)
        error_rate INCONCLUSIVE value=0 baseline=0.001 threshold=0.005 p=1 | error_rate 0%: -0.1 pp vs
            baseline, up to +1.1 pp so far, needs < +0.5 pp (baseline 0.1%, n=200)
        decision_delta INCONCLUSIVE value=0.23 baseline=0.23 threshold=1 p=1 | decision_delta +0.0 pp
            (candidate 23.0%, baseline 23.0%, bounds -24.2..+24.2 pp, n=200) vs +-1 pp: not yet clear
        score_shift PASS value=0.00200167 baseline=- threshold=0.2 p=1 | score_shift PSI 0.002, KS D 0.009
            within PSI 0.2 (n=200)
        policy_violations PASS value=0 baseline=0 threshold=0 p=- | policy_violations 0 <= 0
        cost_per_1k PASS value=0.1 baseline=0.1 threshold=0.5 p=- | cost_per_1k 0.1 vs 0.5 (baseline 0.1,
            n=200)
    """,
    "aa-small-first-step": """
        latency_p95 PASS value=60.1963 baseline=60.1963 threshold=120 p=1 | latency_p95 60 ms <= 120 ms,
            within x9.1e+03 of the baseline (baseline 60 ms, n=200)
        latency_p99 PASS value=81.2574 baseline=79.6483 threshold=300 p=1 | latency_p99 81 ms <= 300 ms,
            within x6.38e+08 of the baseline (baseline 80 ms, n=200)
        error_rate PASS value=0 baseline=0.001 threshold=0.005 p=1 | error_rate 0% <= 0.5%, within +25.0 pp
            of the baseline (baseline 0.1%, n=200)
        decision_delta PASS value=0.23 baseline=0.23 threshold=1 p=1 | decision_delta +0.0 pp (candidate
            23.0%, baseline 23.0%, bounds -10.4..+10.4 pp, n=200) within +-50 pp
        score_shift PASS value=0.00200167 baseline=- threshold=0.2 p=1 | score_shift PSI 0.002, KS D 0.009
            within PSI 0.2 (n=200)
        policy_violations PASS value=0 baseline=0 threshold=0 p=- | policy_violations 0 <= 0
        cost_per_1k PASS value=0.1 baseline=0.1 threshold=0.5 p=- | cost_per_1k 0.1 vs 0.5 (baseline 0.1,
            n=200)
    """,
    "too-few": """
        latency_p95 NODATA value=- baseline=- threshold=120 p=- | latency_p95: only 25 candidate requests
            (this step needs 30)
        latency_p99 NODATA value=- baseline=- threshold=300 p=- | latency_p99: only 25 candidate requests
            (this step needs 30)
        error_rate NODATA value=- baseline=- threshold=0.005 p=- | error_rate: only 25 candidate requests
            (this step needs 30)
        decision_delta NODATA value=- baseline=- threshold=1 p=- | decision_delta: only 25 candidate
            requests (this step needs 30)
        score_shift NODATA value=- baseline=- threshold=0.2 p=- | score_shift: only 25 candidate requests
            (this step needs 30)
        policy_violations NODATA value=- baseline=- threshold=0 p=- | policy_violations: only 25 candidate
            requests (this step needs 30)
        cost_per_1k NODATA value=- baseline=- threshold=0.5 p=- | cost_per_1k: only 25 candidate requests
            (this step needs 30)
    """,
    "errors-absolute": """
        error_rate HIGH value=0.04 baseline=0.001 threshold=0.005 p=0.000296523 | error_rate 4.0% > 0.5%
            (baseline 0.1%, n=200, p=0.0003)
    """,
    "errors-relative": """
        error_rate HIGH value=0.04 baseline=0.01 threshold=0.05 p=7.53427e-06 | error_rate 4.0% > baseline
            1.0% (+3.0 pp, margin +1.0 pp, n=1000, p<0.0001)
    """,
    "errors-relative-early": """
        error_rate INCONCLUSIVE value=0.05 baseline=0.01 threshold=0.05 p=0.150524 | error_rate 5.0%: +4.0
            pp vs baseline, up to +16.9 pp so far, needs < +1.0 pp (baseline 1.0%, n=200)
    """,
    "errors-relative-widened": """
        error_rate HIGH value=0.04 baseline=0.01 threshold=0.05 p=7.53427e-06 | error_rate 4.0% > baseline
            1.0% (+3.0 pp, margin +1.0 pp, n=1000, p<0.0001)
    """,
    "errors-small-significant": """
        error_rate PASS value=0.003 baseline=0.001 threshold=0.005 p=2.72495e-09 | error_rate 0.3% <= 0.5%,
            within +0.5 pp of the baseline (baseline 0.1%, n=50000)
    """,
    "errors-shared": """
        error_rate INCONCLUSIVE value=0.011 baseline=0.01 threshold=0.005 p=0.000226983 | error_rate 1.1% vs
            0.5%: the baseline is over it too (baseline 1.0%, n=4000)
    """,
    "errors-shared-worse": """
        error_rate HIGH value=0.05 baseline=0.01 threshold=0.005 p=9.68909e-57 | error_rate 5.0% > baseline
            1.0% (+4.0 pp, margin +1.0 pp, n=4000, p<0.0001)
    """,
    "errors-none-allowed": """
        error_rate HIGH value=0.00333333 baseline=0.001 threshold=0 p=- | error_rate 0.33% vs 0 allowed
            (baseline 0.1%, n=300)
    """,
    "errors-none-allowed-clean": """
        error_rate PASS value=0 baseline=0.001 threshold=0 p=- | error_rate 0% vs 0 allowed (baseline 0.1%,
            n=300)
    """,
    "errors-four-steps": """
        error_rate HIGH value=0.03 baseline=0.01 threshold=0.05 p=0.0272784 | error_rate 3.0% > baseline
            1.0% (+2.0 pp, margin +1.0 pp, n=1000, p=0.027)
    """,
    "errors-clustered": """
        error_rate INCONCLUSIVE value=0.2 baseline=0.1 threshold=0.5 p=1 | error_rate 20.0%: +10.0 pp vs
            baseline, up to +220.7 pp so far, needs < +10.0 pp (baseline 10.0%, n=2000, clustered x51.3)
    """,
    "latency-relative": """
        latency_p95 HIGH value=89.8036 baseline=60.1963 threshold=120 p=0.000206358 | latency_p95 90 ms
            slower than baseline 60 ms, not within x1.2 (n=200, p=0.00021)
        latency_p99 HIGH value=123.672 baseline=79.6483 threshold=300 p=2.25514e-05 | latency_p99 124 ms
            slower than baseline 80 ms, not within x1.5 (n=200, p<0.0001)
    """,
    "latency-rank-shift": """
        latency_p95 HIGH value=99.2486 baseline=60.1963 threshold=120 p=0.0437741 | latency_p95 99 ms slower
            than baseline 60 ms, not within x1.2 (n=600, p=0.044)
        latency_p99 HIGH value=177.265 baseline=79.6483 threshold=300 p=1.92865e-18 | latency_p99 177 ms
            slower than baseline 80 ms, not within x1.5 (n=600, p<0.0001)
    """,
    "latency-absolute": """
        latency_p95 HIGH value=131.32 baseline=116.47 threshold=120 p=3.22948e-07 | latency_p95 131 ms > 120
            ms (baseline 116 ms, n=4000, p<0.0001)
        latency_p99 PASS value=177.265 baseline=154.106 threshold=300 p=0.00306957 | latency_p99 177 ms <=
            300 ms, within x1.5 of the baseline (baseline 154 ms, n=4000)
    """,
    "latency-shared": """
        latency_p95 INCONCLUSIVE value=160.396 baseline=160.396 threshold=120 p=0.103097 | latency_p95 160
            ms vs 120 ms: the baseline is over it too (baseline 160 ms, n=200)
        latency_p99 INCONCLUSIVE value=216.514 baseline=212.226 threshold=300 p=1 | latency_p99 217 ms: up
            to x1.74 the baseline's so far, needs < x1.5 (baseline 212 ms, n=200)
    """,
    "latency-under-a-missed-threshold": """
        latency_p95 PASS value=60.1963 baseline=160.396 threshold=120 p=1 | latency_p95 60 ms <= 120 ms,
            within x1.2 of the baseline (baseline 160 ms, n=2000)
        latency_p99 PASS value=79.6483 baseline=212.226 threshold=300 p=1 | latency_p99 80 ms <= 300 ms,
            within x1.5 of the baseline (baseline 212 ms, n=2000)
    """,
    "latency-slightly-slower": """
        latency_p95 PASS value=66.5275 baseline=60.1963 threshold=120 p=0.265167 | latency_p95 67 ms <= 120
            ms, within x1.2 of the baseline (baseline 60 ms, n=2000)
        latency_p99 PASS value=88.0253 baseline=79.6483 threshold=300 p=1 | latency_p99 88 ms <= 300 ms,
            within x1.5 of the baseline (baseline 80 ms, n=2000)
    """,
    "latency-tail-only": """
        latency_p95 INCONCLUSIVE value=66.5275 baseline=60.1963 threshold=120 p=0.880629 | latency_p95 67
            ms: up to x1.25 the baseline's so far, needs < x1.2 (baseline 60 ms, n=2000)
        latency_p99 HIGH value=229.903 baseline=79.6483 threshold=300 p=1.23569e-61 | latency_p99 230 ms
            slower than baseline 80 ms, not within x1.5 (n=2000, p<0.0001)
    """,
    "latency-p99-absolute": """
        latency_p95 HIGH value=280.806 baseline=199.867 threshold=120 p=2.02673e-68 | latency_p95 281 ms
            slower than baseline 200 ms, not within x1.2 (n=4000, p<0.0001)
        latency_p99 HIGH value=371.546 baseline=264.452 threshold=300 p=2.50209e-13 | latency_p99 372 ms >
            300 ms (baseline 264 ms, n=4000, p<0.0001)
    """,
    "latency-fast": """
        latency_p95 PASS value=5.91525 baseline=6.03475 threshold=120 p=1 | latency_p95 5.9 ms <= 120 ms,
            within x1.2 of the baseline (baseline 6.0 ms, n=400)
        latency_p99 PASS value=7.67174 baseline=7.98484 threshold=300 p=1 | latency_p99 7.7 ms <= 300 ms,
            within x1.5 of the baseline (baseline 8.0 ms, n=400)
    """,
    "latency-no-threshold": """
        latency_p95 INCONCLUSIVE value=59.0043 baseline=60.1963 threshold=0 p=0 | latency_p95 59 ms vs 0.0
            ms: the baseline is over it too (baseline 60 ms, n=400)
        latency_p99 INCONCLUSIVE value=76.5252 baseline=79.6483 threshold=0 p=0 | latency_p99 77 ms vs 0.0
            ms: the baseline is over it too (baseline 80 ms, n=400)
    """,
    "decisions-high": """
        decision_delta HIGH value=0.28 baseline=0.23 threshold=1 p=9.45095e-23 | decision_delta +5.0 pp
            (candidate 28.0%, baseline 23.0%, bounds +3.7..+6.3 pp, n=20000) beyond +1 pp, p<0.0001
    """,
    "decisions-low": """
        decision_delta LOW value=0.18 baseline=0.23 threshold=1 p=2.20163e-27 | decision_delta -5.0 pp
            (candidate 18.0%, baseline 23.0%, bounds -6.2..-3.8 pp, n=20000) beyond -1 pp, p<0.0001
    """,
    "decisions-few": """
        decision_delta INCONCLUSIVE value=- baseline=- threshold=1 p=- | decision_delta: too few decisions
            (candidate 150, baseline 4000; needs 200)
    """,
    "decisions-none": """
        decision_delta NODATA value=- baseline=- threshold=1 p=- | decision_delta: no decisions on this
            route
    """,
    "decisions-no-margin": """
        decision_delta INCONCLUSIVE value=0.23 baseline=0.23 threshold=0 p=1 | decision_delta +0.0 pp
            (candidate 23.0%, baseline 23.0%, bounds -1.3..+1.3 pp, n=20000) vs +-0 pp: not yet clear
    """,
    "scores-high": """
        score_shift HIGH value=1.59441 baseline=- threshold=0.2 p=2.05573e-172 | score_shift PSI 1.594, KS D
            0.498 > PSI 0.2 (p<0.0001, n=1000)
    """,
    "scores-pass": """
        score_shift PASS value=0.00139544 baseline=- threshold=0.2 p=1 | score_shift PSI 0.001, KS D 0.017
            within PSI 0.2 (n=1000)
    """,
    "scores-open": """
        score_shift INCONCLUSIVE value=0.143502 baseline=- threshold=0.2 p=1.07795e-15 | score_shift PSI
            0.144, KS D 0.156 vs PSI 0.2: not yet clear (p<0.0001, n=1000)
    """,
    "policy-violation": """
        policy_violations HIGH value=1 baseline=0 threshold=0 p=- | policy_violations 1 > 0
    """,
    "cost-constant-high": """
        cost_per_1k HIGH value=1 baseline=0.1 threshold=0.5 p=- | cost_per_1k 1 vs 0.5 (baseline 0.1, n=200)
    """,
    "cost-varying-pass": """
        cost_per_1k PASS value=0.1 baseline=0.1 threshold=0.5 p=1 | cost_per_1k 0.1 vs 0.5 (baseline 0.1,
            n=400): within
    """,
    "cost-varying-high": """
        cost_per_1k HIGH value=0.6 baseline=0.1 threshold=0.5 p=2.04685e-07 | cost_per_1k 0.6 vs 0.5
            (baseline 0.1, n=400): above (p<0.0001)
    """,
    "cost-varying-open": """
        cost_per_1k INCONCLUSIVE value=0.5 baseline=0.1 threshold=0.5 p=1 | cost_per_1k 0.5 vs 0.5 (baseline
            0.1, n=400): not yet clear
    """,
    "cost-varying-widened": """
        cost_per_1k PASS value=0.5 baseline=0.1 threshold=0.5 p=1 | cost_per_1k 0.5 vs 0.5 (baseline 0.1,
            n=400): within
    """,
    "no-baseline": """
        latency_p95 PASS value=59.0043 baseline=- threshold=120 p=1 | latency_p95 59 ms <= 120 ms (baseline
            n/a, n=400)
        latency_p99 PASS value=76.5252 baseline=- threshold=300 p=1 | latency_p99 77 ms <= 300 ms (baseline
            n/a, n=400)
        error_rate INCONCLUSIVE value=0.0025 baseline=- threshold=0.005 p=1 | error_rate 0.25% vs 0.5%: not
            yet clear (baseline n/a, n=400)
        decision_delta INCONCLUSIVE value=- baseline=- threshold=1 p=- | decision_delta: too few decisions
            (candidate 400, baseline 0; needs 200)
        score_shift INCONCLUSIVE value=- baseline=- threshold=0.2 p=- | score_shift: too few scores
            (candidate 400, baseline 0; needs 200)
        policy_violations PASS value=0 baseline=0 threshold=0 p=- | policy_violations 0 <= 0
        cost_per_1k PASS value=0.1 baseline=- threshold=0.5 p=- | cost_per_1k 0.1 vs 0.5 (baseline 0, n=400)
    """,
    "no-baseline-clean": """
        latency_p95 PASS value=60.1963 baseline=- threshold=120 p=1 | latency_p95 60 ms <= 120 ms (baseline
            n/a, n=4000)
        error_rate PASS value=0 baseline=- threshold=0.005 p=1 | error_rate 0% <= 0.5% (baseline n/a,
            n=4000)
    """,
    "baseline-of-two": """
        latency_p95 INCONCLUSIVE value=59.0043 baseline=22.5916 threshold=120 p=1 | latency_p95 59 ms: up to
            x3.4 the baseline's so far, needs < x1.2 (baseline 23 ms, n=400)
    """,
    "errors-baseline-at-threshold": """
        error_rate HIGH value=0.04 baseline=0.005 threshold=0.005 p=0.000296523 | error_rate 4.0% > 0.5%
            (baseline 0.5%, n=200, p=0.0003)
    """,
    "errors-slightly-better": """
        error_rate INCONCLUSIVE value=0.00990099 baseline=0.01 threshold=0.05 p=1 | error_rate 0.99%: +0.0
            pp vs baseline, up to +1.2 pp so far, needs < +1.0 pp (baseline 1.0%, n=1010)
    """,
    "errors-clustered-baseline": """
        error_rate INCONCLUSIVE value=0.1 baseline=0.1 threshold=0.5 p=1 | error_rate 10.0%: +0.0 pp vs
            baseline, up to +11.9 pp so far, needs < +10.0 pp (baseline 10.0%, n=2000, clustered x41.0)
    """,
    "errors-mildly-clustered": """
        error_rate PASS value=0.0915 baseline=0.0915 threshold=0.5 p=1 | error_rate 9.2% <= 50.0%, within
            +9.2 pp of the baseline (baseline 9.2%, n=8000, clustered x1.5)
    """,
    "latency-threshold-of-10-ms": """
        latency_p95 PASS value=5.91525 baseline=6.03475 threshold=10 p=1 | latency_p95 5.9 ms <= 10 ms,
            within x1.2 of the baseline (baseline 6.0 ms, n=400)
    """,
    "paired-both-ways": """
        decision_delta INCONCLUSIVE value=0.23 baseline=0.23 threshold=1 p=1 | decision_delta +3.5 pp
            (candidate 23.0%, baseline 23.0%, bounds -2.4..+9.4 pp, paired, 400 pairs) vs +-1 pp: not yet
            clear
    """,
    "paired-all-discordant": """
        decision_delta HIGH value=0.23 baseline=0.23 threshold=1 p=3.41715e-26 | decision_delta +75.0 pp
            (candidate 23.0%, baseline 23.0%, bounds +58.4..+91.6 pp, paired, 300 pairs) beyond +1 pp,
            p<0.0001
    """,
    "paired-without-window-decisions": """
        decision_delta PASS value=0 baseline=0 threshold=1 p=1 | decision_delta +0.0 pp (candidate 0%,
            baseline 0%, bounds -0.6..+0.6 pp, paired, 400 pairs) within +-1 pp
    """,
    "decisions-clustered": """
        decision_delta INCONCLUSIVE value=0.25 baseline=0.25 threshold=1 p=1 | decision_delta +0.0 pp
            (candidate 25.0%, baseline 25.0%, bounds -12.2..+12.2 pp, n=4000, clustered x8.4) vs +-1 pp: not
            yet clear
    """,
    "decisions-slightly-high": """
        decision_delta INCONCLUSIVE value=0.245 baseline=0.23 threshold=1 p=0.636041 | decision_delta +1.5
            pp (candidate 24.5%, baseline 23.0%, bounds +0.2..+2.8 pp, n=20000) vs +-1 pp: not yet clear
    """,
    "decisions-slightly-low": """
        decision_delta INCONCLUSIVE value=0.215 baseline=0.23 threshold=1 p=0.487982 | decision_delta -1.5
            pp (candidate 21.5%, baseline 23.0%, bounds -2.8..-0.2 pp, n=20000) vs +-1 pp: not yet clear
    """,
    "decisions-one-sided-open": """
        decision_delta INCONCLUSIVE value=0.245 baseline=0.23 threshold=1 p=1 | decision_delta +1.5 pp
            (candidate 24.5%, baseline 23.0%, bounds -1.0..+4.0 pp, n=4000) vs +-1 pp: not yet clear
    """,
    "decisions-two-pp": """
        decision_delta HIGH value=0.25 baseline=0.23 threshold=2 p=0.0063796 | decision_delta +2.0 pp
            (candidate 25.0%, baseline 23.0%, bounds +0.7..+3.3 pp, n=20000) beyond +2 pp, p=0.0064
    """,
    "decisions-no-margin-different": """
        decision_delta INCONCLUSIVE value=0.24 baseline=0.23 threshold=0 p=1 | decision_delta +1.0 pp
            (candidate 24.0%, baseline 23.0%, bounds -0.3..+2.3 pp, n=20000) vs +-0 pp: not yet clear
    """,
    "decisions-candidate-none": """
        decision_delta INCONCLUSIVE value=- baseline=- threshold=1 p=- | decision_delta: too few decisions
            (candidate 0, baseline 4000; needs 200)
        score_shift INCONCLUSIVE value=- baseline=- threshold=0.2 p=- | score_shift: too few scores
            (candidate 0, baseline 4000; needs 200)
    """,
    "scores-few": """
        score_shift INCONCLUSIVE value=- baseline=- threshold=0.2 p=- | score_shift: too few scores
            (candidate 150, baseline 4000; needs 200)
    """,
    "scores-small-but-significant": """
        score_shift PASS value=0.0534399 baseline=- threshold=0.2 p=3.32748e-05 | score_shift PSI 0.053, KS
            D 0.096 within PSI 0.2 (n=1000)
    """,
    "scores-under-half-the-threshold": """
        score_shift PASS value=0.0788086 baseline=- threshold=0.2 p=3.8959e-08 | score_shift PSI 0.079, KS D
            0.116 within PSI 0.2 (n=1000)
    """,
    "cost-constant-at-threshold": """
        cost_per_1k PASS value=0.5 baseline=0.1 threshold=0.5 p=- | cost_per_1k 0.5 vs 0.5 (baseline 0.1,
            n=200)
    """,
    "cost-varying-scale-1.5": """
        cost_per_1k PASS value=0.5 baseline=0.1 threshold=0.5 p=1 | cost_per_1k 0.5 vs 0.5 (baseline 0.1,
            n=400): within
    """,
    "cost-one-request": """
        cost_per_1k PASS value=0.2 baseline=0.1 threshold=0.5 p=- | cost_per_1k 0.2 vs 0.5 (baseline 0.1,
            n=1)
    """,
    "cost-two-requests": """
        cost_per_1k PASS value=0.1 baseline=0.1 threshold=0.5 p=1 | cost_per_1k 0.1 vs 0.5 (baseline 0.1,
            n=2): within
    """,
    "no-baseline-near-the-threshold": """
        latency_p95 INCONCLUSIVE value=116.47 baseline=- threshold=120 p=1 | latency_p95 116 ms vs 120 ms:
            not yet clear (baseline n/a, n=200)
    """,
    "latency-sub-ms-threshold": """
        latency_p95 PASS value=0.593011 baseline=0.604991 threshold=0.7 p=1 | latency_p95 0.6 ms <= 0.7 ms,
            within x1.2 of the baseline (baseline 0.6 ms, n=400)
    """,
    "latency-baseline-at-threshold": """
        latency_p95 HIGH value=89.8036 baseline=60.1963 threshold=60.1963 p=0.00014276 | latency_p95 90 ms >
            60 ms (baseline 60 ms, n=200, p=0.00014)
    """,
    "errors-relative-ratio-3": """
        error_rate HIGH value=0.04 baseline=0.01 threshold=0.05 p=7.90085e-06 | error_rate 4.0% > baseline
            1.0% (+3.0 pp, margin +2.0 pp, n=1000, p<0.0001)
    """,
    "paired-at-the-floor": """
        decision_delta INCONCLUSIVE value=0.23 baseline=0.23 threshold=1 p=1 | decision_delta +0.0 pp
            (candidate 23.0%, baseline 23.0%, bounds -1.1..+1.1 pp, paired, 200 pairs) vs +-1 pp: not yet
            clear
    """,
    "paired-every-pair-discordant": """
        decision_delta HIGH value=0.23 baseline=0.23 threshold=1 p=0 | decision_delta +100.0 pp (candidate
            23.0%, baseline 23.0%, bounds +99.5..+100.5 pp, paired, 300 pairs) beyond +1 pp, p<0.0001
    """,
    "decisions-no-margin-far": """
        decision_delta HIGH value=0.28 baseline=0.23 threshold=0 p=9.45095e-23 | decision_delta +5.0 pp
            (candidate 28.0%, baseline 23.0%, bounds +3.7..+6.3 pp, n=20000) beyond +0 pp, p<0.0001
    """,
    "decisions-low-two-pp": """
        decision_delta LOW value=0.21 baseline=0.23 threshold=1 p=0.00596311 | decision_delta -2.0 pp
            (candidate 21.0%, baseline 23.0%, bounds -3.3..-0.7 pp, n=20000) beyond -1 pp, p=0.006
    """,
    "decisions-clustered-baseline": """
        decision_delta INCONCLUSIVE value=0.25 baseline=0.25 threshold=1 p=1 | decision_delta +0.0 pp
            (candidate 25.0%, baseline 25.0%, bounds -12.2..+12.2 pp, n=4000, clustered x8.4) vs +-1 pp: not
            yet clear
    """,
    "errors-zero-baseline": """
        error_rate INCONCLUSIVE value=0 baseline=0 threshold=0.005 p=1 | error_rate 0%: +0.0 pp vs baseline,
            up to +1.1 pp so far, needs < +0.5 pp (baseline 0%, n=200)
    """,
    "errors-clustered-candidate": """
        error_rate HIGH value=0.1 baseline=0.05 threshold=0.5 p=0.0187712 | error_rate 10.0% > baseline 5.0%
            (+5.0 pp, margin +5.0 pp, n=2000, p=0.019)
    """,
    "errors-near-the-margin-1.5": """
        error_rate PASS value=0.015 baseline=0.01 threshold=0.5 p=0.0371362 | error_rate 1.5% <= 50.0%,
            within +1.0 pp of the baseline (baseline 1.0%, n=20000)
    """,
    "errors-near-the-margin-1.58": """
        error_rate PASS value=0.0158 baseline=0.01 threshold=0.5 p=0.00173794 | error_rate 1.6% <= 50.0%,
            within +1.0 pp of the baseline (baseline 1.0%, n=20000)
    """,
    "latency-shift-only": """
        latency_p95 HIGH value=81.2574 baseline=60.1963 threshold=10000 p=2.80597e-05 | latency_p95 81 ms
            slower than baseline 60 ms, not within x1.2 (n=200, p<0.0001)
    """,
    "latency-shift-inside-margin": """
        latency_p95 INCONCLUSIVE value=69.2426 baseline=60.1963 threshold=10000 p=1 | latency_p95 69 ms: up
            to x1.45 the baseline's so far, needs < x1.2 (baseline 60 ms, n=200)
    """,
    "latency-two-requests": """
        latency_p95 INCONCLUSIVE value=0.376296 baseline=0.997478 threshold=120 p=1 | latency_p95 0.4 ms: up
            to x2.04 the baseline's so far, needs < x1.2 (baseline 1.0 ms, n=2)
        latency_p99 PASS value=0.376296 baseline=1.31981 threshold=300 p=1 | latency_p99 0.4 ms <= 300 ms,
            within x1.5 of the baseline (baseline 1.3 ms, n=2)
    """,
    "tail-whatever-the-error-ratio": """
        latency_p95 INCONCLUSIVE value=81.2574 baseline=60.1963 threshold=10000 p=1 | latency_p95 81 ms: up
            to x2.88 the baseline's so far, needs < x1.2 (baseline 60 ms, n=200)
        latency_p99 HIGH value=128.72 baseline=79.6483 threshold=10000 p=0.0375313 | latency_p99 129 ms
            slower than baseline 80 ms, not within x1.5 (n=200, p=0.038)
    """,
    "paired-a-small-sure-decrease": """
        decision_delta PASS value=0.23 baseline=0.23 threshold=1 p=0.0113894 | decision_delta -0.4 pp
            (candidate 23.0%, baseline 23.0%, bounds -0.8..-0.1 pp, paired, 5000 pairs) within +-1 pp
    """,
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_reference_window(name: str) -> None:
    assert report(name) == textwrap.dedent(EXPECTED[name]).strip()


def test_every_verdict_is_among_the_references() -> None:
    # The table is only worth its length if it reaches every verdict of every gate (a count of policy
    # violations has nothing to be unsure about; only the decision rate can be too low).
    seen = {(r.gate, r.verdict) for name in SCENARIOS for r in _judged(name)}
    for gate in GATES:
        verdicts = {"PASS", "HIGH", "NODATA"} | ({"INCONCLUSIVE"} if gate != "policy_violations" else set())
        assert {(gate, v) for v in verdicts} <= seen, gate
    assert ("decision_delta", "LOW") in seen


def _judged(name: str) -> list[GateResult]:
    evidence, overrides, scale, _ = SCENARIOS[name]
    return judge(evidence, GatePolicy.from_config(CanaryConfig(), **overrides), scale)


# -- the policy ---------------------------------------------------------------------------------------


def test_policy_accepts_its_boundaries() -> None:
    policy = GatePolicy.from_config(
        CanaryConfig(),
        family_alpha=0.4999,
        min_samples=1,
        steps_judged=1,
        latency_p95_ms=0.0,
        latency_p99_ms=0.0,
        error_rate=0.0,
        decision_delta_pp=0.0,
        cost_per_1k=0.0,
        latency_ratio=1.0,
        latency_p99_ratio=1.0,
        error_ratio=1.0,
    )
    assert (policy.family_alpha, policy.min_samples, policy.latency_ratio) == (0.4999, 1, 1.0)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"family_alpha": 0.5}, r"^family_alpha must be in \(0, 0.5\), got 0.5$"),
        ({"family_alpha": 0.0}, r"^family_alpha must be in \(0, 0.5\), got 0.0$"),
        ({"min_samples": 0}, "^min_samples and steps_judged must be >= 1$"),
        ({"steps_judged": 0}, "^min_samples and steps_judged must be >= 1$"),
        ({"latency_p95_ms": -1.0}, "^gate thresholds must be >= 0$"),
        ({"latency_p99_ms": -1.0}, "^gate thresholds must be >= 0$"),
        ({"error_rate": -0.1}, "^gate thresholds must be >= 0$"),
        ({"decision_delta_pp": -1.0}, "^gate thresholds must be >= 0$"),
        ({"cost_per_1k": -1.0}, "^gate thresholds must be >= 0$"),
        ({"latency_ratio": 0.99}, "^latency_ratio, latency_p99_ratio and error_ratio must be >= 1$"),
        ({"latency_p99_ratio": 0.99}, "^latency_ratio, latency_p99_ratio and error_ratio must be >= 1$"),
        ({"error_ratio": 0.99}, "^latency_ratio, latency_p99_ratio and error_ratio must be >= 1$"),
    ],
)
def test_policy_errors_name_the_rule(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GatePolicy.from_config(CanaryConfig(), **overrides)


def test_steps_judged_are_the_steps_before_the_last() -> None:
    assert GatePolicy.from_config(CanaryConfig(steps=(1, 5, 25, 50, 100))).steps_judged == 4
    assert GatePolicy.from_config(CanaryConfig(steps=(50, 100))).steps_judged == 1


@pytest.mark.parametrize(
    ("evidence", "weight", "last", "scale"),
    [
        ("exposure", 1.0, 50.0, 50.0),
        ("exposure", 25.0, 50.0, 2.0),
        ("exposure", 50.0, 50.0, 1.0),  # the last judged step proves the configured margins
        ("exposure", 60.0, 50.0, 1.0),
        ("exposure", 0.0, 50.0, 1.0),  # the shadow phase: nothing exposed, nothing to widen by
        ("full", 1.0, 50.0, 1.0),
    ],
)
def test_scale_is_the_exposure_ratio_to_the_last_judged_step(
    evidence: str, weight: float, last: float, scale: float
) -> None:
    policy = GatePolicy.from_config(CanaryConfig(), step_evidence=evidence)
    assert policy.scale(weight, last) == scale


@pytest.mark.parametrize(
    ("min_samples", "scale", "needed"),
    [
        (200, 1.0, 200),
        (200, 2.0, 100),
        (200, 3.0, 67),  # rounded up
        (200, 50.0, MIN_STEP_SAMPLES),  # never below the floor the normal approximations need
        (20, 50.0, 20),  # nor above a smaller configured minimum
    ],
)
def test_a_step_of_less_exposure_needs_fewer_requests(min_samples: int, scale: float, needed: int) -> None:
    policy = GatePolicy.from_config(CanaryConfig(), min_samples=min_samples)
    assert policy.step_min_samples(scale) == needed
    assert needed == max(min(MIN_STEP_SAMPLES, min_samples), math.ceil(min_samples / scale))


# -- what passing needs (the plan ``needs.py`` reads) -----------------------------------------------


def test_the_plan_holds_each_gates_pass_bounds() -> None:
    evidence = Evidence(_B3800, window(400, failures=4, positives=100))
    results, plans = judge_with_plan(evidence, GatePolicy.from_config(CanaryConfig()))
    assert results == judge(evidence, GatePolicy.from_config(CanaryConfig()), 1.0)  # the default scale
    assert set(plans) == set(GATES)
    m = len(evidence.candidate.latency_sample.sorted_values())
    for gate in ("latency_p95", "latency_p99"):
        absolute, relative = plans[gate]  # the threshold, then the ratio to the baseline
        assert (absolute.count, absolute.fixed) == (m, 0.0)
        assert relative.count == m and relative.fixed > 0.0  # the baseline's variance stays
    absolute, relative = plans["error_rate"]
    assert (absolute.limit, absolute.count, absolute.fixed) == (0.005, 400, 0.0)
    assert relative.count == 400 and relative.fixed > 0.0
    up, down = plans["decision_delta"]  # within the margin on both sides: two one-sided bounds
    assert up.estimate.value == -down.estimate.value != 0.0
    assert (up.limit, up.count, up.fixed) == (down.limit, down.count, down.fixed) == (0.01, 400, up.fixed)
    assert up.fixed > 0.0
    assert plans["score_shift"] == plans["policy_violations"] == []


def test_a_paired_decision_bound_has_no_fixed_part() -> None:
    _, plans = judge_with_plan(SCENARIOS["paired-both-ways"][0], GatePolicy.from_config(CanaryConfig()))
    assert [(b.count, b.fixed) for b in plans["decision_delta"]] == [(400, 0.0), (400, 0.0)]


def test_a_step_of_less_exposure_proves_no_absolute_bound() -> None:
    evidence = SCENARIOS["cost-varying-open"][0]
    _, full = judge_with_plan(evidence, GatePolicy.from_config(CanaryConfig()))
    _, wide = judge_with_plan(evidence, GatePolicy.from_config(CanaryConfig()), 5.0)
    assert [(b.limit, b.count) for b in full["cost_per_1k"]] == [(0.5, 400)]
    assert wide["cost_per_1k"] == []
    assert len(full["latency_p95"]) == 2 and len(wide["latency_p95"]) == 1


def test_a_paired_difference_never_has_less_variance_than_a_quarter_pair() -> None:
    # Every pair discordant one way: the plug-in variance is negative; the floor 0.25 / (n + 1) holds it.
    _, plans = judge_with_plan(
        SCENARIOS["paired-every-pair-discordant"][0], GatePolicy.from_config(CanaryConfig())
    )
    up, _ = plans["decision_delta"]
    assert up.estimate.variance == pytest.approx(0.25 / 301 / 300, rel=1e-12)


def test_a_widened_step_tunes_its_latency_bound_to_the_widened_margin() -> None:
    evidence = SCENARIOS["aa-small"][0]
    for scale in (1.0, 50.0):
        _, plans = judge_with_plan(evidence, GatePolicy.from_config(CanaryConfig()), scale)
        relative = plans["latency_p95"][-1]
        assert relative.limit == pytest.approx(math.log(1.2) * scale, rel=1e-12)
        assert relative.estimate.tuning == pytest.approx((math.log(1.2) * scale) ** 2, rel=1e-12)
