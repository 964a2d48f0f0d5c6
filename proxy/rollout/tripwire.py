"""The canary trip-wire: per-request rollback for a candidate that is plainly broken.

Pure: no I/O, no clock. The data plane reports each request's outcome as it completes, baseline and
candidate alike; the first outcome that trips returns a reason, and the controller rolls back at once,
without waiting for a window. Both rules judge the candidate against the baseline *at the same moment*,
so an incident that hits both versions (a burst of upstream errors, a brownout) is never evidence
against the candidate:

- **Who failed, against who was served.** Under "the candidate fails like the baseline", each failed
  request is the candidate's with probability equal to the candidate's share of the traffic at that
  moment, whatever the failure rate does over time (the counting-process view of Lindon & Malek,
  "Anytime-Valid Inference for Multinomial Count Data", 2022). The share is the step's: its configured
  weight, moved by the requests each version has served since the step began (sticky routing serves
  whichever users are active); the weight only changes between steps. A Wald SPRT on the sequence of
  failed requests tests that share against the one expected if the candidate failed at ``failure_rate``
  while the baseline fails at p0: each candidate failure adds log(q1/pi), each baseline failure
  log((1-q1)/(1-pi)), where pi is the share and q1 = pi*rho/(pi*rho + 1 - pi), rho = p1/p0. At
  log((1-beta)/alpha) it trips. A shared burst adds failures in proportion to the traffic: the ratio
  drifts down, never up. At the lower bound log(beta/(1-alpha)) it is held (a CUSUM-style floor), so a
  candidate that degrades late is still caught.
- **A run of failures while the baseline is healthy.** From the ``consecutive_failures``-th candidate
  failure in a row on, the run trips unless the baseline's requests over the same span say it may be
  shared: under "both fail alike over the span", the chance that all of the run's candidate requests
  are among the span's failures (Fisher's exact test) must be at most ``alpha`` / 100 (each failure past
  the n-th is another look). Against a 1% baseline that holds at the 5th failure at weights up to about
  10%; at 25% it takes one more, at 50% about five more — a fraction of a second at a few dozen requests
  a second — and during an outage of both it never holds.

p0 is a conservative reading of the baseline: the one-sided 95% Wilson upper bound of an exponentially
weighted failure share over about the last ``baseline_window`` baseline requests, and at least
``baseline_floor``. It only shapes the alternative (how strongly a candidate failure counts), never the
null, so a stale p0 costs power, not false rollbacks. While p0 >= p1 the SPRT is off (the baseline itself
fails that often; the windowed gates judge that case), and its ratio is cleared.
"""

from __future__ import annotations

import math
from typing import Any, Final

from proxy.config.model import TripwireConfig

__all__ = ["Tripwire"]

_Z95: Final = 1.6448536269514722  # one-sided 95%


SHARE_PRIOR: Final = 2000.0  # requests' worth of the step's configured weight the share starts from
_MIN_SHARE_COUNT: Final = 5.0  # without a weight: requests of each version before the share is trusted
# The run test looks again at every failure past the n-th of every run, a few hundred looks in a rollout
# with shared bursts: each look gets alpha / 100, so that alpha bounds them together.
RUN_LOOKS_SHARE: Final = 0.01


