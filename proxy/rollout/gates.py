"""Judging a canary step's evidence against its gates (PRODUCT §5, ``canary.gates``).

Pure: no I/O, no clock. :func:`judge` turns an :class:`~proxy.rollout.evidence.Evidence` into one
:class:`GateResult` per gate, each PASS, HIGH or LOW (failed), INCONCLUSIVE or NODATA. Missing evidence is
never a failure: below ``min_samples`` candidate requests every gate is NODATA.

How each gate decides (alpha = ``family_alpha``; "Holm" = tested at its Holm-Bonferroni level):

- error_rate: fails when an exact binomial test puts the candidate's rate above the threshold (Holm), or a
  one-sided Fisher exact test puts it above the baseline's (Holm) while the rate's one-sided (1 - alpha)
  Wilson lower bound is also at least ``error_ratio`` x and ``error_delta`` over the baseline's rate;
  passes when the exact binomial test puts it below the threshold at alpha and the relative test is not
  significant at alpha (or not practically large).
- latency_p95 and latency_p99: the same shape. Absolute: the count of sampled latencies above the
  threshold against Binomial(n, 1 - q), the distribution-free (order-statistic) bound on the quantile.
  Relative: one-sided
  Mann-Whitney U on the samples (p95 only), and Mood's quantile test at the pooled quantile (each its own
  Holm member), with the ratio guard ``latency_ratio`` on the histograms' quantiles. The p99 gate sees a
  tail-only regression the p95 and the U test miss.
- decision_delta: Newcombe's hybrid score interval for the difference of positive-decision rates; fails
  (HIGH or LOW, by side) when its Holm-level one-sided bound lies beyond +-``decision_delta_pp``; passes when
  both one-sided alpha bounds lie within (two one-sided tests); NODATA when neither version has decisions.
- score_shift: fails when two-sample KS is significant (Holm) and PSI > ``score_psi``; passes when PSI <=
  ``score_psi`` / 2, or KS is not significant at alpha.
- policy_violations: a count, no statistics: more than the threshold fails.
- cost_per_1k: a one-sided CLT bound on the mean per-request cost; a constant cost compares exactly.

Shared breaches. An absolute threshold the baseline is over too, in the same step (a brownout, a burst
of errors upstream of both), fails nobody: the gate is INCONCLUSIVE unless the relative test fails the
candidate against the baseline, so only what the candidate does worse than the baseline can fail it.

Error control. Failing is what must not happen by chance, so the fail-direction tests of all gates form one
Holm-Bonferroni family at ``family_alpha``: a candidate identical to the baseline fails *any* gate of a
judgement with probability at most ``family_alpha``, where separate 5% tests on its (up to eight)
hypotheses would fail about a third of them. A gate without a test (a count, a constant cost, NODATA)
is not in the family. Passing needs every gate to pass, an intersection-union test, so each pass bound is
a plain one-sided alpha bound and the chance of passing a window in breach of a gate is at most alpha.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from proxy.config.model import CanaryConfig
from proxy.rollout.decide import (
    GATES,
    Gate,
    GateResult,
    GateVerdict,
)
from proxy.rollout.evidence import Evidence, VersionWindow
from proxy.stats.inference import (
    binom_cdf,
    binom_sf,
    exceedance_greater,
    fisher_greater,
    holm_adjust,
    ks_2samp,
    mann_whitney_greater,
    newcombe_interval,
    newcombe_p,
    normal_sf,
    psi,
    wilson_interval,
    z_upper,
)

_Q: Final = 0.95  # the latency quantile the gate is about


@dataclass(frozen=True, slots=True, kw_only=True)
class GatePolicy:
    """Thresholds of ``canary.gates`` and the statistical settings of a judgement, built by
    :meth:`from_config` (the defaults are the config's, ``config/model.py``).

    latency_p95_ms -- candidate p95 (ms) above this fails.
    latency_p99_ms -- candidate p99 (ms) above this fails.
    error_rate -- candidate failure share above this fails.
    decision_delta_pp -- positive-decision rates further apart than this (percentage points) fail.
    policy_violations -- more violations than this fail.
    cost_per_1k -- mean cost per 1000 candidate requests above this fails.
    score_psi -- PSI of candidate against baseline scores above this (with KS significant) fails.
    min_samples -- candidate requests below which every gate is NODATA.
    family_alpha -- one-sided; the chance that a judgement fails any gate by chance.
    latency_ratio -- a relative latency regression must also have p95 >= this x the baseline's.
    error_ratio -- a relative error regression must also have a rate >= ratio x
        the baseline's and >= the baseline's + delta, at the rate's one-sided (1 - alpha) lower bound.
    """

    latency_p95_ms: float
    latency_p99_ms: float
    error_rate: float
    decision_delta_pp: float
    policy_violations: int
    cost_per_1k: float
    score_psi: float
    min_samples: int
    family_alpha: float
    latency_ratio: float
    error_ratio: float
    error_delta: float

    @classmethod
    def from_config(cls, canary: CanaryConfig, **overrides: Any) -> GatePolicy:
        """The policy of ``canary.gates`` and ``canary.min_samples``; ``overrides`` replace fields."""
        g = canary.gates
        fields = {
            "latency_p95_ms": g.latency_p95_ms,
            "latency_p99_ms": g.latency_p99_ms,
            "error_rate": g.error_rate,
            "decision_delta_pp": g.decision_delta_pp,
            "policy_violations": g.policy_violations,
            "cost_per_1k": g.cost_per_1k,
            "score_psi": g.score_psi,
            "min_samples": canary.min_samples,
            "family_alpha": g.family_alpha,
            "latency_ratio": g.latency_ratio,
            "error_ratio": g.error_ratio,
            "error_delta": g.error_delta,
        }
        return cls(**{**fields, **overrides})

    def __post_init__(self) -> None:
        if not 0.0 < self.family_alpha < 0.5:
            raise ValueError(f"family_alpha must be in (0, 0.5), got {self.family_alpha}")
        if self.min_samples < 1:
            raise ValueError(f"min_samples must be >= 1, got {self.min_samples}")
        thresholds = (self.latency_p95_ms, self.latency_p99_ms, self.error_rate, self.decision_delta_pp)
        if min(*thresholds, self.cost_per_1k) < 0:
            raise ValueError("gate thresholds must be >= 0")


# ---------------------------------------------------------------------------------------------------------
# Formatting: details are read by people, in logs and on the status page.


def _pct(share: float | None) -> str:
    if share is None:
        return "n/a"
    v = 100.0 * share
    return f"{v:.1f}%" if v >= 1.0 else f"{v:.2g}%"


def _ms_text(ms: float | None) -> str:
    if ms is None:
        return "n/a"
    return f"{ms:.0f} ms" if ms >= 10 else f"{ms:.1f} ms"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


def _p(p: float | None) -> str:
    if p is None:
        return ""
    return "p<0.0001" if p < 1e-4 else f"p={p:.2g}"


def _pp(share: float, unit: str = " pp") -> str:
    v = 100.0 * share
    return f"{0.0 if abs(v) < 0.05 else v:+.1f}{unit}"  # never "-0.0"


# ---------------------------------------------------------------------------------------------------------
# Each gate first computes its statistics and the raw p-values of its fail-direction tests (which join the
# Holm family), then, once every test's adjusted p-value is known, its verdict.

_Finish = Callable[[dict[str, float]], tuple[GateVerdict, float | None, str]]


@dataclass(slots=True)
class _Draft:
    gate: Gate
    value: float | None
    baseline: float | None
    threshold: float
    tests: dict[str, float] = field(default_factory=dict)  # raw p-values, by test name
    finish: _Finish | None = None  # None: verdict already known
    verdict: GateVerdict = "NODATA"
    detail: str = ""


def _fixed(gate: Gate, verdict: GateVerdict, value: float | None, threshold: float, detail: str) -> _Draft:
    return _Draft(gate, value, None, threshold, verdict=verdict, detail=detail)


def _error_rate(b: VersionWindow, c: VersionWindow, pol: GatePolicy) -> _Draft:
    n, x, t, alpha = c.requests, c.failures, pol.error_rate, pol.family_alpha
    rate, base = x / n, b.error_rate
    draft = _Draft("error_rate", rate, base, t)
    vs = f"baseline {_pct(base)}, n={n}"
    if t <= 0.0:  # "no failures at all": a count, nothing to estimate
        draft.verdict = "HIGH" if x > 0 else "PASS"
        draft.detail = f"error_rate {_pct(rate)} vs 0 allowed ({vs})"
        return draft
    draft.tests["abs"] = binom_sf(x, n, t)  # H0: rate <= t
    p_within = binom_cdf(x, n, t)  # H0: rate >= t
    if base is not None:
        draft.tests["rel"] = fisher_greater(x, n, b.failures, b.requests)
    # "Practically large" must hold with confidence too, not just for the point estimate: 3 failures in
    # the first 280 requests against a 0.1% baseline are significant and 10x, yet happen in ~0.3% of
    # healthy rollouts, and at a 1% step three windows in a row see nearly the same requests.
    floor = wilson_interval(x, n, z_upper(alpha))[0]
    guard = base is not None and floor >= pol.error_ratio * base and floor >= base + pol.error_delta
    raw_rel = draft.tests.get("rel", 1.0)
    relative = f"{pol.error_ratio:g}x baseline {_pct(base)} ({_pp(rate - (base or 0.0))}, n={n}"

    # A breach the baseline shares over the same span (a brownout, errors upstream of both) is not the
    # candidate's: then only the relative test can fail it.
    shared = base is not None and base > t

    def finish(adj: dict[str, float]) -> tuple[GateVerdict, float | None, str]:
        p_abs, p_rel = adj["abs"], adj.get("rel", 1.0)
        shown = min(p_abs, p_rel) if guard else p_abs
        # An operator reads the configured threshold first; the relative test speaks if it alone fails.
        if p_abs < alpha and not shared:
            return "HIGH", p_abs, f"error_rate {_pct(rate)} > {_pct(t)} ({vs}, {_p(p_abs)})"
        if guard and p_rel < alpha:
            return "HIGH", p_rel, f"error_rate {_pct(rate)} > {relative}, {_p(p_rel)})"
        if shared and p_abs < alpha:
            return (
                "INCONCLUSIVE",
                shown,
                f"error_rate {_pct(rate)} vs {_pct(t)}: the baseline is over it too ({vs})",
            )
        if p_within < alpha and not (guard and raw_rel < alpha):
            return "PASS", shown, f"error_rate {_pct(rate)} <= {_pct(t)} ({vs})"
        return "INCONCLUSIVE", shown, f"error_rate {_pct(rate)} vs {_pct(t)}: not yet clear ({vs})"

    draft.finish = finish
    return draft


def _latency(b: VersionWindow, c: VersionWindow, pol: GatePolicy) -> _Draft:
    return _quantile_gate(b, c, pol, "latency_p95", 0.95, pol.latency_p95_ms, rank_test=True)


def _latency_tail(b: VersionWindow, c: VersionWindow, pol: GatePolicy) -> _Draft:
    return _quantile_gate(b, c, pol, "latency_p99", 0.99, pol.latency_p99_ms, rank_test=False)


def _quantile_gate(
    b: VersionWindow, c: VersionWindow, pol: GatePolicy, gate: Gate, q: float, t_ms: float, *, rank_test: bool
) -> _Draft:
    """A latency quantile against its threshold and against the baseline's. The p95 gate adds the U test
    (a slower distribution); the p99 gate only the quantile test, which sees a tail the U statistic and
    the p95 hardly notice (a slow path on 2% of requests doubles the p99)."""
    alpha = pol.family_alpha
    value, base = _ms(c.latency.quantile(q)), _ms(b.latency.quantile(q))
    draft = _Draft(gate, value, base, t_ms)
    sample = c.latency_sample.sorted_values()
    m, t_s = len(sample), t_ms / 1000.0
    # pq <= T means P(X > T) <= 1 - q, and pq >= T means P(X >= T) >= 1 - q: exceedances are binomial.
    draft.tests["abs"] = binom_sf(m - bisect_right(sample, t_s), m, 1.0 - q)
    p_within = binom_cdf(m - bisect_left(sample, t_s), m, 1.0 - q)
    base_sample = b.latency_sample.values()
    if base_sample:
        # The U test sees a slower distribution, the quantile test a heavier tail (a slow path on 6% of
        # requests moves the p95 by half and the U statistic hardly at all).
        if rank_test:
            draft.tests["rel"] = mann_whitney_greater(sample, base_sample)[1]
        draft.tests["tail"] = exceedance_greater(sample, base_sample, q)[1]
    guard = value is not None and base is not None and value >= pol.latency_ratio * base
    raw_rel = min(draft.tests.get("rel", 1.0), draft.tests.get("tail", 1.0))
    vs = f"baseline {_ms_text(base)}, n={c.requests}"
    relative = f"{pol.latency_ratio:g}x baseline {_ms_text(base)} (n={c.requests}"
    shared = base is not None and base > t_ms  # the baseline breaches it too: see _error_rate

    def finish(adj: dict[str, float]) -> tuple[GateVerdict, float | None, str]:
        p_abs, p_rel = adj["abs"], min(adj.get("rel", 1.0), adj.get("tail", 1.0))
        shown = min(p_abs, p_rel) if guard else p_abs
        text = f"{gate} {_ms_text(value)}"
        if p_abs < alpha and not shared:
            return "HIGH", p_abs, f"{text} > {_ms_text(t_ms)} ({vs}, {_p(p_abs)})"
        if guard and p_rel < alpha:
            return "HIGH", p_rel, f"{text} > {relative}, {_p(p_rel)})"
        if shared and p_abs < alpha:
            return "INCONCLUSIVE", shown, f"{text} vs {_ms_text(t_ms)}: the baseline is over it too ({vs})"
        if p_within < alpha and not (guard and raw_rel < alpha):
            return "PASS", shown, f"{text} <= {_ms_text(t_ms)} ({vs})"
        return "INCONCLUSIVE", shown, f"{text} vs {_ms_text(t_ms)}: not yet clear ({vs})"

    draft.finish = finish
    return draft


def _too_few(gate: Gate, what: str, nc: int, nb: int, pol: GatePolicy, threshold: float) -> _Draft | None:
    """NODATA when neither version has any (the route has no score), INCONCLUSIVE when either has fewer
    than ``min_samples``: a gate that can have data but has too little must not count as a pass."""
    if nc == 0 and nb == 0:
        return _fixed(gate, "NODATA", None, threshold, f"{gate}: no {what} on this route")
    if min(nc, nb) < pol.min_samples:
        counts = f"candidate {nc}, baseline {nb}; min_samples {pol.min_samples}"
        return _fixed(gate, "INCONCLUSIVE", None, threshold, f"{gate}: too few {what} ({counts})")
    return None


def _decision_delta(b: VersionWindow, c: VersionWindow, pol: GatePolicy) -> _Draft:
    margin, alpha = pol.decision_delta_pp / 100.0, pol.family_alpha
    early = _too_few("decision_delta", "decisions", c.decided, b.decided, pol, pol.decision_delta_pp)
    if early is not None:
        return early
    k1, n1, k2, n2 = c.positives, c.decided, b.positives, b.decided
    rc, rb = k1 / n1, k2 / n2
    draft = _Draft("decision_delta", rc, rb, pol.decision_delta_pp)
    p_above = newcombe_p(k1, n1, k2, n2, margin, "above")
    p_below = newcombe_p(k1, n1, k2, n2, margin, "below")
    draft.tests["delta"] = min(p_above, p_below)  # at most one of them can be small
    lo, hi = newcombe_interval(k1, n1, k2, n2, z_upper(alpha))
    text = (
        f"decision_delta {_pp(rc - rb)} (candidate {_pct(rc)}, baseline {_pct(rb)}, "
        f"bounds {_pp(lo, '')}..{_pp(hi)}, n={n1})"
    )

    def finish(adj: dict[str, float]) -> tuple[GateVerdict, float | None, str]:
        p = adj["delta"]
        if p < alpha:
            side: GateVerdict = "HIGH" if p_above < p_below else "LOW"
            return side, p, f"{text} beyond +-{pol.decision_delta_pp:g} pp, {_p(p)}"
        if -margin <= lo and hi <= margin:
            return "PASS", p, f"{text} within +-{pol.decision_delta_pp:g} pp"
        return "INCONCLUSIVE", p, f"{text} vs +-{pol.decision_delta_pp:g} pp: not yet clear"

    draft.finish = finish
    return draft


def _score_shift(b: VersionWindow, c: VersionWindow, pol: GatePolicy) -> _Draft:
    early = _too_few("score_shift", "scores", c.scores.count, b.scores.count, pol, pol.score_psi)
    if early is not None:
        return early
    bs, cs = b.scores.sorted_values(), c.scores.sorted_values()
    d, p_ks = ks_2samp(bs, cs)
    shift = psi(bs, cs)[0]
    draft = _Draft("score_shift", shift, None, pol.score_psi)
    draft.tests["ks"] = p_ks
    alpha = pol.family_alpha
    text = f"score_shift PSI {shift:.3f}, KS D {d:.3f}"

    def finish(adj: dict[str, float]) -> tuple[GateVerdict, float | None, str]:
        p = adj["ks"]
        if p < alpha and shift > pol.score_psi:
            return "HIGH", p, f"{text} > PSI {pol.score_psi:g} ({_p(p)}, n={len(cs)})"
        if shift <= pol.score_psi / 2.0 or p_ks >= alpha:
            return "PASS", p, f"{text} within PSI {pol.score_psi:g} (n={len(cs)})"
        return "INCONCLUSIVE", p, f"{text} vs PSI {pol.score_psi:g}: not yet clear ({_p(p)}, n={len(cs)})"

    draft.finish = finish
    return draft


def _policy(b: VersionWindow, c: VersionWindow, pol: GatePolicy) -> _Draft:
    v, t = c.policy_violations, pol.policy_violations
    draft = _Draft("policy_violations", float(v), float(b.policy_violations), float(t))
    draft.verdict = "HIGH" if v > t else "PASS"
    draft.detail = f"policy_violations {v} {'>' if v > t else '<='} {t}"
    return draft


def _cost(b: VersionWindow, c: VersionWindow, pol: GatePolicy) -> _Draft:
    m, alpha = c.cost_moments, pol.family_alpha
    value, t = 1000.0 * m.mean, pol.cost_per_1k
    draft = _Draft("cost_per_1k", value, b.cost_per_1k, t)
    text = f"cost_per_1k {value:.4g} vs {t:g} (baseline {b.cost_per_1k or 0.0:.4g}, n={m.count})"
    se = 1000.0 * (m.sample_variance / m.count) ** 0.5 if m.count > 1 else 0.0
    if se == 0.0:  # a constant per-request cost: nothing to estimate
        draft.verdict = "HIGH" if value > t else "PASS"
        draft.detail = text
        return draft
    draft.tests["mean"] = normal_sf((value - t) / se)
    p_within = normal_sf((t - value) / se)

    def finish(adj: dict[str, float]) -> tuple[GateVerdict, float | None, str]:
        p = adj["mean"]
        if p < alpha:
            return "HIGH", p, f"{text}: above ({_p(p)})"
        if p_within < alpha:
            return "PASS", p, f"{text}: within"
        return "INCONCLUSIVE", p, f"{text}: not yet clear"

    draft.finish = finish
    return draft


def judge(evidence: Evidence, policy: GatePolicy) -> list[GateResult]:
    """One result per gate, in :data:`GATES` order. See the module docstring for how each decides."""
    b, c = evidence.baseline, evidence.candidate
    if c.requests < policy.min_samples:
        detail = f"only {c.requests} candidate requests (min_samples {policy.min_samples})"
        thresholds = _thresholds(policy)
        return [GateResult(g, "NODATA", None, None, thresholds[g], None, f"{g}: {detail}") for g in GATES]
    judges = (_latency, _latency_tail, _error_rate, _decision_delta, _score_shift, _policy, _cost)
    drafts = [f(b, c, policy) for f in judges]
    keys = [(i, name) for i, d in enumerate(drafts) for name in d.tests]
    adjusted = holm_adjust([drafts[i].tests[name] for i, name in keys])
    per_draft: list[dict[str, float]] = [{} for _ in drafts]
    for (i, name), p in zip(keys, adjusted, strict=True):
        per_draft[i][name] = p
    results = []
    for d, adj in zip(drafts, per_draft, strict=True):
        verdict, p_value, detail = (d.verdict, None, d.detail) if d.finish is None else d.finish(adj)
        results.append(GateResult(d.gate, verdict, d.value, d.baseline, d.threshold, p_value, detail))
    return results


def _thresholds(p: GatePolicy) -> dict[Gate, float]:
    return {
        "latency_p95": p.latency_p95_ms,
        "latency_p99": p.latency_p99_ms,
        "error_rate": p.error_rate,
        "decision_delta": p.decision_delta_pp,
        "score_shift": p.score_psi,
        "policy_violations": float(p.policy_violations),
        "cost_per_1k": p.cost_per_1k,
    }
