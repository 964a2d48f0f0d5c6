"""The canary trip-wire: per-request rollback for a candidate that is plainly broken (PRODUCT §5).

Pure: no I/O, no clock. The data plane reports each request's outcome as it completes; the first candidate
outcome that trips returns a reason, and the controller rolls back at once, without waiting for a window.
Two rules, either trips:

- ``consecutive_failures`` candidate failures in a row;
- a Bernoulli sequential probability ratio test (Wald) of H0: the candidate fails at the baseline's rate
  p0, against H1: it fails at ``failure_rate`` p1. Each candidate outcome adds log(p1/p0) on a failure and
  log((1-p1)/(1-p0)) on a success to the log-likelihood ratio; at log((1-beta)/alpha) it trips.

At the lower bound log(beta/(1-alpha)) H0 is accepted and the test restarts from that bound: the ratio is
held there (a CUSUM-style floor) rather than set back to 0. Both keep the test able to catch a candidate
that degrades late, but a restart at 0 is a fresh test with its own alpha every hundred or so healthy
requests: measured with the defaults, a healthy candidate then trips about 3 times per million requests,
against about 0.1-0.3 with the floor. A fresh or re-armed trip-wire starts at 0, so a candidate that is
bad from its first request is caught as fast either way (30% failures against a 1% baseline: ~15 requests).

p0 is a conservative reading of the baseline: the one-sided 95% Wilson upper bound of an exponentially
weighted failure share over about the last ``baseline_window`` baseline requests, and at least
``baseline_floor``. A quiet spell of the baseline therefore does not make ordinary candidate failures look
damning, and before the baseline has shown much the bound is high. While p0 >= p1 the SPRT is off (the
baseline itself fails that often; the windowed gates judge that case), and its ratio is cleared.
"""

from __future__ import annotations

import math
from typing import Any, Final

from proxy.config.model import TripwireConfig

__all__ = ["Tripwire"]

_Z95: Final = 1.6448536269514722  # one-sided 95%


class Tripwire:
    """Per-request trip-wire state for one rollout (see the module docstring).

    ``observe_candidate`` returns a one-line reason on the outcome that trips, and None otherwise; once
    tripped it stays tripped (``tripped`` holds the reason, later outcomes return None) until ``reset``.
    """

    __slots__ = (
        "_base_failures",
        "_base_weight",
        "_consecutive",
        "_decay",
        "_llr",
        "_lower",
        "_run_failures",
        "_run_requests",
        "_tripped",
        "_upper",
        "policy",
    )

    def __init__(self, policy: TripwireConfig) -> None:
        self.policy = policy
        self._upper = math.log((1.0 - policy.beta) / policy.alpha)
        self._lower = math.log(policy.beta / (1.0 - policy.alpha))
        self._decay = 1.0 - 1.0 / policy.baseline_window
        self._base_failures = 0.0  # exponentially weighted counts of baseline outcomes
        self._base_weight = 0.0
        self._llr = 0.0
        self._consecutive = 0
        self._run_requests = 0  # candidate outcomes since the ratio last sat at its floor (for reasons)
        self._run_failures = 0
        self._tripped: str | None = None

    def observe_baseline(self, failed: bool) -> None:
        self._base_failures = self._base_failures * self._decay + (1.0 if failed else 0.0)
        self._base_weight = self._base_weight * self._decay + 1.0

    @property
    def baseline_rate(self) -> float:
        """p0: the Wilson 95% upper bound of the weighted baseline failure share, at least the floor."""
        n = self._base_weight
        if n <= 0.0:
            return 1.0
        p, z2 = self._base_failures / n, _Z95 * _Z95
        upper = (p + z2 / (2 * n) + _Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))) / (1 + z2 / n)
        return min(1.0, max(self.policy.baseline_floor, upper))

    def observe_candidate(self, failed: bool) -> str | None:
        if self._tripped is not None:
            return None
        policy = self.policy
        self._consecutive = self._consecutive + 1 if failed else 0
        self._run_requests += 1
        self._run_failures += bool(failed)
        if self._consecutive >= policy.consecutive_failures:
            return self._trip(f"tripwire: {self._consecutive} consecutive candidate failures")
        p0, p1 = self.baseline_rate, policy.failure_rate
        if p0 >= p1:
            self._llr = 0.0
            return None
        self._llr += math.log(p1 / p0) if failed else math.log((1.0 - p1) / (1.0 - p0))
        if self._llr >= self._upper:
            return self._trip(
                f"tripwire: candidate failing like {100 * p1:g}% rather than the baseline's "
                f"{100 * p0:.2g}% ({self._run_failures} of the last {self._run_requests} requests; "
                f"SPRT llr {self._llr:.1f} >= {self._upper:.1f})"
            )
        if self._llr <= self._lower:
            self._llr = self._lower
            self._run_requests = self._run_failures = 0
        return None

    def _trip(self, reason: str) -> str:
        self._tripped = reason
        return reason

    def reset(self) -> None:
        """Re-arm for a new rollout or step: clear the test and the latch, keep the baseline estimate."""
        self._llr = 0.0
        self._consecutive = 0
        self._run_requests = self._run_failures = 0
        self._tripped = None

    @property
    def tripped(self) -> str | None:
        return self._tripped

    @property
    def state(self) -> dict[str, Any]:
        """For ``/status``: the test's position and bounds, the run of failures, the baseline estimate."""
        p0 = self.baseline_rate
        return {
            "llr": round(self._llr, 4),
            "upper": round(self._upper, 4),
            "lower": round(self._lower, 4),
            "consecutive": self._consecutive,
            "baseline_rate": p0,
            "sprt_active": p0 < self.policy.failure_rate,
            "tripped": self._tripped,
        }
