"""The shadow book: every mirrored pair compared, counted and folded into ``shadow_eval.json``.

It is the mirror's pair observer. It turns the two attempts into comparable :class:`Answer` s (status,
parsed body, contract validity, latency, score and decision), compares them, feeds the per-route
:class:`ShadowEvaluation` (bounded sketches, noise learning) and the shadow metrics. The evaluation
belongs to one rollout: a new rollout id or candidate starts a fresh book.
"""

from __future__ import annotations

from typing import Any

from proxy.config.model import Config, RouteConfig
from proxy.content.contracts import MISSING, scalar_at
from proxy.content.pii import Masker
from proxy.observe.metrics import ProxyMetrics
from proxy.shadow.compare import Answer, NoiseLearner, compare, diff_fields
from proxy.shadow.evaluation import ShadowEvaluation, identity
from proxy.shadow.mirror import ShadowPair
from proxy.upstream.attempt import Attempt


def answer_of(att: Attempt, route: RouteConfig) -> Answer:
    """The comparable view of one attempt."""
    # An answer that breaks the contract has no trustworthy score: it counts as a contract failure, not
    # as a decision (a broken score of 1.7 is no "positive decision").
    score = att.score if att.violation is None else None
    decision = None if score is None else score >= route.decision_threshold
    return Answer(
        status=att.status or att.upstream_status or (att.error.status if att.error is not None else 0),
        doc=att.doc,
        schema_valid=None if att.data is None else att.violation is None,
        latency_s=att.elapsed,
        score=score,
        decision=decision,
        error=att.failure_kind if att.failure_kind not in (None, "contract") else None,
    )


def segment_of(doc: Any, pointer: str | None) -> str | None:
    """The request's segment label (``route.segment``); only scalars make segments."""
    if pointer is None or doc is MISSING:
        return None
    value = scalar_at(doc, pointer)
    return None if value is None else value[:64]


class ShadowBook:
    """Per-route shadow evaluations for the current rollout, fed by the mirror."""

    def __init__(self, config: Config, metrics: ProxyMetrics, *, masker: Masker | None = None) -> None:
        """``masker`` is the PII masker every string of ``shadow_eval.json`` goes through (segment labels,
        field names, examples); None only where nothing leaves the process (tests of the arithmetic)."""
        self.config = config
        self.metrics = metrics
        self.masker = masker
        self._labels: dict[tuple[str, str], str] = {}  # (pointer, raw label) -> masked label
        self.rollout_id = ""
        self.evals: dict[str, ShadowEvaluation] = {}

    def _evaluation(self, route: RouteConfig) -> ShadowEvaluation:
        ev = self.evals.get(route.name)
        if ev is None:
            cfg = self.config.shadow
            ev = self.evals[route.name] = ShadowEvaluation(
                route=route.name,
                decision_threshold=route.decision_threshold,
                segment_top_n=cfg.segment_top_n,
                compat=[s.name for s in route.compat_schemas],
                example_masker=self.masker.mask_text if self.masker is not None else identity,
                value_masker=self.masker.mask_at if self.masker is not None else None,
                noise=NoiseLearner(
                    min_samples=cfg.noise_min_samples,
                    abs_threshold=cfg.noise_abs_threshold,
                    rel_factor=cfg.noise_rel_factor,
                ),
            )
        return ev

    def start_rollout(self, rollout_id: str) -> None:
        """A new rollout (or candidate) is judged on its own evidence only."""
        if rollout_id != self.rollout_id:
            self.rollout_id = rollout_id
            self.evals.clear()

    def observe(self, pair: ShadowPair) -> None:
        route = pair.request.route.route
        if pair.baseline is None:
            return  # the client went away before its answer: nothing to compare with
        tol = self.config.shadow
        base = answer_of(pair.baseline, route)
        ev = self.observe_answers(
            route, base, answer_of(pair.candidate, route), self._segment(pair.request.doc, route.segment)
        )
        if pair.candidate.compat is not None:
            ev.add_compat([c.name for c in pair.request.route.compat], pair.candidate.compat)
        if pair.noise is not None:
            second = answer_of(pair.noise, route)
            if base.ok and second.ok and base.doc is not MISSING and second.doc is not MISSING:
                d = diff_fields(base.doc, second.doc, abs_tol=tol.abs_tolerance, rel_tol=tol.rel_tolerance)
                ev.add_noise(base, second, d.differing, d.present)

    def observe_answers(
        self, route: RouteConfig, base: Answer, cand: Answer, segment: str | None
    ) -> ShadowEvaluation:
        """One pair already in comparable form (a mirror's, or a backtest trace's); its evaluation."""
        tol = self.config.shadow
        result = compare(base, cand, abs_tol=tol.abs_tolerance, rel_tol=tol.rel_tolerance)
        ev = self._evaluation(route)
        ev.add_pair(base, cand, result, segment)
        match = (
            result.status_match and result.decision_match is not False and result.schema_valid is not False
        )
        self.metrics.shadow_comparison(route.name, match, result.score_delta)
        return ev

    def _segment(self, doc: Any, pointer: str | None) -> str | None:
        """The request's segment label, masked like the value it is (whole, when ``pointer`` is one of
        ``logging.pii.json_fields``); memoised, bounded, since labels repeat."""
        label = segment_of(doc, pointer)
        if label is None or pointer is None or self.masker is None:
            return label
        key = (pointer, label)
        masked = self._labels.get(key)
        if masked is None:
            masked = str(self.masker.mask_at(pointer, label))[:64]
            if len(self._labels) >= 4096:
                self._labels.clear()  # bounded: a high-cardinality segment cannot grow it
            self._labels[key] = masked
        return masked

    def report(self, now: str) -> dict[str, Any]:
        """``shadow_eval.json``: one evaluation per route that has seen mirrored pairs."""
        return {
            "generated_at": now,
            "rollout_id": self.rollout_id,
            "versions": {
                "baseline": self.config.baseline.version,
                "candidate": self.config.candidate.version,
            },
            "routes": {name: ev.report(now) for name, ev in sorted(self.evals.items())},
        }
