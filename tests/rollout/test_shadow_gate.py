"""The shadow phase's gates on a real shadow book: errors the baseline shares on the same requests, and
the paired latency ratio that a brownout both versions share does not move."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from proxy.config.load import build_config
from proxy.observe.metrics import ProxyMetrics
from proxy.rollout.gates import GatePolicy
from proxy.rollout.shadow_gate import judge_shadow
from proxy.shadow.book import ShadowBook
from proxy.shadow.compare import Answer
from tests.helpers.config import config_doc


def _answer(failed: bool, score: float) -> Answer:
    if failed:
        return Answer(status=503, error="http_5xx", latency_s=0.01)
    return Answer(status=200, schema_valid=True, latency_s=0.03, score=score, decision=score >= 0.5)


def _error_gate(tmp_path: Path, failed: list[tuple[bool, bool]]) -> tuple[str, str]:
    config = build_config(config_doc(tmp_path, "http://127.0.0.1:9", "http://127.0.0.1:10"), tmp_path)
    book = ShadowBook(config, ProxyMetrics(CollectorRegistry()))
    route = config.routes[0]
    for i, (base_failed, cand_failed) in enumerate(failed):
        score = (i % 100) / 100
        book.observe_answers(route, _answer(base_failed, score), _answer(cand_failed, score), None)
    gates, judged = judge_shadow(book.report("now"), GatePolicy.from_config(config.canary), 500)
    assert judged
    gate = next(g for g in gates if g.gate == "error_rate")
    return gate.verdict, gate.detail


def test_errors_both_versions_had_on_the_same_requests_do_not_fail_the_candidate(tmp_path: Path) -> None:
    # A burst upstream of both: 2% of the mirrored requests failed on either side, over the 0.5% gate.
    verdict, detail = _error_gate(tmp_path, [(i % 50 == 0, i % 50 == 0) for i in range(5000)])
    assert verdict == "INCONCLUSIVE" and "the baseline is over it too" in detail, detail


def test_the_candidates_own_errors_over_the_threshold_fail_it(tmp_path: Path) -> None:
    verdict, detail = _error_gate(tmp_path, [(False, i % 50 == 0) for i in range(5000)])
    assert verdict == "HIGH" and "baseline 0.00% on the same requests" in detail, detail
    # ...and so do errors clearly beyond the baseline's, when the baseline is over the threshold too.
    verdict, _ = _error_gate(tmp_path, [(i % 100 == 0, i % 20 == 0) for i in range(5000)])
    assert verdict == "HIGH"


def test_a_clean_candidate_passes(tmp_path: Path) -> None:
    assert _error_gate(tmp_path, [(i % 100 == 0, False) for i in range(5000)])[0] == "PASS"


def test_a_candidate_failing_its_mirrors_fails_before_shadow_samples_pairs_are_compared(
    tmp_path: Path,
) -> None:
    # Failed mirrors are never "compared" pairs: waiting for 500 of them would hold the phase forever.
    config = build_config(config_doc(tmp_path, "http://127.0.0.1:9", "http://127.0.0.1:10"), tmp_path)
    book = ShadowBook(config, ProxyMetrics(CollectorRegistry()))
    for i in range(100):
        book.observe_answers(config.routes[0], _answer(False, i / 100), _answer(True, 0.0), None)
    gates, judged = judge_shadow(book.report("now"), GatePolicy.from_config(config.canary), 500)
    verdicts = {g.gate: g.verdict for g in gates}
    assert judged and verdicts == {"decision_delta": "NODATA", "error_rate": "HIGH", "latency_p95": "NODATA"}


def _latency_gate(tmp_path: Path, pairs: list[tuple[float, float]]) -> tuple[str, str]:
    """The shadow latency gate over mirrored pairs of (baseline, candidate) latencies in seconds."""
    config = build_config(config_doc(tmp_path, "http://127.0.0.1:9", "http://127.0.0.1:10"), tmp_path)
    book = ShadowBook(config, ProxyMetrics(CollectorRegistry()))
    for i, (base_s, cand_s) in enumerate(pairs):
        score = (i % 100) / 100
        base = Answer(status=200, schema_valid=True, latency_s=base_s, score=score, decision=score >= 0.5)
        cand = Answer(status=200, schema_valid=True, latency_s=cand_s, score=score, decision=score >= 0.5)
        book.observe_answers(config.routes[0], base, cand, None)
    gates, judged = judge_shadow(book.report("now"), GatePolicy.from_config(config.canary), 300)
    assert judged
    gate = next(g for g in gates if g.gate == "latency_p95")
    return gate.verdict, gate.detail


def _lognormal_pairs(
    n: int, seed: int, slowdown: float, brownout: tuple[int, int] = (0, 0)
) -> list[tuple[float, float]]:
    """Heavy-tailed latencies (lognormal, median 20 ms, sigma 0.8: p99 ~6x the median) drawn per version;
    in ``brownout`` (pair indices) both versions are 5x slower, at the same moments."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        shared = 5.0 if brownout[0] <= i < brownout[1] else 1.0
        base = 0.020 * shared * math.exp(rng.gauss(0.0, 0.8))
        cand = 0.020 * shared * slowdown * math.exp(rng.gauss(0.0, 0.8))
        out.append((base, cand))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_candidate_twice_as_slow_fails_shadow_even_far_under_the_threshold(
    tmp_path: Path, seed: int
) -> None:
    # p95 ~ 150 ms against a 250 ms threshold: the absolute check alone passed it into the canary.
    verdict, detail = _latency_gate(tmp_path, _lognormal_pairs(1000, seed, slowdown=2.0))
    assert verdict == "HIGH", detail
    assert "per request x2." in detail and "over 1000 pairs vs x1.2" in detail, detail


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_an_equal_candidate_passes_through_a_brownout_both_versions_share(tmp_path: Path, seed: int) -> None:
    # 4% of the pairs are 5x slower on both sides (the p95 stays under the threshold; a brownout that
    # takes both over it is a shared breach, inconclusive): the ratio on each pair does not move.
    verdict, detail = _latency_gate(tmp_path, _lognormal_pairs(4000, seed, 1.0, brownout=(1000, 1160)))
    assert verdict == "PASS", detail


