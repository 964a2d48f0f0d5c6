"""Evidence for the canary controller (PRODUCT §5).

Pure: no I/O, no clock, no framework. :class:`VersionWindow` holds everything one version did since the
current step began, in memory fixed at construction; :class:`Evidence` pairs the baseline's window with the
candidate's. The gates in :mod:`proxy.rollout.gates` judge an :class:`Evidence` with the statistics of
:mod:`proxy.stats.inference`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

from proxy.stats.sketches import LogHistogram, Moments, Reservoir

SAMPLE_SIZE: Final = 4096  # latency and score samples per version: ranks and quantile bounds use these


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


class VersionWindow:
    """Streaming statistics of one version's requests since the current step began.

    Contract: memory is fixed whatever the traffic (a log histogram and two reservoirs of ``sample_size``).
    ``failures`` counts what the caller counts as the version's own failures (PRODUCT §5: upstream-origin
    only). ``latency`` is in seconds and takes every request the caller counts, failed or not. A request
    with ``decision`` not None is *decided*; ``positives`` counts decisions that are True. ``scores`` and
    ``latency_sample`` are uniform samples of all values added, so rank and quantile tests on them are
    valid whatever the count. Rates are None until a request (or decision) arrives.
    """

    __slots__ = (
        "cost",
        "cost_moments",
        "decided",
        "failures",
        "latency",
        "latency_sample",
        "policy_violations",
        "positives",
        "requests",
        "scores",
    )

    def __init__(self, *, sample_size: int = SAMPLE_SIZE, seed: int = 0) -> None:
        self.requests = 0
        self.failures = 0
        self.latency = LogHistogram()
        self.latency_sample = Reservoir(sample_size, seed=seed)
        self.decided = 0
        self.positives = 0
        self.scores = Reservoir(sample_size, seed=seed + 1)
        self.policy_violations = 0
        self.cost = 0.0
        self.cost_moments = Moments()  # per-request cost, for a confidence bound on the mean

    def add(
        self,
        *,
        latency_s: float,
        failed: bool,
        score: float | None,
        decision: bool | None,
        cost: float = 0.0,
        policy_violations: int = 0,
    ) -> None:
        """Count one request. ``latency_s``, ``score`` and ``cost`` must be finite (ValueError)."""
        if not math.isfinite(latency_s) or not math.isfinite(cost):
            raise ValueError(f"latency_s and cost must be finite, got {latency_s!r}, {cost!r}")
        if score is not None and not math.isfinite(score):
            raise ValueError(f"score must be finite, got {score!r}")
        self.requests += 1
        self.failures += bool(failed)
        self.latency.add(latency_s)
        self.latency_sample.add(latency_s)
        if decision is not None:
            self.decided += 1
            self.positives += bool(decision)
        if score is not None:
            self.scores.add(score)
        self.policy_violations += policy_violations
        self.cost += cost
        self.cost_moments.add(cost)

    def merge(self, other: VersionWindow) -> None:
        """Add ``other``'s requests (same ``sample_size`` required), e.g. to fold windows into a step."""
        self.requests += other.requests
        self.failures += other.failures
        self.latency.merge(other.latency)
        self.latency_sample.merge(other.latency_sample)
        self.decided += other.decided
        self.positives += other.positives
        self.scores.merge(other.scores)
        self.policy_violations += other.policy_violations
        self.cost += other.cost
        self.cost_moments.merge(other.cost_moments)

    @property
    def error_rate(self) -> float | None:
        return self.failures / self.requests if self.requests else None

    @property
    def decision_rate(self) -> float | None:
        """Share of decided requests whose decision was positive."""
        return self.positives / self.decided if self.decided else None

    @property
    def p95_ms(self) -> float | None:
        return _ms(self.latency.quantile(0.95))

    @property
    def cost_per_1k(self) -> float | None:
        return 1000.0 * self.cost / self.requests if self.requests else None

    def to_json(self) -> dict[str, Any]:
        """A summary for status pages and decision logs (not a snapshot to restore from)."""

        def q(x: float) -> float | None:
            v = _ms(self.latency.quantile(x))
            return None if v is None else round(v, 3)

        return {
            "requests": self.requests,
            "failures": self.failures,
            "error_rate": self.error_rate,
            "decided": self.decided,
            "positives": self.positives,
            "decision_rate": self.decision_rate,
            "scores": self.scores.count,
            "latency_ms": {"p50": q(0.50), "p95": q(0.95), "p99": q(0.99)},
            "policy_violations": self.policy_violations,
            "cost": self.cost,
            "cost_per_1k": self.cost_per_1k,
        }


@dataclass(frozen=True, slots=True)
class Evidence:
    """Both versions' windows over the same span: every sample since the current step began."""

    baseline: VersionWindow
    candidate: VersionWindow


# ---------------------------------------------------------------------------------------------------------
# Exact and approximate tests. Each returns a one-sided p-value in [0, 1].