class Tripwire:
    """Per-request trip-wire state for one step (see the module docstring).

    ``observe_candidate`` returns a one-line reason on the outcome that trips, and None otherwise; once
    tripped it stays tripped (``tripped`` holds the reason, later outcomes return None) until ``reset``.
    """

    __slots__ = (
        "_base_failures",
        "_base_weight",
        "_consecutive",
        "_decay",
        "_events",
        "_events_candidate",
        "_llr",
        "_lower",
        "_run_base_failures",
        "_run_base_requests",
        "_served_baseline",
        "_served_candidate",
        "_tripped",
        "_upper",
        "_weight",
        "policy",
    )

    def __init__(self, policy: TripwireConfig) -> None:
        self.policy = policy
        self._upper = math.log((1.0 - policy.beta) / policy.alpha)
        self._lower = math.log(policy.beta / (1.0 - policy.alpha))
        self._decay = 1.0 - 1.0 / policy.baseline_window
        self._base_failures = 0.0  # exponentially weighted counts of baseline outcomes (for p0)
        self._base_weight = 0.0
        self._served_baseline = 0  # requests of each version since the step began
        self._served_candidate = 0
        self._llr = 0.0
        self._consecutive = 0
        self._run_base_requests = 0  # baseline requests and failures since the candidate's run began
        self._run_base_failures = 0
        self._events = 0  # failed requests since the ratio last sat at its floor (for reasons)
        self._events_candidate = 0
        self._tripped: str | None = None
        self._weight: float | None = None  # the step's configured candidate share, when known

    @property
    def candidate_share(self) -> float | None:
        """The candidate's share of this step's traffic, starting from the step's weight: random routing
        gives exactly that, sticky routing moves it with the users who are active, and the weight only
        changes between steps. Without a weight, None until both versions have been seen."""
        b, c = self._served_baseline, self._served_candidate
        w = self._weight
        if w is not None:
            return (c + SHARE_PRIOR * w) / (b + c + SHARE_PRIOR)
        if b < _MIN_SHARE_COUNT or c < _MIN_SHARE_COUNT:
            return None
        return c / (b + c)

    @property
    def baseline_rate(self) -> float:
        """p0: the Wilson 95% upper bound of the weighted baseline failure share, at least the floor."""
        n = self._base_weight
        if n <= 0.0:
            return 1.0
        p, z2 = self._base_failures / n, _Z95 * _Z95
        upper = (p + z2 / (2 * n) + _Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))) / (1 + z2 / n)
        return min(1.0, max(self.policy.baseline_floor, upper))

    def observe_baseline(self, failed: bool) -> None:
        share = self.candidate_share  # before this outcome: the share it is judged against
        self._served_baseline += 1
        self._base_failures = self._base_failures * self._decay + (1.0 if failed else 0.0)
        self._base_weight = self._base_weight * self._decay + 1.0
        self._run_base_requests += 1
        self._run_base_failures += bool(failed)
        if failed and self._tripped is None:
            self._failure_event(candidate=False, share=share)

    def observe_candidate(self, failed: bool) -> str | None:
        share = self.candidate_share
        self._served_candidate += 1
        if self._tripped is not None:
            return None
        if not failed:
            self._consecutive = 0
            return None
        if self._consecutive == 0:  # a run begins: the baseline is judged over the same span
            self._run_base_requests = self._run_base_failures = 0
        self._consecutive += 1
        n = self.policy.consecutive_failures
        if self._consecutive >= n and self._baseline_healthy_during_run():
            return self._trip(
                f"tripwire: {self._consecutive} consecutive candidate failures{self._run_note()}"
            )
        if self._failure_event(candidate=True, share=share):
            p0, p1, pi = self.baseline_rate, self.policy.failure_rate, share or 0.0
            return self._trip(
                f"tripwire: {self._events_candidate} of the last {self._events} failed requests were the "
                f"candidate's while it served {100 * pi:.2g}% of the traffic (failing like {100 * p1:g}% "
                f"rather than the baseline's {100 * p0:.2g}%: SPRT llr {self._llr:.1f} >= {self._upper:.1f})"
            )
        return None

    def _baseline_healthy_during_run(self) -> bool:
        """Whether the run is unlikely to be an incident both versions share: under "same failure rate
        over the run's span", the chance that every one of the run's candidate requests is among the
        span's failures (Fisher's exact test, hypergeometric) is at most ``alpha``."""
        run, n, f = self._consecutive, self._run_base_requests, self._run_base_failures
        failures, total = run + f, run + n
        level = self.policy.alpha * RUN_LOOKS_SHARE
        p = 1.0
        for i in range(run):
            p *= (failures - i) / (total - i)
            if p <= level:
                return True
        return False  # includes a span without a single baseline request: nothing says it is healthy

    def _run_note(self) -> str:
        n = self._run_base_requests
        return f" (the baseline failed {self._run_base_failures} of its {n} meanwhile)" if n else ""

    def _failure_event(self, *, candidate: bool, share: float | None) -> bool:
        """Add one failed request to the SPRT; True when it crosses the upper bound."""
        p0, p1 = self.baseline_rate, self.policy.failure_rate
        if p0 >= p1:
            self._llr = 0.0
            return False
        if share is None:
            return False  # the moment's traffic share is not known yet: nothing to compare with
        rho = p1 / p0
        q1 = share * rho / (share * rho + 1.0 - share)
        self._events += 1
        if candidate:
            self._events_candidate += 1
            self._llr += math.log(q1 / share)
        else:
            self._llr += math.log((1.0 - q1) / (1.0 - share))
        if self._llr >= self._upper:
            return candidate  # only a candidate outcome trips: a baseline failure only lowers the ratio
        if self._llr <= self._lower:
            self._llr = self._lower
            self._events = self._events_candidate = 0
        return False

    def _trip(self, reason: str) -> str:
        self._tripped = reason
        return reason

    def reset(self, weight: float | None = None) -> None:
        """Re-arm for a new rollout or step at ``weight`` (a share, 0..1): clear the test, the run, the
        traffic share and the latch; keep the baseline's failure estimate."""
        self._weight = weight if weight is not None and 0.0 < weight < 1.0 else None
        self._llr = 0.0
        self._consecutive = 0
        self._run_base_requests = self._run_base_failures = 0
        self._events = self._events_candidate = 0
        self._served_baseline = self._served_candidate = 0
        self._tripped = None

    @property
    def tripped(self) -> str | None:
        return self._tripped

    @property
    def state(self) -> dict[str, Any]:
        """For ``/status``: the test's position and bounds, the run of failures, the baseline estimate,
        the candidate's share of recent traffic."""
        p0 = self.baseline_rate
        share = self.candidate_share
        return {
            "llr": round(self._llr, 4),
            "upper": round(self._upper, 4),
            "lower": round(self._lower, 4),
            "consecutive": self._consecutive,
            "baseline_rate": p0,
            "candidate_share": None if share is None else round(share, 6),
            "sprt_active": p0 < self.policy.failure_rate and share is not None,
            "tripped": self._tripped,
        }
