"""Rollout state (immutable, revisioned) and its legal transitions. Pure: the caller passes the clock.

Every change returns a new :class:`RolloutState` with ``revision + 1``; the state store persists it
with compare-and-set on the revision, which is what makes ``If-Match`` and concurrent writers safe.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import Any

from proxy.errors import IllegalTransition


class Phase(StrEnum):
    IDLE = "idle"
    SHADOW = "shadow"
    CANARY = "canary"
    PAUSED = "paused"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"


@dataclass(frozen=True, slots=True, kw_only=True)
class RolloutState:
    revision: int
    rollout_id: str  # salts the sticky hash: a new rollout draws a new set of users
    phase: Phase
    weight_bp: int  # candidate share in basis points: 100 = 1%
    candidate_version: str  # the candidate this state was built for; another one resets to idle
    step: int = -1  # index into canary.steps, -1 when not stepping
    updated_at: str = ""  # UTC, RFC 3339
    reason: str = ""
    shadow_sample: float | None = None  # set by an operator (PUT /shadow); None: shadow.sample from config
    paused_from: Phase | None = None  # what resume returns to
    step_started_ts: float = 0.0  # epoch seconds the current step (or shadow phase) began
    passes: int = 0  # passing windows at this step
    failed_windows: int = 0  # consecutive failing windows at this step
    candidate_digest: str = ""  # sha256 of the candidate's signed manifest, when one is configured

    @property
    def weight(self) -> float:
        """The canary weight in percent."""
        return self.weight_bp / 100

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["phase"] = self.phase.value
        doc["paused_from"] = self.paused_from.value if self.paused_from is not None else None
        doc["weight"] = self.weight
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> RolloutState:
        return cls(
            revision=int(doc["revision"]),
            rollout_id=str(doc["rollout_id"]),
            phase=Phase(doc["phase"]),
            weight_bp=int(doc["weight_bp"]),
            candidate_version=str(doc["candidate_version"]),
            step=int(doc.get("step", -1)),
            updated_at=str(doc.get("updated_at", "")),
            reason=str(doc.get("reason", "")),
            shadow_sample=None if doc.get("shadow_sample") is None else float(doc["shadow_sample"]),
            paused_from=Phase(doc["paused_from"]) if doc.get("paused_from") else None,
            step_started_ts=float(doc.get("step_started_ts", 0.0)),
            passes=int(doc.get("passes", 0)),
            failed_windows=int(doc.get("failed_windows", 0)),
            candidate_digest=str(doc.get("candidate_digest", "")),
        )


def new_rollout_id() -> str:
    return secrets.token_hex(8)


def initial(candidate_version: str, weight_bp: int, now: str, digest: str = "") -> RolloutState:
    """The state a store starts from when it holds none: the configured weight, set by hand."""
    return RolloutState(
        revision=1,
        rollout_id=new_rollout_id(),
        phase=Phase.PAUSED if weight_bp else Phase.IDLE,
        weight_bp=weight_bp,
        candidate_version=candidate_version,
        candidate_digest=digest,
        updated_at=now,
        reason="initial state from canary.weight",
    )


def set_weight(state: RolloutState, weight_bp: int, now: str, reason: str = "") -> RolloutState:
    """An operator sets the weight by hand: the controller, if any, is paused.

    Illegal while ``rolled_back`` (re-arm first): a latched rollback is not undone by a weight change.
    """
    if not 0 <= weight_bp <= 10_000:
        raise ValueError(f"weight_bp {weight_bp} is outside [0, 10000]")
    if state.phase is Phase.ROLLED_BACK:
        raise IllegalTransition("the rollout is rolled back: re-arm it before setting weights")
    phase = Phase.IDLE if weight_bp == 0 and state.phase is Phase.IDLE else Phase.PAUSED
    # A rollout paused by a hand-set weight can be resumed at its step; a weight set from idle cannot.
    paused_from = state.phase if state.phase in (Phase.SHADOW, Phase.CANARY) else state.paused_from
    return replace(
        state,
        paused_from=paused_from if phase is Phase.PAUSED else None,
        revision=state.revision + 1,
        weight_bp=weight_bp,
        phase=phase,
        updated_at=now,
        reason=reason or "weight set by hand",
    )


def reconcile_candidate(
    state: RolloutState, candidate_version: str, now: str, digest: str = ""
) -> RolloutState | None:
    """A restart with another candidate (version, or signed manifest) never resumes the old weight: back
    to idle at 0. Returns the new state, or None when it is the candidate the state was built for."""
    if state.candidate_version == candidate_version and (
        not digest or state.candidate_digest in ("", digest)
    ):
        return None
    reason = (
        f"candidate {candidate_version} has a different signed manifest: reset to idle"
        if state.candidate_version == candidate_version
        else f"candidate changed from {state.candidate_version} to {candidate_version}: reset to idle"
    )
    return RolloutState(
        revision=state.revision + 1,
        rollout_id=new_rollout_id(),
        phase=Phase.IDLE,
        weight_bp=0,
        candidate_version=candidate_version,
        candidate_digest=digest,
        updated_at=now,
        reason=reason,
    )


def set_shadow_sample(state: RolloutState, sample: float, now: str, reason: str = "") -> RolloutState:
    """An operator changes the share of baseline traffic mirrored to the candidate."""
    if not 0.0 <= sample <= 1.0:
        raise ValueError(f"shadow sample {sample} is outside [0, 1]")
    return replace(
        state,
        revision=state.revision + 1,
        shadow_sample=sample,
        updated_at=now,
        reason=reason or "shadow sample set by hand",
    )


# -- the rollout's own moves -----------------------------------------------------------------------------
# Each takes the state, the configured steps (weights in percent) and the clock, and returns the next
# state or raises IllegalTransition with a sentence an operator can act on (the admin API answers 409).

ACTIVE = frozenset({Phase.SHADOW, Phase.CANARY})


def _bp(percent: float) -> int:
    return round(percent * 100)


def _moved(state: RolloutState, now: str, ts: float, reason: str, **changes: Any) -> RolloutState:
    return replace(state, revision=state.revision + 1, updated_at=now, reason=reason, **changes)


def start(
    state: RolloutState,
    steps: tuple[float, ...],
    *,
    shadow_first: bool,
    now: str,
    ts: float,
    reason: str = "",
    rollout_id: str | None = None,
) -> RolloutState:
    """A new rollout: shadow first (weight 0) or straight to the first step, with a new draw of users
    (``rollout_id`` salts the draw: a fresh random one unless given, as a replay gives its own)."""
    if state.phase is not Phase.IDLE:
        raise IllegalTransition(
            f"a rollout can start only from idle, not {state.phase.value}"
            + (" (re-arm first)" if state.phase is Phase.ROLLED_BACK else "")
        )
    common = {
        "rollout_id": rollout_id or new_rollout_id(),
        "step_started_ts": ts,
        "passes": 0,
        "failed_windows": 0,
        "paused_from": None,
    }
    if shadow_first:
        return _moved(
            state,
            now,
            ts,
            reason or "rollout started: shadow phase",
            phase=Phase.SHADOW,
            weight_bp=0,
            step=-1,
            **common,
        )
    return _moved(
        state,
        now,
        ts,
        reason or f"rollout started at {steps[0]:g}%",
        phase=Phase.CANARY,
        weight_bp=_bp(steps[0]),
        step=0,
        **common,
    )


def advance(
    state: RolloutState, steps: tuple[float, ...], *, now: str, ts: float, reason: str
) -> RolloutState:
    """PROCEED: from the shadow phase to the first step, or from step i to step i + 1."""
    if state.phase not in ACTIVE:
        raise IllegalTransition(f"cannot advance from {state.phase.value}")
    nxt = state.step + 1
    if nxt >= len(steps):
        raise IllegalTransition("already at the last step: promote instead")
    return _moved(
        state,
        now,
        ts,
        reason,
        phase=Phase.CANARY,
        step=nxt,
        weight_bp=_bp(steps[nxt]),
        step_started_ts=ts,
        passes=0,
        failed_windows=0,
    )


def record_window(
    state: RolloutState, *, passes: int, failed_windows: int, now: str, reason: str
) -> RolloutState:
    """HOLD: the step stays, its counters move (persisted, so a restart does not forget them)."""
    if state.phase not in ACTIVE:
        raise IllegalTransition(f"no window is judged while {state.phase.value}")
    return _moved(state, now, 0.0, reason, passes=passes, failed_windows=failed_windows)


def promote(
    state: RolloutState, steps: tuple[float, ...], *, now: str, ts: float, reason: str = ""
) -> RolloutState:
    """The candidate takes 100%; it serves until an operator makes it the baseline in the config."""
    if state.phase not in (Phase.CANARY, Phase.PAUSED, Phase.SHADOW) or (
        state.phase is Phase.PAUSED and state.paused_from is None and state.weight_bp == 0
    ):
        raise IllegalTransition(f"nothing to promote while {state.phase.value}")
    return _moved(
        state,
        now,
        ts,
        reason or "promoted",
        phase=Phase.PROMOTED,
        weight_bp=10_000,
        step=len(steps) - 1,
        paused_from=None,
        step_started_ts=ts,
        passes=0,
        failed_windows=0,
    )


def rollback(state: RolloutState, *, now: str, ts: float, reason: str) -> RolloutState:
    """Weight 0 at once; the phase latches until an operator re-arms it."""
    if state.phase in (Phase.IDLE, Phase.ROLLED_BACK):
        raise IllegalTransition(f"nothing to roll back while {state.phase.value}")
    return _moved(
        state,
        now,
        ts,
        reason,
        phase=Phase.ROLLED_BACK,
        weight_bp=0,
        paused_from=None,
        passes=0,
        failed_windows=0,
        shadow_sample=None,  # an override set for the rollout ends with it; one set afterwards is asked anew
    )


def pause(state: RolloutState, *, now: str, reason: str = "") -> RolloutState:
    """The controller stops judging; the weight stays where it is."""
    if state.phase not in ACTIVE:
        raise IllegalTransition(f"only a shadow or canary phase can be paused, not {state.phase.value}")
    return _moved(
        state, now, 0.0, reason or "paused by an operator", phase=Phase.PAUSED, paused_from=state.phase
    )


def resume(
    state: RolloutState, steps: tuple[float, ...], *, now: str, ts: float, reason: str = ""
) -> RolloutState:
    """Back to the paused phase at its step's weight; the step's evidence starts afresh."""
    if state.phase is not Phase.PAUSED or state.paused_from is None:
        raise IllegalTransition(
            "nothing to resume: "
            + (
                "start a rollout"
                if state.phase is not Phase.PAUSED
                else "the weight was set by hand; start a rollout"
            )
        )
    weight = 0 if state.paused_from is Phase.SHADOW else _bp(steps[max(state.step, 0)])
    return _moved(
        state,
        now,
        ts,
        reason or "resumed by an operator",
        phase=state.paused_from,
        paused_from=None,
        weight_bp=weight,
        step_started_ts=ts,
        passes=0,
        failed_windows=0,
    )


def wait_for_operator(state: RolloutState, *, now: str, reason: str) -> RolloutState:
    """WAIT: the controller stops at this step until an operator promotes, resumes or rolls back."""
    return pause(state, now=now, reason=reason)


def rearm(state: RolloutState, *, now: str, reason: str = "") -> RolloutState:
    """Release a rolled-back latch: back to idle at weight 0, ready for a new start, under a new rollout id.

    The id is new so nothing done while idle (a weight set by hand, a preflight rehearsal) is recorded
    under the rolled-back rollout's id, with its artifacts and timeline."""
    if state.phase is not Phase.ROLLED_BACK:
        raise IllegalTransition(f"only a rolled-back rollout can be re-armed, not {state.phase.value}")
    return _moved(
        state,
        now,
        0.0,
        reason or "re-armed by an operator",
        rollout_id=new_rollout_id(),
        phase=Phase.IDLE,
        weight_bp=0,
        step=-1,
        paused_from=None,
        passes=0,
        failed_windows=0,
    )


BUCKETS = 10_000


def weight_to_bp(weight_percent: float) -> int:
    """Percent with 0.01 resolution -> basis points in [0, 10000]."""
    return max(0, min(BUCKETS, round(weight_percent * 100)))
