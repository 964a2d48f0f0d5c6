"""Two simple canary judges to measure rollguard's against: Flagger-style and Kayenta-style.

Both walk the same steps as rollguard (1-5-25-50-100), judge fixed windows of trace time (60 s: Flagger's
``interval``, one Kayenta interval), and replay the same traces: each request goes to the candidate with
the probability of the current weight, by a seeded draw per request (random routing; a sticky hash would
only add the clustering the traces' keys carry, which these judges do not model), and only the chosen
version's outcome is seen. A window that the trace's end cuts short is not judged.

Flagger-style (Flagger's canary analysis, ``pkg/controller/scheduler.go`` and ``scheduler_metrics.go``):

- Each window is one check of two metrics: the candidate's request success rate must be >= 99%, and its
  p99 latency (all requests, failed ones included, as a proxy's histogram has them) at most 1.5 x the
  baseline's p99 over the same window. A metric with no values (no candidate request in the window)
  fails the check, as Flagger's "no values found" halts advancement and counts as a failed check.
- A passing check advances one step; passing the last judged step (50%) promotes.
- A failing check does not advance and adds one to the failed checks. The count is cumulative over the
  whole analysis: Flagger resets it only when an analysis (re)starts, never on a passing check or a
  step. At ``threshold`` (5) failed checks the canary is rolled back; Flagger does that at its next tick,
  one interval after the fifth failed check, so ``rollback_t`` is that tick while ``windows`` counts the
  judged windows (the fifth failing one last).
- Flagger's first tick only starts the analysis and sets the first weight; here the rollout starts at its
  first step at t = 0, like rollguard's canary. Quantiles are exact (nearest rank) rather than
  ``histogram_quantile`` over buckets.

Kayenta-style (Kayenta's ``NetflixACAJudge`` with its ``MannWhitneyClassifier``, one judgement per window):

- Three metrics per window, each candidate against baseline: errors (0/1 per request), latency (all
  latencies: the p50 metric) and the latency tail (the p99 metric): each version's latencies above the
  99th percentile of both versions' latencies pooled. Under no difference every pooled value is either
  version's by its traffic share alone, so the two tails are exchangeable and the test holds its level; each
  version's own top 1% would not be (the top 1 of 40 candidate requests is their top 2.5%, and is judged
  Low against the baseline's top 40 of 3,960). A side without a value in the tail makes the metric Nodata.
- Kayenta classifies a metric High (or Low) when the confidence interval (``conf_level``, 0.98 in the
  judge) of the Mann-Whitney / Hodges-Lehmann location shift lies above (below) ``fraction`` (0.25) x
  the estimate's size. With the normal approximation, interval = estimate +- z x se, that is
  |estimate / se| > z / (1 - fraction), and estimate / se is the Mann-Whitney z statistic, which is what
  is computed here (ties corrected, continuity corrected): a metric fails at |z| > 3.10 by default. The
  z reading is also what lets the 0/1 error metric be judged at all: the Hodges-Lehmann shift of two 0/1
  samples that are mostly 0 is exactly 0, with an interval of [0, 0]. With a handful of events the normal
  approximation is generous (as R's ``wilcox.test`` with ties is): 3 errors in 40 candidate requests
  against a 1% baseline, or 1 against a 0.1% one, is High. ``conf_level=0.95, fraction=0`` gives a plain
  two-sided Mann-Whitney test at alpha 0.05.
- Both directions fail (Kayenta's default direction is "either"); a metric with an empty side is Nodata,
  one whose values are all equal (no errors on either side) passes; Kayenta's IQR outlier removal is not
  applied, since on per-request latencies it would cut the very tail the p99 metric is about.
- Score = 100 x passing / classified metrics. Below ``marginal`` (75) rolls back; otherwise one step up,
  and passing the last judged step promotes. A window with no classified metric is no judgement: the
  rollout stays where it is (and is ``stuck`` if the trace ends so).
"""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Literal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proxy.rollout.trace import TracedRequest
from proxy.stats.inference import mann_whitney_z

STEPS: tuple[float, ...] = (1.0, 5.0, 25.0, 50.0, 100.0)

Outcome = Literal["promoted", "rolled_back", "stuck"]


@dataclass(slots=True)
class Window:
    """What one version was seen doing over one window."""

    latencies: list[float] = field(default_factory=list)
    failures: list[bool] = field(default_factory=list)

    def add(self, latency_ms: float, failed: bool) -> None:
        self.latencies.append(latency_ms)
        self.failures.append(failed)


@dataclass(slots=True)
class Result:
    outcome: Outcome
    windows: int  # windows judged, from the first step the rollout started at
    rollback_window: int | None  # the judged window that decided the rollback (1-based)
    rollback_t: float | None  # trace seconds at which the rollback takes effect
    detail: str  # the deciding check, one line

    def to_json(self) -> dict[str, object]:
        return {
            "outcome": self.outcome,
            "windows": self.windows,
            "rollback_window": self.rollback_window,
            "rollback_t": self.rollback_t,
            "detail": self.detail,
        }


