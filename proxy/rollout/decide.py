"""The canary step decision: from one window's gate results to PROCEED, HOLD, ROLLBACK, PROMOTE or WAIT.

Pure: no I/O and no clock (the caller passes ``now`` in :class:`StepProgress`). The controller loop calls
:func:`decide` once per window with the gates :func:`proxy.rollout.gates.judge` returned, persists
``Decision.progress`` and acts on ``Decision.action``. The verdict vocabulary (:class:`GateResult`) lives
here so that judging (:mod:`proxy.rollout.gates`) and deciding stay apart; both import it from here.

Step -1 is the shadow phase, before the first step: its passing windows PROCEED to step 0.

Rules:

- A window *fails* when any gate failed (HIGH or LOW): consecutive failures + 1, passes reset to 0. At
  ``max_failed_windows`` consecutive failures: ROLLBACK, the reason naming the failing gates and values.
- A window *passes* when every gate is PASS or NODATA and at least one is PASS. NODATA then means the gate
  cannot have data (no score on the route); when every gate is NODATA the candidate had fewer than
  ``min_samples`` requests and the window is inconclusive. Passes + 1, consecutive failures reset to 0. At
  ``passes_per_step``: PROCEED to the next step; when that step is the last (100%), PROMOTE with
  ``auto_promote``, else WAIT for an operator, at the current step.
- Anything else is *inconclusive*: HOLD. It never fails and never advances; it keeps the pass count and
  ends a run of failing windows, since rollback needs ``max_failed_windows`` failing windows in a row.
- A step that has not advanced for longer than ``max_hold_s`` and whose window did not pass (inconclusive,
  or failing but not yet rolled back): ROLLBACK or WAIT per ``on_max_hold``, with that reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, Literal, get_args

from proxy.config.model import CanaryConfig

__all__ = [
    "GATES",
    "Action",
    "Decision",
    "Gate",
    "GateResult",
    "StepPolicy",
    "StepProgress",
    "GateVerdict",
    "decide",
]

Action = Literal["PROCEED", "HOLD", "ROLLBACK", "PROMOTE", "WAIT"]
GateVerdict = Literal["PASS", "HIGH", "LOW", "NODATA", "INCONCLUSIVE"]
Gate = Literal[
    "latency_p95",
    "latency_p99",
    "error_rate",
    "decision_delta",
    "score_shift",
    "policy_violations",
    "cost_per_1k",
]
GATES: Final[tuple[Gate, ...]] = get_args(Gate)  # in the order the gates are judged and shown


@dataclass(frozen=True, slots=True)
class GateResult:
    """One gate's verdict on one judgement.

    Units follow the config key: ``latency_p95`` and ``latency_p99`` in ms; ``error_rate`` as a share
    (0.01 = 1%); ``decision_delta``: ``value``/``baseline`` are positive-decision shares, ``threshold`` is
    in percentage points; ``score_shift``: ``value`` is the PSI (``baseline`` None); ``policy_violations``
    counts; ``cost_per_1k`` per 1000 requests. ``p_value`` is the Holm-adjusted one-sided p-value of the
    gate's fail-direction test (compare it with ``family_alpha``), None for gates judged without a test.
    ``detail`` is one sentence with the numbers, fit for a decision log.
    """

    gate: Gate
    verdict: GateVerdict
    value: float | None
    baseline: float | None
    threshold: float
    p_value: float | None
    detail: str

    @property
    def failed(self) -> bool:
        return self.verdict in ("HIGH", "LOW")

    def to_json(self) -> dict[str, Any]:
        return {
            "gate": self.gate,
            "verdict": self.verdict,
            "value": self.value,
            "baseline": self.baseline,
            "threshold": self.threshold,
            "p_value": self.p_value,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class StepPolicy:
    """How a rollout walks its steps (``canary.*``), built by :meth:`from_config` (the defaults are the
    config's, ``config/model.py``).

    steps -- candidate weights in percent, increasing; the last is 100 (promotion).
    passes_per_step -- passing windows needed before the next step.
    max_failed_windows -- consecutive failing windows that roll back.
    max_hold_s -- longest a step may go without passing before ``on_max_hold``.
    on_max_hold -- then wait for an operator, or "rollback".
    auto_promote -- move to the last step by itself; else wait for an operator at the one before.
    """

    steps: tuple[float, ...]
    passes_per_step: int
    max_failed_windows: int
    max_hold_s: float
    on_max_hold: Literal["wait", "rollback"]
    auto_promote: bool

    @classmethod
    def from_config(cls, canary: CanaryConfig, **overrides: Any) -> StepPolicy:
        """The step walk of ``canary``; ``overrides`` replace fields."""
        fields = {
            "steps": canary.steps,
            "passes_per_step": canary.passes_per_step,
            "max_failed_windows": canary.max_failed_windows,
            "max_hold_s": canary.max_hold,
            "on_max_hold": canary.on_max_hold,
            "auto_promote": canary.auto_promote,
        }
        return cls(**{**fields, **overrides})

    def __post_init__(self) -> None:
        s = self.steps
        if len(s) < 2 or s[-1] != 100 or not all(0 < a < b for a, b in zip(s, s[1:], strict=False)):
            raise ValueError(f"steps must increase from above 0 to a last step of 100, got {s}")
        if self.passes_per_step < 1 or self.max_failed_windows < 1:
            raise ValueError("passes_per_step and max_failed_windows must be >= 1")
        if not self.max_hold_s > 0:
            raise ValueError(f"max_hold_s must be > 0, got {self.max_hold_s}")


@dataclass(frozen=True, slots=True, kw_only=True)
class StepProgress:
    """Where a rollout stands within its step; ``decide`` returns the updated copy to persist.

    ``step`` indexes ``StepPolicy.steps`` (-1: the shadow phase); ``step_started_at`` and ``now`` are
    seconds on one clock.
    """

    step: int
    passes: int = 0
    consecutive_failures: int = 0
    step_started_at: float
    now: float

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "passes": self.passes,
            "consecutive_failures": self.consecutive_failures,
            "step_started_at": self.step_started_at,
            "now": self.now,
        }


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do after a window, and why (one line naming gates and values).

    ``next_step`` is the step index the action moves to (PROCEED, PROMOTE) or that an operator would
    approve (WAIT before promotion); None otherwise. ``progress`` holds the counters to persist: after
    PROCEED and PROMOTE it is the new step's, started at ``now``.
    """

    action: Action
    reason: str
    gates: tuple[GateResult, ...]
    next_step: int | None
    progress: StepProgress

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "reason": self.reason,
            "next_step": self.next_step,
            "progress": self.progress.to_json(),
            "gates": [g.to_json() for g in self.gates],
        }


