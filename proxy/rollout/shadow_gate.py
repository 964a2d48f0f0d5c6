"""The shadow phase's gates (pure): may the candidate take its first real traffic?

Judged on ``shadow_eval.json`` (every mirrored pair of the current rollout): paired decision divergence
with its 95% interval against ``decision_delta_pp``; candidate failures (errors and contract breaches)
against ``error_rate`` with a Wilson bound; the candidate's p95 against ``latency_p95_ms`` and its paired
per-request latency ratio to the baseline against ``latency_ratio``. Below ``shadow_samples`` compared
pairs every gate is NODATA, so the phase holds.
"""

from __future__ import annotations

import math
from typing import Any, Final

from proxy.rollout.decide import Gate, GateResult, GateVerdict
from proxy.rollout.figures import mirror_failures
from proxy.rollout.gates import GatePolicy
from proxy.stats.sequential import Estimate

MIN_RATIO_PAIRS: Final = 30  # timed pairs before the paired latency ratio is judged (plug-in variance)


def _nodata(gate: Gate, threshold: float, detail: str) -> GateResult:
    return GateResult(
        gate=gate,
        verdict="NODATA",
        value=None,
        baseline=None,
        threshold=threshold,
        p_value=None,
        detail=detail,
    )


def judge_shadow(
    report: dict[str, Any], policy: GatePolicy, shadow_samples: int
) -> tuple[list[GateResult], bool]:
    """The shadow gates over every route's evaluation, and whether there were enough pairs to judge."""
    routes = list(report.get("routes", {}).values())
    compared = sum(int(r.get("compared", 0)) for r in routes)
    pairs = sum(int(r.get("pairs_total", 0)) for r in routes)
    if compared < max(shadow_samples, 1):
        why = f"{compared} of {shadow_samples} compared pairs so far"
        # A pair is compared only when both answered, so a candidate that fails its mirrors would never
        # reach shadow_samples: its failures are judged on every mirrored pair meanwhile, and fail it.
        errors = _errors(routes, pairs, policy) if pairs else None
        if errors is not None and errors.verdict == "HIGH":
            return [
                _nodata("decision_delta", policy.decision_delta_pp, why),
                errors,
                _nodata("latency_p95", policy.latency_p95_ms, why),
            ], True
        return [
            _nodata("decision_delta", policy.decision_delta_pp, why),
            _nodata("error_rate", policy.error_rate, why),
            _nodata("latency_p95", policy.latency_p95_ms, why),
        ], False
    return [_divergence(routes, policy), _errors(routes, pairs, policy), _latency(routes, policy)], True


def _divergence(routes: list[dict[str, Any]], policy: GatePolicy) -> GateResult:
    worst: GateResult | None = None
    for r in routes:
        d = r.get("decision_divergence_pp") or {}
        value, ci = d.get("value"), d.get("ci95")
        if value is None or not ci:
            continue
        lo, hi = ci
        limit = policy.decision_delta_pp
        verdict: GateVerdict = "HIGH" if lo > limit else "PASS" if hi <= limit else "INCONCLUSIVE"
        result = GateResult(
            gate="decision_delta",
            verdict=verdict,
            value=value,
            baseline=0.0,
            threshold=limit,
            p_value=None,
            detail=f"{r.get('route')}: decisions differ in {value:.2f} pp of pairs "
            f"[{lo:.2f}, {hi:.2f}] vs {limit:g} pp",
        )
        if worst is None or _rank(result) > _rank(worst):
            worst = result
    return worst or _nodata("decision_delta", policy.decision_delta_pp, "no decisions to compare (no score)")


def _errors(routes: list[dict[str, Any]], pairs: int, policy: GatePolicy) -> GateResult:
    """The candidate's failures on the mirrored requests against ``error_rate``, and against the
    baseline's on the same requests: errors both versions had at the same moments (a burst upstream of
    both) are not the candidate's, so over the threshold fails only when the baseline is within it or the
    candidate fails clearly more (``error_ratio`` x and ``error_delta`` over it, at the lower bound).

    The phase re-judges its pairs every window, so the bounds are confidence sequences, as the canary's
    are: the lower one at the fail tests' level (``fail_alpha``), the upper one at ``family_alpha``."""
    errors, breaches = mirror_failures(routes, "candidate")
    failures = errors + breaches
    rate = failures / pairs if pairs else 0.0
    limit = policy.error_rate
    if pairs and limit > 0.0:
        # A score test against the threshold, as the canary's error gate: the variance at the limit.
        own = Estimate(rate, limit * (1.0 - limit) / pairs, limit * limit)
        lo, hi = max(0.0, own.lower(policy.fail_alpha)), min(1.0, own.upper(policy.family_alpha))
    else:
        lo, hi = (0.0, 1.0) if not pairs else (rate, rate)
    base_failures = sum(mirror_failures(routes, "baseline"))
    base = base_failures / pairs if pairs else 0.0
    worse = lo >= policy.error_ratio * base and lo >= base + policy.error_delta
    verdict: GateVerdict = "PASS" if hi <= limit else "INCONCLUSIVE"
    if lo > limit and (base <= limit or worse):
        verdict = "HIGH"
    shared = " (the baseline is over it too)" if lo > limit and verdict != "HIGH" else ""
    return GateResult(
        gate="error_rate",
        verdict=verdict,
        value=rate,
        baseline=base,
        threshold=limit,
        p_value=None,
        detail=f"error_rate: candidate failed {failures} of {pairs} mirrors ({errors} errors, "
        f"{breaches} contract breaches): {100 * rate:.2f}% [{100 * lo:.2f}, {100 * hi:.2f}] "
        f"vs {100 * limit:g}%, baseline {100 * base:.2f}% on the same requests{shared}",
    )


