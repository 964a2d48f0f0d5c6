"""How much more evidence a step needs before its gates can pass, at the traffic it is getting.

Pure: no I/O, no clock. For each gate the last judgement left INCONCLUSIVE (or NODATA for too few
samples), the candidate requests its pass rule needs if the candidate goes on as observed so far (the
point estimates of this step), from the normal approximation of the bound the gate uses; None when it
cannot pass that way (the estimate is already beyond the threshold) or the gate has no such rule. The
controller turns the largest into time at the step's candidate rate, and says so in the HOLD's reason and
``/status``: a step that cannot decide within ``max_hold`` at this traffic is said to be, at once, not
discovered when it is over.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass

from proxy.rollout.decide import GateResult
from proxy.rollout.evidence import Evidence
from proxy.rollout.gates import GatePolicy
from proxy.stats.inference import z_upper


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


def _for_share(observed: float, limit: float, alpha: float) -> int | None:
    """Requests until a one-sided bound on a share observed at ``observed`` clears ``limit`` from below."""
    if observed >= limit:
        return None
    if observed <= 0.0:
        return math.ceil(-math.log(alpha) / limit)  # none seen: (1 - limit)^n <= alpha, the rule of three
    z = z_upper(alpha)
    return math.ceil(z * z * observed * (1.0 - observed) / (limit - observed) ** 2)


def evidence_needed(
    evidence: Evidence, policy: GatePolicy, gates: Sequence[GateResult], weight: float
) -> Needs:
    """``weight`` is the step's candidate share (0..1). Before the candidate has ``min_samples``
    requests its rates are taken to be the baseline's: what the step needs even if the candidate is as
    good as the baseline, which is what an operator wants to know at the start of a step."""
    b, c = evidence.baseline, evidence.candidate
    alpha = policy.family_alpha
    z = z_upper(alpha)
    undecided = {g.gate for g in gates if g.verdict in ("INCONCLUSIVE", "NODATA")}
    per_gate: dict[str, int | None] = {}
    n = c.requests
    early = n < policy.min_samples
    like = b if early else c  # whose rates the estimate assumes
    if early and undecided:
        per_gate["min_samples"] = policy.min_samples
    if "error_rate" in undecided and policy.error_rate > 0.0 and like.requests:
        per_gate["error_rate"] = _for_share(like.failures / like.requests, policy.error_rate, alpha)
    sample = like.latency_sample.sorted_values()
    for gate, q, t_ms in (
        ("latency_p95", 0.95, policy.latency_p95_ms),
        ("latency_p99", 0.99, policy.latency_p99_ms),
    ):
        if gate in undecided and sample:
            above = (len(sample) - bisect_left(sample, t_ms / 1000.0)) / len(sample)
            per_gate[gate] = _for_share(above, 1.0 - q, alpha)
    if "decision_delta" in undecided and like.decided and b.decided and 0.0 < weight < 1.0:
        pc, pb = like.positives / like.decided, b.positives / b.decided
        ratio = (1.0 - weight) / weight  # baseline decisions per candidate one: the weight keeps it
        spread = pc * (1.0 - pc) + pb * (1.0 - pb) / ratio
        # The difference so far, less its own noise: a few hundred decisions put it anywhere within a
        # few points, and the estimate would swing with it from window to window.
        gap = max(0.0, abs(pc - pb) - z * math.sqrt(spread / like.decided))
        room = policy.decision_delta_pp / 100.0 - gap
        needed = None if room <= 0.0 else math.ceil(z * z * spread / (room * room))
        decided_share = like.decided / like.requests if like.requests else 1.0
        # In candidate requests: decided ones are a share of them.
        per_gate["decision_delta"] = None if needed is None else math.ceil(needed / max(decided_share, 1e-9))
    return Needs(per_gate=per_gate, have=n)


def eta_seconds(needs: Needs, seconds_in_step: float, step_requests: int, weight: float) -> float | None:
    """Seconds until the step has what it needs at its candidate rate: the candidate's own requests so
    far, or, while it has few, the step's whole traffic times the weight. None if unknown."""
    more = needs.more
    if more is None or seconds_in_step <= 0.0:
        return None
    rate = max(needs.have, step_requests * weight) / seconds_in_step
    return more / rate if rate > 0.0 else None
