"""Evidence for the canary controller.

Pure: no I/O, no clock, no framework. :class:`VersionWindow` holds everything one version did since the
current step began, in memory fixed at construction; :class:`Evidence` pairs the baseline's window with the
candidate's. The gates in :mod:`proxy.rollout.gates` judge an :class:`Evidence` with the statistics of
:mod:`proxy.stats.inference`.
"""

from __future__ import annotations

import math
import operator
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import reduce
from typing import Any, Final, Literal

from proxy.stats.sketches import LogHistogram, Moments, Reservoir

SAMPLE_SIZE: Final = 4096  # latency and score samples per version: ranks and quantile bounds use these
CLUSTER_BINS: Final = 128  # sticky keys hashed into this many groups, for the clustered variance
MIN_CLUSTER_BINS: Final = 16  # occupied groups below which a clustered variance is not estimated
RateKind = Literal["failures", "positives"]  # the two rates whose clustering is estimated


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


class Clusters:
    """Per-group counts of requests by sticky key, for the variance of a rate when users, not requests,
    are what routing draws (a sticky key sends all of a user's requests to one version).

    A user whose requests all fail (or all decide alike) makes failures arrive in clumps: the binomial
    variance, which assumes independent requests, is then too small, and two unpaired groups look
    different when they drew different users. Keys are hashed into ``CLUSTER_BINS`` groups; each group is
    a union of whole users, so the spread of the groups' residuals estimates the clustered variance (the
    random-groups estimator), in memory fixed whatever the number of users. :meth:`design_effect` is its
    ratio to the binomial variance (Kish): the counts are worth that many times fewer requests."""

    __slots__ = ("decided", "failures", "positives", "requests")

    def __init__(self) -> None:
        self.requests = [0] * CLUSTER_BINS
        self.failures = [0] * CLUSTER_BINS
        self.decided = [0] * CLUSTER_BINS
        self.positives = [0] * CLUSTER_BINS

    def add(self, group: int, failed: bool, decision: bool | None) -> None:
        self.requests[group] += 1
        self.failures[group] += failed
        if decision is not None:
            self.decided[group] += 1
            self.positives[group] += decision

    def add_many(
        self, groups: Sequence[int | None], failed: Sequence[bool], decisions: Sequence[bool | None]
    ) -> None:
        """``add`` for each request that has a group (None: no sticky key, not counted)."""
        requests, failures, decided, positives = self.requests, self.failures, self.decided, self.positives
        for group, fail, decision in zip(groups, failed, decisions, strict=True):
            if group is None:
                continue
            requests[group] += 1
            failures[group] += fail
            if decision is not None:
                decided[group] += 1
                positives[group] += decision

    def merge(self, other: Clusters) -> None:
        for mine, theirs in (
            (self.requests, other.requests),
            (self.failures, other.failures),
            (self.decided, other.decided),
            (self.positives, other.positives),
        ):
            for i, v in enumerate(theirs):
                mine[i] += v

    def design_effect(self, kind: RateKind) -> float:
        """Clustered over binomial variance of the failure rate (``kind`` "failures") or the positive
        decision rate ("positives"), at least 1; 1 when too few groups are occupied to tell."""
        if kind == "failures":
            counts, totals = self.failures, self.requests
        elif kind == "positives":
            counts, totals = self.positives, self.decided
        else:  # a misspelt kind must not quietly judge the other rate
            raise ValueError(f"kind must be 'failures' or 'positives', got {kind!r}")
        n, y = sum(totals), sum(counts)
        groups = sum(1 for t in totals if t)
        if groups < MIN_CLUSTER_BINS or n == 0 or y in (0, n):
            return 1.0
        r = y / n
        spread = sum((c - r * t) ** 2 for c, t in zip(counts, totals, strict=True)) * groups / (groups - 1)
        return max(1.0, spread / (n * r * (1.0 - r)))


def cluster_of(key: str) -> int:
    """The group of a sticky key: stable across processes and restarts (CRC-32, not Python's hash)."""
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) % CLUSTER_BINS