def _latency(routes: list[dict[str, Any]], policy: GatePolicy) -> GateResult:
    """Two questions per route, on the mirrored pairs.

    - Absolute: the candidate's p95 against ``latency_p95_ms``. Over it but within ``latency_ratio`` of the
      baseline's own p95, measured through the same proxy at the same moments, is not the candidate's
      fault (a slow host slows both): inconclusive.
    - Relative, paired: ln(candidate / baseline latency) on each pair, the same request at the same moment,
      so shared slowness cancels; its mean with a confidence sequence (the phase re-judges every window),
      exponentiated: the candidate's per-request slowdown. A candidate twice as slow fails here even when
      both are far under the threshold.

    HIGH when either fails: the absolute one as above, the relative one when the sequence's lower end (at
    ``fail_alpha``) is over halfway to ``latency_ratio`` (its square root) while the upper end (at
    ``family_alpha``) is not within it. PASS needs both shown: p95 within the threshold and the upper end
    at most ``latency_ratio``. Otherwise INCONCLUSIVE, and the phase holds.
    """
    worst: GateResult | None = None
    limit = policy.latency_p95_ms
    for r in routes:
        lat = r.get("latency_ms") or {}
        cand = (lat.get("candidate") or {}).get("p95")
        base = (lat.get("baseline") or {}).get("p95")
        if cand is None:
            continue
        verdict: GateVerdict = "PASS"
        if cand > limit:
            verdict = "HIGH" if base is None or cand > policy.latency_ratio * base else "INCONCLUSIVE"
        versus = f" (baseline {base:.1f} ms)" if base is not None else ""
        paired, ratio_verdict = _paired_ratio(r.get("latency_ratio") or {}, policy)
        if ratio_verdict == "HIGH" or verdict == "HIGH":
            verdict = "HIGH"
        elif ratio_verdict != "PASS":
            verdict = "INCONCLUSIVE"
        result = GateResult(
            gate="latency_p95",
            verdict=verdict,
            value=cand,
            baseline=base,
            threshold=limit,
            p_value=None,
            detail=f"latency_p95: candidate p95 {cand:.1f} ms{versus} vs {limit:g} ms; {paired}",
        )
        if worst is None or _rank(result) > _rank(worst):
            worst = result
    return worst or _nodata("latency_p95", limit, "no candidate latency yet")


def _paired_ratio(ratio: dict[str, Any], policy: GatePolicy) -> tuple[str, GateVerdict]:
    """The paired slowdown's sentence and verdict (see :func:`_latency`)."""
    n, mean, sd = int(ratio.get("pairs") or 0), ratio.get("log_mean"), ratio.get("log_sd")
    margin = policy.latency_ratio
    if n < MIN_RATIO_PAIRS or mean is None or sd is None:
        return f"per request: {n} timed pairs, too few for a ratio (needs {MIN_RATIO_PAIRS})", "INCONCLUSIVE"
    # The mixture is tuned to the margin it must resolve (ln 1.2 for the default x1.2); a margin of 1
    # has no width, so a floor keeps the sequence defined.
    own = Estimate(mean, sd * sd / n, max(math.log(margin), 0.05) ** 2)
    lo, hi = math.exp(own.lower(policy.fail_alpha)), math.exp(own.upper(policy.family_alpha))
    # Failing needs the slowdown shown beyond half the margin (on the log scale: x1.095 for x1.2) and not
    # shown within it. Beyond 1 alone would fail candidates well inside the margin once pairs are many;
    # beyond the margin itself would hold one exactly at the margin in shadow forever.
    halfway = math.sqrt(margin)
    verdict: GateVerdict = "PASS" if hi <= margin else "HIGH" if lo > halfway else "INCONCLUSIVE"
    sentence = (
        f"per request x{math.exp(mean):.2f} the baseline's latency [{lo:.2f}, {hi:.2f}] over {n} pairs "
        f"vs x{margin:g}"
    )
    return sentence, verdict


def _rank(g: GateResult) -> int:
    return {"PASS": 0, "NODATA": 1, "INCONCLUSIVE": 2, "LOW": 3, "HIGH": 3}[g.verdict]
