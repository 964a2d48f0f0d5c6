"""Rollout state (immutable, revisioned) and its legal transitions. Pure: the caller passes the clock.

Every change returns a new :class:`RolloutState` with ``revision + 1``; the state store persists it
with compare-and-set on the revision, which is what makes ``If-Match`` and concurrent writers safe.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import Any

from .errors import IllegalTransition


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

    @property
    def weight(self) -> float:
        """The canary weight in percent."""
        return self.weight_bp / 100

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["phase"] = self.phase.value
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
        )


def new_rollout_id() -> str:
    return secrets.token_hex(8)


def initial(candidate_version: str, weight_bp: int, now: str) -> RolloutState:
    """The state a store starts from when it holds none: the configured weight, set by hand."""
    return RolloutState(
        revision=1,
        rollout_id=new_rollout_id(),
        phase=Phase.PAUSED if weight_bp else Phase.IDLE,
        weight_bp=weight_bp,
        candidate_version=candidate_version,
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
    return replace(
        state,
        revision=state.revision + 1,
        weight_bp=weight_bp,
        phase=phase,
        updated_at=now,
        reason=reason or "weight set by hand",
    )


def reconcile_candidate(state: RolloutState, candidate_version: str, now: str) -> RolloutState | None:
    """A restart with another candidate configured never resumes the old weight: back to idle at 0.

    Returns the new state, or None when the configured candidate is the one the state was built for.
    """
    if state.candidate_version == candidate_version:
        return None
    return RolloutState(
        revision=state.revision + 1,
        rollout_id=new_rollout_id(),
        phase=Phase.IDLE,
        weight_bp=0,
        candidate_version=candidate_version,
        updated_at=now,
        reason=f"candidate changed from {state.candidate_version} to {candidate_version}: reset to idle",
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