class Walk:
    """A rollout along ``STEPS`` judged once per window; subclasses judge."""

    name = ""

    def __init__(self, start_step: int = 0) -> None:
        self.step = start_step
        self.judged = 0
        self.result: Result | None = None
        self.window = {"baseline": Window(), "candidate": Window()}
        self.detail = "no window judged"

    @property
    def weight(self) -> float:
        return STEPS[self.step]

    def advance(self) -> None:
        self.step += 1
        if self.step == len(STEPS) - 1:  # the last step (100%) has no baseline left to judge against
            self.result = Result("promoted", self.judged, None, None, self.detail)

    def roll_back(self, t: float) -> None:
        self.result = Result("rolled_back", self.judged, self.judged, t, self.detail)

    def close(self, t_end: float, window_s: float) -> None:
        """Judge the window that ends at ``t_end``, act, and open the next one."""
        self.judged += 1
        self.judge(self.window["baseline"], self.window["candidate"], t_end, window_s)
        self.window = {"baseline": Window(), "candidate": Window()}

    def judge(self, baseline: Window, candidate: Window, t_end: float, window_s: float) -> None:
        raise NotImplementedError

    def final(self) -> Result:
        return self.result or Result("stuck", self.judged, None, None, self.detail)


def quantile(values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile of a non-empty sample."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


class FlaggerStyle(Walk):
    name = "flagger"

    def __init__(
        self, start_step: int = 0, *, threshold: int = 5, min_success: float = 99.0, p99_ratio: float = 1.5
    ) -> None:
        super().__init__(start_step)
        self.threshold = threshold
        self.min_success = min_success
        self.p99_ratio = p99_ratio
        self.failed_checks = 0

    def check(self, baseline: Window, candidate: Window) -> str | None:
        """Why the check fails, None when it passes."""
        n = len(candidate.failures)
        if n == 0 or not baseline.latencies:
            return "no values found: the candidate had no requests"
        success = 100.0 * (n - sum(candidate.failures)) / n
        if success < self.min_success:
            return f"success rate {success:.2f}% < {self.min_success:g}% (n={n})"
        p99_c, p99_b = quantile(candidate.latencies, 0.99), quantile(baseline.latencies, 0.99)
        if p99_c > self.p99_ratio * p99_b:
            return f"p99 {p99_c:.0f} ms > {self.p99_ratio:g} x baseline {p99_b:.0f} ms (n={n})"
        return None

    def judge(self, baseline: Window, candidate: Window, t_end: float, window_s: float) -> None:
        why = self.check(baseline, candidate)
        if why is None:
            self.detail = f"check passed at {self.weight:g}%"
            self.advance()
            return
        self.failed_checks += 1
        self.detail = f"failed check {self.failed_checks}/{self.threshold} at {self.weight:g}%: {why}"
        if self.failed_checks >= self.threshold:
            self.roll_back(t_end + window_s)  # at the next tick


def tails(baseline: Sequence[float], candidate: Sequence[float], q: float = 0.99) -> tuple[list[float], ...]:
    """Each side's values above the pooled ``q`` quantile (empty lists when a side is empty)."""
    if not baseline or not candidate:
        return [], []
    threshold = quantile([*baseline, *candidate], q)
    return [v for v in baseline if v > threshold], [v for v in candidate if v > threshold]


class KayentaStyle(Walk):
    name = "kayenta"

    def __init__(
        self, start_step: int = 0, *, conf_level: float = 0.98, fraction: float = 0.25, marginal: float = 75.0
    ) -> None:
        super().__init__(start_step)
        self.critical_z = NormalDist().inv_cdf((1.0 + conf_level) / 2.0) / (1.0 - fraction)
        self.marginal = marginal

    def classify(self, control: Sequence[float], experiment: Sequence[float]) -> str:
        """Pass, High, Low or Nodata, as Kayenta's classifier names them."""
        if not control or not experiment:
            return "Nodata"
        if len(set(control).union(experiment)) == 1:
            return "Pass"
        z = mann_whitney_z(experiment, control)
        if z > self.critical_z:
            return "High"
        if z < -self.critical_z:
            return "Low"
        return "Pass"

    def judge(self, baseline: Window, candidate: Window, t_end: float, window_s: float) -> None:
        metrics = {
            "errors": self.classify(
                [float(f) for f in baseline.failures], [float(f) for f in candidate.failures]
            ),
            "latency": self.classify(baseline.latencies, candidate.latencies),
            "latency_tail": self.classify(*tails(baseline.latencies, candidate.latencies)),
        }
        classified = {m: c for m, c in metrics.items() if c != "Nodata"}
        shown = ", ".join(f"{m} {c}" for m, c in metrics.items())
        if not classified:
            self.detail = f"no data at {self.weight:g}% ({shown})"
            return
        score = 100.0 * sum(c == "Pass" for c in classified.values()) / len(classified)
        self.detail = f"score {score:.0f} at {self.weight:g}% (n={len(candidate.failures)}; {shown})"
        if score < self.marginal:
            self.roll_back(t_end)
        else:
            self.advance()


def run(
    requests: Iterable[TracedRequest], walks: Sequence[Walk], *, seed: int, window_s: float = 60.0
) -> None:
    """Replay ``requests`` through every walk at once (one pass over the trace), each routing by its own
    weight with its own draw (seeded alike: walks at the same weight route alike), until every walk has an
    outcome or the trace ends."""
    draws = [random.Random(f"route/{seed}").random for _ in walks]
    window_end = window_s
    live = [w for w in walks if w.result is None]
    for req in requests:
        while req.t >= window_end:
            for w in live:
                w.close(window_end, window_s)
            live = [w for w in live if w.result is None]
            if not live:
                return
            window_end += window_s
        for w, draw in zip(walks, draws, strict=True):
            if w.result is not None:
                continue
            cand = draw() * 100.0 < w.weight
            o = req.candidate if cand else req.baseline
            w.window["candidate" if cand else "baseline"].add(o.latency_ms, o.status == 0 or o.status >= 500)
