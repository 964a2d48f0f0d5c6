"""Judging a canary step's evidence against its gates (``canary.gates``).

Pure: no I/O, no clock. :func:`judge` turns an :class:`~proxy.rollout.evidence.Evidence` into one
:class:`GateResult` per gate, each PASS, HIGH or LOW (failed), INCONCLUSIVE or NODATA. Missing evidence is
never a failure: below the step's minimum of candidate requests every gate is NODATA.

Every quantity is an :class:`~proxy.stats.sequential.Estimate` judged by its *confidence sequence*, which
holds at every look: the step's evidence is re-judged each window, and a bound that holds only at one
fixed sample size would be crossed by chance as the looks add up.

- **Fail** (HIGH/LOW) needs the fail-direction sequence at ``fail_alpha`` to exclude "no worse" *and*
  the pass-direction bound at ``family_alpha`` to reach the gate's margin: a regression that is real and
  not shown to be small. ``fail_alpha`` is ``family_alpha`` shared (Bonferroni) by every fail test of
  every judged step, so an A/A candidate fails any window of a whole rollout with probability at most
  ``family_alpha``, at any number of looks; rollback then still needs ``max_failed_windows`` in a row.
- **Pass** needs evidence of no practical regression, bounds not point estimates: the upper bound (at
  ``family_alpha``) of the candidate's p95 and p99 ratio to the baseline below ``latency_ratio`` and
  ``latency_p99_ratio``, of its error rate's difference below the error margin (the larger of
  ``error_delta`` and (``error_ratio`` - 1) x the baseline's rate), of the decision-rate difference within
  +-``decision_delta_pp``; and the absolute thresholds cleared. Passing needs every gate to pass (an
  intersection-union test), so each pass bound is a plain alpha bound.
- **Step evidence** (``canary.step_evidence: exposure``): a step before the last judged one proves the
  relative margins widened by (last judged weight / its weight), and its absolute gates pass when they
  have not failed; its minimum of candidate requests shrinks by the same factor (not below
  ``MIN_STEP_SAMPLES``). A regression's harm is its size times its exposure, so the 1% step proves a
  margin 50 times wider than the 50% step: it catches gross failures (with the trip-wire) in a window,
  and the last step before promotion carries the full proof. ``full``: every step proves everything.
- **Shared breaches**: an absolute threshold the baseline is over too, in the same step (a brownout, a
  burst of errors upstream of both), fails nobody: the gate is INCONCLUSIVE unless the relative test fails
  the candidate against the baseline.

The quantities: error rate, its share with variance p(1-p)/n ((x + 1/2)/(n + 1) for p, so none seen is
not certainty); latency, the log of the sampled p95 and p99 with variances from the order statistics
around them, and for the p95 also Mann-Whitney's rank shift P(X > Y) - 1/2 (a slower distribution);
decisions, the difference of positive shares; cost, the mean per-request cost. ``score_shift`` (KS and
PSI) and ``policy_violations`` (a count) keep their fixed-sample rules, KS at ``fail_alpha``.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Final

from proxy.config.model import CanaryConfig
from proxy.rollout.decide import GATES, Gate, GateResult, GateVerdict
from proxy.rollout.evidence import Evidence, Pairs, RateKind, VersionWindow
from proxy.stats.inference import ks_2samp, log_quantile, psi, rank_shift
from proxy.stats.sequential import Estimate, share_p

# The fail-direction tests of one judgement, each a member of the Bonferroni family: error rate
# (absolute, relative), p95 (absolute, ratio, rank shift, exceedance), p99 (absolute, ratio,
# exceedance), decision delta, score shift (KS), cost. A gate that has no data still counts: the family
# is fixed by the config.
FAIL_TESTS: Final = 12
MIN_STEP_SAMPLES: Final = 30  # the normal approximations behind every bound need a few dozen per side
# The rank shift a 20% slowdown of a lognormal latency (sigma 1) makes: P(X > Y) - 1/2 ~ 0.05. It only
# tunes where the shift's sequence is tightest; any value keeps its guarantee.
SHIFT_TUNING: Final = 0.05**2
# The tail test has most power against a candidate with this many times the baseline's share of requests
# beyond the pooled quantile (a slow path that doubles the p99). A latency property, so not error_ratio:
# tightening the error margin must not blunt the tail test.
TAIL_SHARE_RATIO: Final = 2.0


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
    min_samples -- candidate requests below which every gate is NODATA, at the last judged step.
    family_alpha -- one-sided: the chance that an A/A candidate fails a window anywhere in a rollout,
        and the chance that a candidate beyond a margin passes a step.
    latency_ratio -- the p95 ratio to the baseline that passing proves the candidate below.
    latency_p99_ratio -- likewise for the p99.
    error_ratio, error_delta -- the error margin over the baseline's rate: the larger of
        (error_ratio - 1) x that rate and error_delta.
    steps_judged -- judged steps in a rollout: they share the fail tests' ``family_alpha``.
    step_evidence -- "exposure": steps of less exposure prove wider margins (see the module docstring).
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
    latency_p99_ratio: float
    error_ratio: float
    error_delta: float
    steps_judged: int = 1
    step_evidence: str = "exposure"

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
            "latency_p99_ratio": g.latency_p99_ratio,
            "error_ratio": g.error_ratio,
            "error_delta": g.error_delta,
            "steps_judged": max(1, len(canary.steps) - 1),
            "step_evidence": canary.step_evidence,
        }
        return cls(**{**fields, **overrides})

    def __post_init__(self) -> None:
        if not 0.0 < self.family_alpha < 0.5:
            raise ValueError(f"family_alpha must be in (0, 0.5), got {self.family_alpha}")
        if self.min_samples < 1 or self.steps_judged < 1:
            raise ValueError("min_samples and steps_judged must be >= 1")
        thresholds = (self.latency_p95_ms, self.latency_p99_ms, self.error_rate, self.decision_delta_pp)
        if min(*thresholds, self.cost_per_1k) < 0:
            raise ValueError("gate thresholds must be >= 0")
        if min(self.latency_ratio, self.latency_p99_ratio, self.error_ratio) < 1.0:
            raise ValueError("latency_ratio, latency_p99_ratio and error_ratio must be >= 1")

    @property
    def fail_alpha(self) -> float:
        """The level of each fail test: ``family_alpha`` shared by every test of every judged step."""
        return self.family_alpha / (FAIL_TESTS * self.steps_judged)

    def scale(self, weight: float, last_judged: float) -> float:
        """How much wider than configured the relative margins are at a step of ``weight`` percent, when
        the last judged step is ``last_judged`` percent: 1.0 with ``step_evidence: full``."""
        if self.step_evidence != "exposure" or weight <= 0.0 or weight >= last_judged:
            return 1.0
        return last_judged / weight

    def step_min_samples(self, scale: float) -> int:
        """The candidate requests a step of ``scale`` needs before its gates speak."""
        return max(min(MIN_STEP_SAMPLES, self.min_samples), math.ceil(self.min_samples / scale))


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
# Each gate computes its estimates, then its verdict. ``_Judged`` carries what both the verdict and
# ``needs.py`` (how long until it can pass) read.


@dataclass(frozen=True, slots=True)
class PassBound:
    """One bound a gate's pass needs: ``estimate``'s upper end at ``family_alpha`` below ``limit``.
    ``count`` is the candidate sample size its variance comes from; ``fixed`` the part of the variance
    that more candidate samples do not shrink (the baseline's, in a comparison)."""

    estimate: Estimate
    limit: float
    count: int
    fixed: float = 0.0


def _clustered(c: VersionWindow, b: VersionWindow, kind: RateKind) -> str:
    """ ", clustered xD" when sticky keys make the counts worth D times fewer requests (shown from 1.2)."""
    d = max(c.clusters.design_effect(kind), b.clusters.design_effect(kind))
    return f", clustered x{d:.1f}" if d >= 1.2 else ""


def _share(x: int, n: int) -> tuple[float, float]:
    """(x/n, its variance): p(1 - p)/n with p = (x + 1/2)/(n + 1), so 0 of n is not certainty."""
    p = (x + 0.5) / (n + 1.0)
    return x / n, p * (1.0 - p) / n


class _Judgement:
    """The shared context of one judgement."""

    __slots__ = ("a_fail", "a_pass", "k", "pairs", "pol", "scale")

    def __init__(self, pol: GatePolicy, scale: float, pairs: Pairs) -> None:
        self.pol, self.scale, self.pairs = pol, scale, pairs
        self.a_pass, self.a_fail = pol.family_alpha, pol.fail_alpha
        self.k = FAIL_TESTS * pol.steps_judged  # the Bonferroni factor of a fail p-value

    def adjusted(self, p: float) -> float:
        return min(1.0, p * self.k)

    def clear(self, bounds: list[PassBound]) -> bool:
        return all(b.estimate.upper(self.a_pass) < b.limit for b in bounds)


def _error_rate(b: VersionWindow, c: VersionWindow, j: _Judgement, plan: list[PassBound]) -> GateResult:
    pol = j.pol
    n, x, t = c.requests, c.failures, pol.error_rate
    rate, var = _share(x, n)
    base = b.error_rate
    vs = f"baseline {_pct(base)}, n={n}"
    clumped = _clustered(c, b, "failures")
    vs += clumped
    if t <= 0.0:  # "no failures at all": a count, nothing to estimate
        verdict: GateVerdict = "HIGH" if x > 0 else "PASS"
        detail = f"error_rate {_pct(rate)} vs 0 allowed ({vs})"
        return GateResult("error_rate", verdict, rate, base, t, None, detail)
    # Against the threshold, a score test: the variance is the one the rate would have at the threshold,
    # which is what makes 8 failures in 200 clearly over 0.5% and 0 in 2,000 clearly under it.
    # Sticky routing draws users, not requests: clumped failures make the counts worth fewer requests.
    deff_c, deff_b = c.clusters.design_effect("failures"), b.clusters.design_effect("failures")
    deff = max(deff_c, deff_b)
    own = Estimate(rate, deff_c * t * (1.0 - t) / n, t * t)
    p_abs = j.adjusted(own.p_above(t))
    shared = base is not None and base > t
    abs_bound = PassBound(own, t, n) if j.scale == 1.0 else None
    margin = pol.error_delta
    p_rel, worse, rel_bound = 1.0, False, None
    if base is not None:
        nb = b.requests
        margin = max(pol.error_delta, (pol.error_ratio - 1.0) * base)
        tuning = (pol.error_delta * j.scale) ** 2
        # "Worse at all" counts failures at the same moment: each is the candidate's with its share of
        # the step's requests unless it fails more, whatever a shared burst does to both. "How much worse
        # at most" bounds the difference of rates, each with its own variance.
        base_var = deff_b * _share(b.failures, nb)[1]
        diff = Estimate(rate - base, deff_c * var + base_var, tuning)
        # Failing is judged at the configured margin at every step: the sequence tuned to it.
        at_margin = Estimate(diff.value, diff.variance, pol.error_delta**2)
        p_rel = j.adjusted(share_p(x / deff, (x + b.failures) / deff, n / (n + nb), pol.error_ratio))
        worse = p_rel < j.a_pass and at_margin.upper(j.a_pass) >= margin
        rel_bound = PassBound(diff, margin * j.scale, n, base_var)
    bounds = [bd for bd in (abs_bound, rel_bound) if bd is not None]
    plan.extend(bounds)
    gap = _pp(rate - (base or 0.0))
    shown = min(p_abs, p_rel)

    def result(verdict: GateVerdict, p: float, detail: str) -> GateResult:
        return GateResult("error_rate", verdict, rate, base, t, p, detail)

    if p_abs < j.a_pass and not shared:
        return result("HIGH", p_abs, f"error_rate {_pct(rate)} > {_pct(t)} ({vs}, {_p(p_abs)})")
    if worse:
        over = f"({gap}, margin {_pp(margin)}, n={n}, {_p(p_rel)})"
        return result("HIGH", p_rel, f"error_rate {_pct(rate)} > baseline {_pct(base)} {over}")
    if j.clear(bounds):
        # Without a baseline there was no relative bound to clear: say only what was proven.
        within = f", within {_pp(margin * j.scale)} of the baseline" if rel_bound is not None else ""
        return result("PASS", shown, f"error_rate {_pct(rate)} <= {_pct(t)}{within} ({vs})")
    if shared:
        return result(
            "INCONCLUSIVE", shown, f"error_rate {_pct(rate)} vs {_pct(t)}: the baseline is over it too ({vs})"
        )
    if rel_bound is not None and not j.clear([rel_bound]):
        upto, need = _pp(rel_bound.estimate.upper(j.a_pass)), _pp(rel_bound.limit)
        detail = f"error_rate {_pct(rate)}: {gap} vs baseline, up to {upto} so far, needs < {need} ({vs})"
        return result("INCONCLUSIVE", shown, detail)
    return result("INCONCLUSIVE", shown, f"error_rate {_pct(rate)} vs {_pct(t)}: not yet clear ({vs})")


def _latency(b: VersionWindow, c: VersionWindow, j: _Judgement, plan: list[PassBound]) -> GateResult:
    return _quantile_gate(b, c, j, plan, "latency_p95", 0.95, j.pol.latency_p95_ms, j.pol.latency_ratio)


def _latency_tail(b: VersionWindow, c: VersionWindow, j: _Judgement, plan: list[PassBound]) -> GateResult:
    return _quantile_gate(b, c, j, plan, "latency_p99", 0.99, j.pol.latency_p99_ms, j.pol.latency_p99_ratio)


def _quantile_gate(
    b: VersionWindow,
    c: VersionWindow,
    j: _Judgement,
    plan: list[PassBound],
    gate: Gate,
    q: float,
    t_ms: float,
    ratio: float,
) -> GateResult:
    """A latency quantile against its threshold and against the baseline's, on the log scale (ratios are
    differences there). The p95 gate adds the rank shift: a slower distribution shows there before its
    p95 ratio is clear."""
    value, base = _ms(c.latency.quantile(q)), _ms(b.latency.quantile(q))
    sample = c.latency_sample.sorted_values()
    m = len(sample)
    log_margin = math.log(ratio)
    tuning = max(log_margin, math.log(1.2)) ** 2  # the absolute bound's: where a threshold is decided
    est, var = log_quantile(sample, q)
    own = Estimate(est, var, tuning)
    log_t = math.log(t_ms / 1000.0) if t_ms > 0 else -math.inf
    p_abs = j.adjusted(own.p_above(log_t))
    shared = base is not None and base > t_ms
    abs_bound = PassBound(own, log_t, m) if j.scale == 1.0 else None
    base_sample = b.latency_sample.sorted_values()
    p_rel, worse, rel_bound = 1.0, False, None
    if len(base_sample) >= 2:
        b_est, b_var = log_quantile(base_sample, q)
        # Passing proves the step's (maybe widened) margin, so its sequence is tuned to that; failing is
        # judged at the configured margin at every step, with a sequence tuned to it.
        diff = Estimate(est - b_est, var + b_var, (log_margin * j.scale) ** 2)
        at_margin = Estimate(diff.value, diff.variance, log_margin**2)
        p_rel = j.adjusted(at_margin.p_above(0.0))
        not_small = at_margin.upper(j.a_pass) >= log_margin
        worse = p_rel < j.a_pass and not_small
        if q == 0.95 and not worse:
            shift, shift_var = rank_shift(sample, base_sample)
            floor = _practical_shift(base_sample, log_margin / 2.0)
            p_shift = j.adjusted(Estimate(shift, shift_var, SHIFT_TUNING).p_above(floor))
            if p_shift < j.a_pass and not_small:
                p_rel, worse = p_shift, True
        if not worse:
            p_tail = j.adjusted(_exceedance_p(sample, base_sample, q, ratio=TAIL_SHARE_RATIO))
            if p_tail < j.a_pass and not_small:
                p_rel, worse = p_tail, True
        rel_bound = PassBound(diff, log_margin * j.scale, m, b_var)
    bounds = [bd for bd in (abs_bound, rel_bound) if bd is not None]
    plan.extend(bounds)
    vs = f"baseline {_ms_text(base)}, n={c.requests}"
    text = f"{gate} {_ms_text(value)}"
    if p_abs < j.a_pass and not shared:
        return GateResult(
            gate, "HIGH", value, base, t_ms, p_abs, f"{text} > {_ms_text(t_ms)} ({vs}, {_p(p_abs)})"
        )
    if worse:
        slower = f"slower than baseline {_ms_text(base)}, not within x{ratio:g}"
        detail = f"{text} {slower} (n={c.requests}, {_p(p_rel)})"
        return GateResult(gate, "HIGH", value, base, t_ms, p_rel, detail)
    shown = min(p_abs, p_rel)
    if m >= 2 and j.clear(bounds):
        within = (
            f", within x{math.exp(log_margin * j.scale):.3g} of the baseline" if rel_bound is not None else ""
        )
        return GateResult(
            gate, "PASS", value, base, t_ms, shown, f"{text} <= {_ms_text(t_ms)}{within} ({vs})"
        )
    if shared:
        detail = f"{text} vs {_ms_text(t_ms)}: the baseline is over it too ({vs})"
        return GateResult(gate, "INCONCLUSIVE", value, base, t_ms, shown, detail)
    if rel_bound is not None and not j.clear([rel_bound]):
        upto = math.exp(rel_bound.estimate.upper(j.a_pass))
        need = math.exp(rel_bound.limit)
        detail = f"{text}: up to x{upto:.3g} the baseline's so far, needs < x{need:.3g} ({vs})"
    else:
        detail = f"{text} vs {_ms_text(t_ms)}: not yet clear ({vs})"
    return GateResult(gate, "INCONCLUSIVE", value, base, t_ms, shown, detail)


def _practical_shift(base_sorted: list[float], log_ratio: float) -> float:
    """The rank shift (P(C > B) - 1/2) that a slowdown by ``exp(log_ratio)`` on every request produces on
    the baseline's distribution: Phi(log_ratio / (s sqrt 2)) - 1/2, with s the baseline's log-latency
    spread (interquartile, so a heavy tail does not inflate it). The rank test fails the candidate only
    beyond it: a shift of any size is significant with enough requests, and one well inside the margin
    is not a regression to roll back for."""
    n = len(base_sorted)
    lo, hi = base_sorted[n // 4], base_sorted[(3 * n) // 4]
    if lo <= 0.0 or hi <= lo:
        return 0.0
    spread = (math.log(hi) - math.log(lo)) / 1.349
    return NormalDist().cdf(log_ratio / (spread * math.sqrt(2.0))) - 0.5


def _exceedance_p(cand: list[float], base: list[float], q: float, *, ratio: float) -> float:
    """Mood's quantile test as a count at the same moment: of the samples above the pooled ``q``-quantile,
    the candidate's share against its share of all samples (:func:`share_p`). A slow path on 2% of
    requests barely moves a sample p99 that sits in the gap between the paths, yet doubles the share of
    requests beyond the baseline's tail: this is the test that sees it."""
    pooled = sorted([*cand, *base])
    cut = pooled[min(len(pooled) - 1, max(0, math.ceil(q * len(pooled)) - 1))]
    above_c = len(cand) - bisect_right(cand, cut)
    above_b = len(base) - bisect_right(base, cut)
    return share_p(above_c, above_c + above_b, len(cand) / len(pooled), ratio)


def _too_few(gate: Gate, what: str, nc: int, nb: int, floor: int, threshold: float) -> GateResult | None:
    """NODATA when neither version has any (the route has no score), INCONCLUSIVE when either has fewer
    than ``floor``: a gate that can have data but has too little must not count as a pass."""
    if nc == 0 and nb == 0:
        return GateResult(gate, "NODATA", None, None, threshold, None, f"{gate}: no {what} on this route")
    if min(nc, nb) < floor:
        counts = f"candidate {nc}, baseline {nb}; needs {floor}"
        return GateResult(
            gate, "INCONCLUSIVE", None, None, threshold, None, f"{gate}: too few {what} ({counts})"
        )
    return None


def _decision_delta(b: VersionWindow, c: VersionWindow, j: _Judgement, plan: list[PassBound]) -> GateResult:
    pol = j.pol
    margin = pol.decision_delta_pp / 100.0
    floor = pol.step_min_samples(j.scale)
    tuning = (margin * j.scale) ** 2 if margin > 0 else 1e-4
    pairs = j.pairs
    if pairs.count >= floor:
        # Paired: the difference of positive shares on the same requests, from the discordant pairs.
        n = pairs.count
        d = (pairs.candidate_only - pairs.baseline_only) / n
        discordant = (pairs.candidate_only + pairs.baseline_only + 0.5) / (n + 1.0)
        diff = Estimate(d, max(discordant - d * d, 0.25 / (n + 1.0)) / n, tuning)
        rc, rb = (c.decision_rate or 0.0), (b.decision_rate or 0.0)
        count, how, fixed = n, f"paired, {n} pairs", 0.0
    else:
        early = _too_few("decision_delta", "decisions", c.decided, b.decided, floor, pol.decision_delta_pp)
        if early is not None:
            return early
        rc, vc = _share(c.positives, c.decided)
        rb, vb = _share(b.positives, b.decided)
        vc *= c.clusters.design_effect("positives")
        vb *= b.clusters.design_effect("positives")
        diff = Estimate(rc - rb, vc + vb, tuning)
        count, how, fixed = c.decided, f"n={c.decided}{_clustered(c, b, 'positives')}", vb
    lo, hi = diff.lower(j.a_pass), diff.upper(j.a_pass)
    at_margin = Estimate(diff.value, diff.variance, margin * margin if margin > 0 else 1e-4)
    p_above, p_below = j.adjusted(at_margin.p_above(0.0)), j.adjusted(at_margin.p_below(0.0))
    fail_lo, fail_hi = at_margin.lower(j.a_pass), at_margin.upper(j.a_pass)
    widened = margin * j.scale
    # Within: both ends inside the margin, two one-sided bounds; the lower end as an upper bound of -d.
    plan.append(PassBound(diff, widened, count, fixed))
    plan.append(PassBound(Estimate(-diff.value, diff.variance, diff.tuning), widened, count, fixed))
    text = (
        f"decision_delta {_pp(diff.value)} (candidate {_pct(rc)}, baseline {_pct(rb)}, "
        f"bounds {_pp(lo, '')}..{_pp(hi)}, {how})"
    )
    if p_above < j.a_pass and fail_hi >= margin:
        return GateResult(
            "decision_delta",
            "HIGH",
            rc,
            rb,
            pol.decision_delta_pp,
            p_above,
            f"{text} beyond +{pol.decision_delta_pp:g} pp, {_p(p_above)}",
        )
    if p_below < j.a_pass and fail_lo <= -margin:
        return GateResult(
            "decision_delta",
            "LOW",
            rc,
            rb,
            pol.decision_delta_pp,
            p_below,
            f"{text} beyond -{pol.decision_delta_pp:g} pp, {_p(p_below)}",
        )
    p = min(p_above, p_below)
    if -widened < lo and hi < widened:
        return GateResult(
            "decision_delta",
            "PASS",
            rc,
            rb,
            pol.decision_delta_pp,
            p,
            f"{text} within +-{100 * widened:g} pp",
        )
    return GateResult(
        "decision_delta",
        "INCONCLUSIVE",
        rc,
        rb,
        pol.decision_delta_pp,
        p,
        f"{text} vs +-{100 * widened:g} pp: not yet clear",
    )


def _score_shift(b: VersionWindow, c: VersionWindow, j: _Judgement, plan: list[PassBound]) -> GateResult:
    pol = j.pol
    floor = pol.step_min_samples(j.scale)
    early = _too_few("score_shift", "scores", c.scores.count, b.scores.count, floor, pol.score_psi)
    if early is not None:
        return early
    bs, cs = b.scores.sorted_values(), c.scores.sorted_values()
    d, p_ks = ks_2samp(bs, cs)
    shift = psi(bs, cs)[0]
    p = j.adjusted(p_ks)
    text = f"score_shift PSI {shift:.3f}, KS D {d:.3f}"
    if p < j.a_pass and shift > pol.score_psi:
        return GateResult(
            "score_shift",
            "HIGH",
            shift,
            None,
            pol.score_psi,
            p,
            f"{text} > PSI {pol.score_psi:g} ({_p(p)}, n={len(cs)})",
        )
    if shift <= pol.score_psi / 2.0 or p_ks >= pol.family_alpha:
        return GateResult(
            "score_shift",
            "PASS",
            shift,
            None,
            pol.score_psi,
            p,
            f"{text} within PSI {pol.score_psi:g} (n={len(cs)})",
        )
    return GateResult(
        "score_shift",
        "INCONCLUSIVE",
        shift,
        None,
        pol.score_psi,
        p,
        f"{text} vs PSI {pol.score_psi:g}: not yet clear ({_p(p)}, n={len(cs)})",
    )


def _policy(b: VersionWindow, c: VersionWindow, j: _Judgement, plan: list[PassBound]) -> GateResult:
    v, t = c.policy_violations, j.pol.policy_violations
    verdict: GateVerdict = "HIGH" if v > t else "PASS"
    detail = f"policy_violations {v} {'>' if v > t else '<='} {t}"
    return GateResult(
        "policy_violations", verdict, float(v), float(b.policy_violations), float(t), None, detail
    )


def _cost(b: VersionWindow, c: VersionWindow, j: _Judgement, plan: list[PassBound]) -> GateResult:
    m, t = c.cost_moments, j.pol.cost_per_1k
    value = 1000.0 * m.mean
    text = f"cost_per_1k {value:.4g} vs {t:g} (baseline {b.cost_per_1k or 0.0:.4g}, n={m.count})"
    var = 1e6 * m.sample_variance / m.count if m.count > 1 else 0.0
    if var == 0.0:  # a constant per-request cost: nothing to estimate
        verdict: GateVerdict = "HIGH" if value > t else "PASS"
        return GateResult("cost_per_1k", verdict, value, b.cost_per_1k, t, None, text)
    mean = Estimate(value, var, max(t, 1e-9) ** 2 / 4.0)
    p = j.adjusted(mean.p_above(t))
    bound = PassBound(mean, t, m.count)
    if j.scale == 1.0:
        plan.append(bound)
    if p < j.a_pass:
        return GateResult("cost_per_1k", "HIGH", value, b.cost_per_1k, t, p, f"{text}: above ({_p(p)})")
    if j.scale > 1.0 or j.clear([bound]):
        return GateResult("cost_per_1k", "PASS", value, b.cost_per_1k, t, p, f"{text}: within")
    return GateResult("cost_per_1k", "INCONCLUSIVE", value, b.cost_per_1k, t, p, f"{text}: not yet clear")


_JUDGES = (_latency, _latency_tail, _error_rate, _decision_delta, _score_shift, _policy, _cost)


def judge_with_plan(
    evidence: Evidence, policy: GatePolicy, scale: float = 1.0
) -> tuple[list[GateResult], dict[Gate, list[PassBound]]]:
    """The results of :func:`judge` and, per gate, the bounds its pass needs (for ``needs.py``)."""
    b, c = evidence.baseline, evidence.candidate
    floor = policy.step_min_samples(scale)
    if c.requests < floor:
        detail = f"only {c.requests} candidate requests (this step needs {floor})"
        thresholds = _thresholds(policy)
        return [GateResult(g, "NODATA", None, None, thresholds[g], None, f"{g}: {detail}") for g in GATES], {}
    j = _Judgement(policy, scale, evidence.pairs)
    results, plans = [], {}
    for f in _JUDGES:
        plan: list[PassBound] = []
        r = f(b, c, j, plan)
        results.append(r)
        plans[r.gate] = plan
    return results, plans


def judge(evidence: Evidence, policy: GatePolicy, scale: float = 1.0) -> list[GateResult]:
    """One result per gate, in :data:`GATES` order, at a step whose relative margins are ``scale`` times
    the configured ones (:meth:`GatePolicy.scale`). See the module docstring for how each decides."""
    return judge_with_plan(evidence, policy, scale)[0]


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