def _duration(seconds: float) -> str:
    if seconds >= 120:
        return f"{seconds / 60:.0f}m"
    return f"{seconds:.0f}s"


def decide(progress: StepProgress, gates: Sequence[GateResult], policy: StepPolicy) -> Decision:
    """Judge one window (see the module docstring). ValueError when ``progress.step`` is not a step that
    is judged (-1 .. len(steps) - 2): the last step (100%) has no baseline left to compare with."""
    steps, last = policy.steps, len(policy.steps) - 1
    if not -1 <= progress.step < last:
        raise ValueError(f"step {progress.step} is not judged (steps {steps})")
    results = tuple(gates)
    at = "in shadow" if progress.step < 0 else f"at {steps[progress.step]:g}%"

    failed = [g for g in results if g.failed]
    if failed:
        n = progress.consecutive_failures + 1
        counted = replace(progress, passes=0, consecutive_failures=n)
        details = "; ".join(g.detail for g in failed)
        if n >= policy.max_failed_windows:
            return Decision(
                "ROLLBACK", f"{n} consecutive failing windows {at}: {details}", results, None, counted
            )
        why = f"failing window {n}/{policy.max_failed_windows} {at}: {details}"
    elif (
        results
        and all(g.verdict in ("PASS", "NODATA") for g in results)
        and any(g.verdict == "PASS" for g in results)
    ):
        n = progress.passes + 1
        counted = replace(progress, passes=n, consecutive_failures=0)
        if n < policy.passes_per_step:
            return Decision(
                "HOLD", f"passing window {n}/{policy.passes_per_step} {at}", results, None, counted
            )
        nxt = progress.step + 1
        fresh = StepProgress(step=nxt, step_started_at=progress.now, now=progress.now)
        passed = f"all gates passed {at} ({n}/{policy.passes_per_step})"
        if nxt < last:
            return Decision("PROCEED", f"{passed}: to {steps[nxt]:g}%", results, nxt, fresh)
        if policy.auto_promote:
            return Decision("PROMOTE", f"{passed}: promoting to {steps[nxt]:g}%", results, nxt, fresh)
        return Decision("WAIT", f"{passed}: waiting for an operator to promote", results, nxt, counted)
    else:
        counted = replace(progress, consecutive_failures=0)
        pending = [g for g in results if g.verdict == "INCONCLUSIVE"] or [
            g for g in results if g.verdict == "NODATA"
        ][:1]
        why = f"inconclusive {at}: " + ("; ".join(g.detail for g in pending) or "no gates")

    held = progress.now - progress.step_started_at
    if held > policy.max_hold_s:
        action: Action = "ROLLBACK" if policy.on_max_hold == "rollback" else "WAIT"
        reason = f"step held {_duration(held)} > max_hold {_duration(policy.max_hold_s)}; {why}"
        return Decision(action, reason, results, None, counted)
    return Decision("HOLD", why, results, None, counted)