@pytest.mark.parametrize("seed", [1, 2])
def test_a_candidate_exactly_at_the_margin_fails_instead_of_holding_shadow_forever(
    tmp_path: Path, seed: int
) -> None:
    # x1.2 against the x1.2 margin can never be shown within it; shown beyond halfway (x1.095), it fails.
    verdict, detail = _latency_gate(tmp_path, _lognormal_pairs(8000, seed, 1.2))
    assert verdict == "HIGH", detail


def test_a_slowdown_within_the_margin_is_not_a_failure(tmp_path: Path) -> None:
    # x1.1 against the x1.2 margin: never HIGH; shown within the margin once there are enough pairs.
    few, _ = _latency_gate(tmp_path, _lognormal_pairs(300, 4, 1.1))
    many, detail = _latency_gate(tmp_path, _lognormal_pairs(20_000, 4, 1.1))
    assert few in ("INCONCLUSIVE", "PASS") and many == "PASS", detail


def test_too_few_timed_pairs_hold_the_phase(tmp_path: Path) -> None:
    config = build_config(config_doc(tmp_path, "http://127.0.0.1:9", "http://127.0.0.1:10"), tmp_path)
    book = ShadowBook(config, ProxyMetrics(CollectorRegistry()))
    route = config.routes[0]
    for i in range(400):  # the candidate times out on all but 20: compared pairs, few timed ones
        score = (i % 100) / 100
        base = Answer(status=200, schema_valid=True, latency_s=0.02, score=score, decision=score >= 0.5)
        cand = Answer(status=200, schema_valid=True, latency_s=0.02, score=score, decision=score >= 0.5)
        book.observe_answers(route, base, cand if i < 20 else Answer(status=504, error="timeout"), None)
    report = book.report("now")
    ratio = report["routes"]["infer"]["latency_ratio"]
    assert ratio["pairs"] == 20 and ratio["geomean"] == 1.0
    gates, _ = judge_shadow(
        {"routes": {"infer": {**report["routes"]["infer"], "compared": 400}}},
        GatePolicy.from_config(config.canary),
        300,
    )
    gate = next(g for g in gates if g.gate == "latency_p95")
    assert gate.verdict == "INCONCLUSIVE" and "20 timed pairs, too few" in gate.detail, gate.detail