class VersionWindow:
    """Streaming statistics of one version's requests since the current step began.

    Contract: memory is fixed whatever the traffic (a log histogram and two reservoirs of ``sample_size``).
    ``failures`` counts what the caller counts as the version's own failures (upstream-origin
    only). ``latency`` is in seconds and takes every request the caller counts, failed or not. A request
    with ``decision`` not None is *decided*; ``positives`` counts decisions that are True. ``scores`` and
    ``latency_sample`` are uniform samples of all values added, so rank and quantile tests on them are
    valid whatever the count. Rates are None until a request (or decision) arrives.
    """

    __slots__ = (
        "clusters",
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
        self.clusters = Clusters()  # requests that came with a sticky key, by key group

    def add(
        self,
        *,
        latency_s: float,
        failed: bool,
        score: float | None,
        decision: bool | None,
        cost: float = 0.0,
        policy_violations: int = 0,
        cluster: int | None = None,
    ) -> None:
        """Count one request. ``latency_s``, ``score`` and ``cost`` must be finite (ValueError).
        ``cluster`` is the request's sticky-key group (:func:`cluster_of`), None without a key."""
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
        if cluster is not None:
            self.clusters.add(cluster, bool(failed), decision)

    def add_many(
        self,
        *,
        latency_s: Sequence[float],
        failed: Sequence[bool],
        score: Sequence[float | None],
        decision: Sequence[bool | None],
        cost: Sequence[float],
        policy_violations: Sequence[int],
        cluster: Sequence[int | None],
    ) -> None:
        """``add`` for each request in order, one column per argument (all of one length): the same
        window to the last bit and the same random draws as one ``add`` at a time, for a caller that
        holds a batch (a replay). A value that is not finite raises ValueError before anything is
        counted."""
        n = len(latency_s)
        if not all(len(c) == n for c in (failed, score, decision, cost, policy_violations, cluster)):
            raise ValueError("add_many takes columns of one length")
        if not all(map(math.isfinite, latency_s)) or not all(map(math.isfinite, cost)):
            raise ValueError("latency_s and cost must be finite")
        scores = [s for s in score if s is not None]
        if not all(map(math.isfinite, scores)):
            raise ValueError("score must be finite")
        if not n:
            return
        self.requests += n
        self.failures += sum(map(bool, failed))
        self.latency.add_many(latency_s)
        self.latency_sample.add_many(latency_s)
        decided = [d for d in decision if d is not None]
        self.decided += len(decided)
        self.positives += sum(map(bool, decided))
        self.scores.add_many(scores)
        self.policy_violations += sum(policy_violations)
        self.cost = reduce(operator.add, cost, self.cost)  # in order, as one add at a time sums them
        self.cost_moments.add_many(cost)
        self.clusters.add_many(cluster, [bool(f) for f in failed], decision)

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
        self.clusters.merge(other.clusters)

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


class Pairs:
    """Decisions of both versions on the same requests (``canary.paired_sample``): the discordant
    counts are all a paired difference needs, and far fewer pairs decide it than two unpaired groups
    (versions that agree on nearly every request differ by nearly nothing, with nearly no variance)."""

    __slots__ = ("baseline_only", "candidate_only", "count")

    def __init__(self) -> None:
        self.count = 0
        self.candidate_only = 0  # pairs where only the candidate decided positively
        self.baseline_only = 0

    def add(self, candidate: bool, baseline: bool) -> None:
        self.count += 1
        self.candidate_only += candidate and not baseline
        self.baseline_only += baseline and not candidate

    def to_json(self) -> dict[str, Any]:
        return {
            "pairs": self.count,
            "candidate_only": self.candidate_only,
            "baseline_only": self.baseline_only,
        }


@dataclass(frozen=True, slots=True)
class Evidence:
    """Both versions' windows over the same span: every sample since the current step began, and the
    decision pairs of the paired share."""

    baseline: VersionWindow
    candidate: VersionWindow
    pairs: Pairs = field(default_factory=Pairs)


# ---------------------------------------------------------------------------------------------------------
# Exact and approximate tests. Each returns a one-sided p-value in [0, 1].
