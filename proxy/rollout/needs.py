"""How much more evidence a step needs before its gates can pass, at the traffic it is getting.

Pure: no I/O, no clock. For each gate the last judgement left INCONCLUSIVE (or NODATA for too few
samples), the candidate requests its pass bounds (:class:`~proxy.rollout.gates.PassBound`, the same ones
the gate judged) need if the candidate goes on as observed so far: each bound's estimate held, its
variance shrinking as 1/n, until its confidence sequence's upper end is below the limit. None when it
cannot pass that way (the estimate is already at or beyond the limit). Before the step has its minimum
of candidate requests, the candidate is assumed to do as the baseline does: what the step needs even if
the candidate is as good as the baseline, which is what an operator wants to know at the start of a step.
The controller turns the largest into time at the step's candidate rate, and says so in the HOLD's reason
and ``/status``: a step that cannot decide within ``max_hold`` at this traffic is said to be, at once, not
discovered when it is over.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from proxy.rollout.decide import GateResult
from proxy.rollout.evidence import Evidence
from proxy.rollout.gates import GatePolicy, PassBound, judge_with_plan
from proxy.stats.sequential import cs_upper

_MAX_REQUESTS = 10**9  # beyond this, "waiting will not decide it" is the honest answer


@dataclass(frozen=True, slots=True)
class Needs:
    """Candidate requests each undecided gate needs in all (None: not by waiting), and the step's."""

    per_gate: dict[str, int | None]
    have: int  # candidate requests in the step so far

    @property
    def total(self) -> int | None:
        """The most any undecided gate needs; None when one cannot pass by waiting."""
        if not self.per_gate:
            return None
        values = list(self.per_gate.values())
        return None if any(v is None for v in values) else max(v for v in values if v is not None)

    @property
    def more(self) -> int | None:
        total = self.total
        return None if total is None else max(0, total - self.have)


def requests_to_clear(bound: PassBound, alpha: float, have: int) -> int | None:
    """Candidate requests (in all) at which ``bound`` clears its limit with its estimate held and its
    candidate part of the variance shrinking as 1/n; None if it never does. ``have`` is the candidate
    requests behind its ``count`` samples now (samples are a share of requests: decided ones, pairs)."""
    e = bound.estimate
    if not e.value < bound.limit or bound.count <= 0 or math.isinf(e.variance):
        return None
    unit = max(e.variance - bound.fixed, 0.0) * bound.count  # the candidate variance of one sample

    def clears(n: int) -> bool:
        return cs_upper(e.value, unit / n + bound.fixed, alpha, e.tuning) < bound.limit

    hi = 1
    while not clears(hi):
        hi *= 2
        if hi > _MAX_REQUESTS:
            return None
    lo = hi // 2  # does not clear (or is 0)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if clears(mid) else (mid, hi)
    return math.ceil(hi * max(have, 1) / bound.count)


def evidence_needed(
    evidence: Evidence, policy: GatePolicy, gates: Sequence[GateResult], scale: float
) -> Needs:
    """``scale`` is the step's margin scale (:meth:`GatePolicy.scale`); ``gates`` the last judgement."""
    b, c = evidence.baseline, evidence.candidate
    undecided = {g.gate for g in gates if g.verdict in ("INCONCLUSIVE", "NODATA")}
    per_gate: dict[str, int | None] = {}
    floor = policy.step_min_samples(scale)
    early = c.requests < floor
    if early and undecided:
        per_gate["min_samples"] = floor
        if b.requests < 2:
            return Needs(per_gate=per_gate, have=c.requests)
        # As good as the baseline: the baseline's own evidence judged as if it were the candidate's.
        # (Its relative bounds then count the baseline's variance twice: an estimate on the long side.)
        _, plans = judge_with_plan(Evidence(b, b), policy, scale)
        have = b.requests
    else:
        _, plans = judge_with_plan(evidence, policy, scale)
        have = c.requests
    for gate, plan in plans.items():
        if gate not in undecided or not plan:
            continue
        counts = [requests_to_clear(bd, policy.family_alpha, have) for bd in plan]
        if any(n is None for n in counts):
            per_gate[gate] = None
        else:
            per_gate[gate] = max(n for n in counts if n is not None)
    return Needs(per_gate=per_gate, have=c.requests)


def eta_seconds(needs: Needs, seconds_in_step: float, step_requests: int, weight: float) -> float | None:
    """Seconds until the step has what it needs at its candidate rate: the candidate's own requests so
    far, or, while it has few, the step's whole traffic times the weight. None if unknown."""
    more = needs.more
    if more is None or seconds_in_step <= 0.0:
        return None
    rate = max(needs.have, step_requests * weight) / seconds_in_step
    return more / rate if rate > 0.0 else None
