"""The ``load`` section of ``staging_report.json``: what the clients of a load test saw.

:class:`LoadTally` is fed by the load driver, one call per request, and renders the section. Figures are
kept for every request (scope ``all``) and, for answers carrying ``x-rollguard-version``, per version:
requests, status codes, errors by kind, and latency quantiles in a :class:`LogHistogram` (1% relative
accuracy, fixed memory), so a long run costs no more memory than a short one. Per stage of the profile:
offered, sent, dropped, answered, and the latency quantiles.

Latency runs from the request's *scheduled* send time to its last byte, so time spent waiting for the
driver or for a connection counts against the target, as a user would have felt it (no coordinated
omission). Latency is measured for every answer, whatever its status, and for timeouts (at the time they
fired: a lower bound); a connection refused or reset has no latency.

Errors, as the error-rate SLO counts them (k6's ``http_req_failed``): an answer outside 2xx/3xx, a
timeout, a transport failure (connect, reset, protocol), and a request *dropped* because ``concurrency``
requests were already in flight (the target answered too slowly for the offered rate; it is never queued
in the driver, where it would hide). A request the driver did not send at all is *unsent*: that is the
driver's shortfall, judged by the rate check, not the target's error.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence
from typing import Any, Final

from proxy.reports.load_spec import Profile, ScopeFigures
from proxy.stats.sketches import LogHistogram

ALL: Final = "all"
QUANTILES: Final = (0.5, 0.9, 0.95, 0.99, 0.999)
ERROR_KINDS: Final = ("http_4xx", "http_5xx", "timeout", "connect", "reset", "protocol", "dropped")
FINAL_LAGS: Final = 256  # dispatches whose lag makes the "lag at the end": the backlog, not one stall


class _Scope:
    __slots__ = ("errors", "latency", "requests", "status")

    def __init__(self) -> None:
        self.requests = 0
        self.status: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self.latency = LogHistogram()

    def figures(self, quantiles: Sequence[float]) -> ScopeFigures:
        return ScopeFigures(
            requests=self.requests,
            errors=sum(self.errors.values()),
            latency_s={q: self.latency.quantile(q) for q in quantiles},
        )

    def to_json(self, span_s: float) -> dict[str, Any]:
        errors = sum(self.errors.values())
        return {
            "requests": self.requests,
            "answered": sum(self.status.values()),
            "rps": round(sum(self.status.values()) / span_s, 3) if span_s > 0 else None,
            "status": {str(code): n for code, n in sorted(self.status.items())},
            "errors": errors,
            "error_rate": round(errors / self.requests, 6) if self.requests else None,
            "errors_by_kind": {k: self.errors[k] for k in ERROR_KINDS if self.errors[k]},
            "latency_ms": latency_ms(self.latency),
        }


class _Stage:
    __slots__ = ("answered", "dropped", "latency", "offered", "sent")

    def __init__(self, offered: float) -> None:
        self.offered = offered
        self.sent = 0
        self.dropped = 0
        self.answered = 0
        self.latency = LogHistogram()


class LoadTally:
    """Counters and sketches of one load run. Single-threaded: only the driver's event loop touches it."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.scopes: dict[str, _Scope] = {ALL: _Scope()}
        self.stages = [_Stage(n) for n in profile.offered()]
        self.offered = 0  # requests whose scheduled time came during the run
        self.sent = 0
        self.in_flight = 0
        self.lag = LogHistogram()  # dispatch time - scheduled time
        self.final_lags: deque[float] = deque(maxlen=FINAL_LAGS)

    # -- fed by the driver, per request --------------------------------------------------------------

    def due(self, lag_s: float) -> None:
        """A request's scheduled time came, and the driver got to it ``lag_s`` late."""
        self.offered += 1
        lag = max(0.0, lag_s)
        self.lag.add(lag)
        self.final_lags.append(lag)

    def dropped(self, stage: int) -> None:
        """It was due while ``concurrency`` requests were in flight: not sent, counted as an error."""
        self.stages[stage].dropped += 1
        scope = self.scopes[ALL]
        scope.requests += 1
        scope.errors["dropped"] += 1

    def started(self, stage: int) -> None:
        self.sent += 1
        self.in_flight += 1
        self.stages[stage].sent += 1

    def answered(self, stage: int, status: int, version: str | None, latency_s: float) -> None:
        self.in_flight -= 1
        st = self.stages[stage]
        st.answered += 1
        st.latency.add(latency_s)
        kind = None if 200 <= status < 400 else ("http_5xx" if status >= 500 else "http_4xx")
        for scope in self._scopes(version):
            scope.requests += 1
            scope.status[status] += 1
            scope.latency.add(latency_s)
            if kind is not None:
                scope.errors[kind] += 1

    def failed(self, stage: int, kind: str, latency_s: float | None) -> None:
        """No answer: ``kind`` is one of ``timeout``, ``connect``, ``reset``, ``protocol``."""
        self.in_flight -= 1
        scope = self.scopes[ALL]
        scope.requests += 1
        scope.errors[kind] += 1
        if latency_s is not None:
            scope.latency.add(latency_s)
            self.stages[stage].latency.add(latency_s)

    def _scopes(self, version: str | None) -> tuple[_Scope, ...]:
        if not version:
            return (self.scopes[ALL],)
        scope = self.scopes.get(version)
        if scope is None:
            scope = self.scopes[version] = _Scope()
        return self.scopes[ALL], scope

    # -- read ----------------------------------------------------------------------------------------

    @property
    def final_lag_s(self) -> float | None:
        """The median lag of the last dispatches: high when the driver ended with a backlog."""
        if not self.final_lags:
            return None
        return sorted(self.final_lags)[len(self.final_lags) // 2]

    def figures(self, quantiles: Sequence[float]) -> dict[str, ScopeFigures]:
        """Every scope as the SLO verdicts read it: ``all`` first, then the versions by name."""
        names = [ALL, *sorted(n for n in self.scopes if n != ALL)]
        return {n: self.scopes[n].figures(quantiles) for n in names}

    def section(self, span_s: float) -> dict[str, Any]:
        """The report's ``load`` figures (the caller adds target, SLO verdicts and resources)."""
        versions = sorted(n for n in self.scopes if n != ALL)
        offsets = [0.0]
        for s in self.profile.stages:
            offsets.append(offsets[-1] + s.duration_s)
        return {
            "offered": self.offered,
            "sent": self.sent,
            "unsent": max(0, self.offered - self.sent - sum(s.dropped for s in self.stages)),
            "schedule_lag_ms": {**latency_ms(self.lag), "final": _ms(self.final_lag_s)},
            "all": self.scopes[ALL].to_json(span_s),
            "versions": {v: self.scopes[v].to_json(span_s) for v in versions},
            "stages": [
                {
                    "from_s": round(offsets[i], 3),
                    "to_s": round(offsets[i + 1], 3),
                    "rate": stage.rate,
                    "offered": round(st.offered, 3),
                    "sent": st.sent,
                    "dropped": st.dropped,
                    "answered": st.answered,
                    "latency_ms": latency_ms(st.latency),
                }
                for i, (stage, st) in enumerate(zip(self.profile.stages, self.stages, strict=True))
            ],
        }


def latency_ms(h: LogHistogram) -> dict[str, Any]:
    """Count, the quantiles of :data:`QUANTILES` and the max, in milliseconds (None when empty)."""
    return {
        "count": h.count,
        **{f"p{q * 100:g}": _ms(h.quantile(q)) for q in QUANTILES},
        "max": _ms(h.max),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(1000 * seconds, 3)
