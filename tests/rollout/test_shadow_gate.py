"""The shadow phase's gates on a real shadow book: errors the baseline shares on the same requests."""

from __future__ import annotations

from pathlib import Path

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
