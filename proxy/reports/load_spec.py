"""What a load test offers and what it must meet: stage profiles, SLO thresholds, and their verdicts.

Pure: no I/O, no clock. ``rollguard loadtest`` parses its arguments here and judges its figures here, so
every rule below is testable with a table.

- A **stage** ``DURATION:RATE`` (``30s:50``) ramps the arrival rate linearly from the previous stage's
  rate (0 before the first) to ``RATE`` requests per second over ``DURATION``, the way k6's
  ``ramping-arrival-rate`` executor reads its stages; ``--rate R --duration D`` is one stage held at R
  from the first instant. :func:`arrivals` turns stages into the scheduled send times: the n-th request is
  due when the integral of the rate reaches n, so the schedule depends on nothing the server does.
- An **SLO** ``p95=120ms,p99=300ms,errors=1%`` is a ceiling on a latency quantile (``pNN`` or ``pNN.N``,
  a unit is required) or on the error share (a percentage). A value at the ceiling passes.
- The **rate check** says whether the offered load was really applied: the driver sent at least
  ``HELD_SHARE`` of the offered rate and had no growing backlog at the end. A verdict on a load that was
  not applied would be a PASS for the wrong reason, so it counts like an SLO.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from proxy.config.model import GatesConfig
from proxy.config.units import parse_duration

HELD_SHARE: Final = 0.98  # achieved / offered below this: the offered rate was not held
BEHIND_S: Final = 0.1  # schedule lag at the end of the run above this: a growing backlog, not jitter
MAX_RATE: Final = 1_000_000.0  # requests per second; beyond any client on one core, so surely a typo

_QUANTILE = re.compile(r"^p(\d{1,2}(?:\.\d{1,3})?)$")
_LATENCY = re.compile(r"^(\d+(?:\.\d+)?)(us|ms|s)$")
_UNIT_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


@dataclass(frozen=True, slots=True)
class Stage:
    """``duration_s`` seconds ramping linearly from the previous stage's rate to ``rate`` (req/s)."""

    duration_s: float
    rate: float


@dataclass(frozen=True, slots=True)
class Profile:
    """The offered load: stages, and the rate before the first (0 for a ramp, R for ``--rate R``)."""

    stages: tuple[Stage, ...]
    start_rate: float = 0.0

    @property
    def duration_s(self) -> float:
        return sum(s.duration_s for s in self.stages)

    def offered(self) -> list[float]:
        """Requests each stage offers: the area under its rate (fractions carry into the next stage)."""
        out, before = [], self.start_rate
        for s in self.stages:
            out.append(s.duration_s * (before + s.rate) / 2)
            before = s.rate
        return out

    def describe(self) -> str:
        if len(self.stages) == 1 and self.start_rate == self.stages[0].rate:
            return f"{_num(self.stages[0].rate)} req/s for {_num(self.stages[0].duration_s)}s"
        return "stages " + ",".join(f"{_num(s.duration_s)}s:{_num(s.rate)}" for s in self.stages)


def constant(rate: float, duration_s: float) -> Profile:
    """``rate`` requests per second held for ``duration_s`` seconds."""
    if not (math.isfinite(rate) and 0 < rate <= MAX_RATE):
        raise ValueError(f"--rate {rate:g}: expected a number of requests per second above 0")
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"--duration {duration_s:g}: expected a duration above zero")
    return Profile((Stage(duration_s, rate),), start_rate=rate)


def parse_stages(text: str) -> Profile:
    """``30s:50,2m:200,30s:0``: stages ramping from 0 (see the module docstring). ValueError names the
    stage that is wrong and why."""
    stages: list[Stage] = []
    for i, part in enumerate(text.split(","), 1):
        item = part.strip()
        duration, sep, rate = item.partition(":")
        if not sep or not duration or not rate:
            raise ValueError(f"--stages {item!r} (stage {i}): expected DURATION:RATE, like 30s:50")
        try:
            if _bare_number(duration):  # parse_duration reads it as seconds; in "30:50" that is a slip
                raise ValueError("no unit")
            seconds = parse_duration(duration)
        except ValueError:
            raise ValueError(
                f"--stages {item!r} (stage {i}): {duration!r} is not a duration with a unit (30s, 2m, 500ms)"
            ) from None
        try:
            per_s = float(rate)
        except ValueError:
            per_s = math.nan
        if not (math.isfinite(per_s) and 0 <= per_s <= MAX_RATE):
            raise ValueError(
                f"--stages {item!r} (stage {i}): {rate!r} is not a rate (requests per second, 0 or more)"
            )
        stages.append(Stage(seconds, per_s))
    if not any(s.rate > 0 for s in stages):
        raise ValueError(f"--stages {text!r}: every stage has rate 0, so nothing would be sent")
    return Profile(tuple(stages))


def _bare_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def arrivals(profile: Profile) -> Iterator[tuple[float, int]]:
    """Each request's scheduled send time (seconds from the start) and the index of its stage, in order.

    The n-th request (from 0) is due when the cumulative rate reaches n; within a stage ramping from
    ``r0`` to ``r1`` over ``d`` seconds the cumulative count is ``r0 t + (r1 - r0) t^2 / 2d``, inverted
    in its cancellation-free form ``t = 2k / (r0 + sqrt(r0^2 + 2k (r1 - r0) / d))``.
    """
    n, before_count, before_rate, start = 0, 0.0, profile.start_rate, 0.0
    for index, (stage, count) in enumerate(zip(profile.stages, profile.offered(), strict=True)):
        r0, slope = before_rate, (stage.rate - before_rate) / stage.duration_s
        end_count = before_count + count
        while n < end_count:
            k = n - before_count
            root = math.sqrt(max(0.0, r0 * r0 + 2 * k * slope))
            t = 0.0 if k <= 0 else 2 * k / (r0 + root)
            yield start + min(t, stage.duration_s), index
            n += 1
        before_count, before_rate, start = end_count, stage.rate, start + stage.duration_s


def forever(rate: float) -> Iterator[float]:
    """Scheduled send times at a constant ``rate``, without end (the demo's traffic)."""
    interval, n = 1.0 / rate, 0
    while True:
        yield n * interval
        n += 1


# -- SLOs ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Slo:
    """A ceiling: on the latency quantile ``quantile`` (seconds), or, with ``quantile`` None, on the error
    share (a fraction)."""

    name: str  # as written: p95, p99.9, errors
    limit: float
    quantile: float | None = None

    def describe_limit(self) -> str:
        return _percent(self.limit) if self.quantile is None else _ms(self.limit)


def parse_slo(text: str) -> tuple[Slo, ...]:
    """``p95=120ms,p99=300ms,errors=1%``. ValueError names the item that is wrong and why."""
    out: dict[str, Slo] = {}
    for part in text.split(","):
        item = part.strip()
        key, sep, value = (x.strip() for x in item.partition("="))
        if not sep or not key or not value:
            raise ValueError(f"--slo {item!r}: expected NAME=VALUE, like p95=120ms or errors=1%")
        if key in out:
            raise ValueError(f"--slo {item!r}: {key} is given twice")
        out[key] = _slo(key, value, item)
    return tuple(out.values())


def _slo(key: str, value: str, item: str) -> Slo:
    if key == "errors":
        if not value.endswith("%"):
            raise ValueError(f"--slo {item!r}: the error share is a percentage, like errors=1%")
        try:
            share = float(value[:-1]) / 100
        except ValueError:
            share = math.nan
        if not 0 <= share <= 1:
            raise ValueError(f"--slo {item!r}: {value!r} is not a percentage from 0% to 100%")
        return Slo("errors", share)
    m = _QUANTILE.match(key)
    if m is None or not 0 < float(m.group(1)) < 100:
        raise ValueError(
            f"--slo {item!r}: unknown SLO {key!r}; expected pNN (p50, p95, p99, p99.9) or errors"
        )
    lat = _LATENCY.match(value)
    if lat is None:
        raise ValueError(f"--slo {item!r}: {value!r} is not a latency with its unit, like 120ms or 0.3s")
    seconds = float(lat.group(1)) * _UNIT_S[lat.group(2)]
    if seconds <= 0:
        raise ValueError(f"--slo {item!r}: a latency ceiling must be above zero")
    return Slo(key, seconds, quantile=round(float(m.group(1)) / 100, 6))


def slo_from_gates(gates: GatesConfig) -> tuple[Slo, ...]:
    """The SLOs the canary judges by (``canary.gates``): its p95, p99 and error rate ceilings."""
    return (
        Slo("p95", gates.latency_p95_ms / 1000, quantile=0.95),
        Slo("p99", gates.latency_p99_ms / 1000, quantile=0.99),
        Slo("errors", gates.error_rate),
    )


def merge_slos(base: Sequence[Slo], override: Sequence[Slo]) -> tuple[Slo, ...]:
    """``base`` with each SLO named in ``override`` replaced, and ``override``'s others added."""
    named = {s.name: s for s in base}
    named.update((s.name, s) for s in override)
    return tuple(named.values())


# -- verdicts -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScopeFigures:
    """What one scope (every request, or one version's answers) measured, as the SLOs read it."""

    requests: int  # requests judged: answered or failed (dropped included), never the unsent
    errors: int
    latency_s: Mapping[float, float | None]  # quantile -> seconds (None: no answer to measure)


@dataclass(frozen=True, slots=True)
class SloVerdict:
    """One SLO judged on every scope that has requests; ``passed`` only when every scope passes."""

    slo: Slo
    values: Mapping[str, float | None]  # scope -> measured value (None: nothing measured)
    requests: Mapping[str, int]
    passed: bool

    def line(self) -> str:
        """``PASS p95 <= 120 ms: all 3.1 ms (n=600), v1 3.0 ms (n=540)``."""
        word = "PASS" if self.passed else "FAIL"
        shown = ", ".join(
            f"{scope} {self._value(v)} (n={self.requests[scope]})" + ("" if self._ok(v) else " over")
            for scope, v in self.values.items()
        )
        return f"{word} {self.slo.name} <= {self.slo.describe_limit()}: {shown or 'no requests'}"

    def _value(self, v: float | None) -> str:
        if v is None:
            return "n/a"
        return _percent(v) if self.slo.quantile is None else _ms(v)

    def _ok(self, v: float | None) -> bool:
        return v is None or v <= self.slo.limit

    def to_json(self) -> dict[str, object]:
        return {
            "slo": self.slo.name,
            "limit": self.slo.limit,
            "unit": "share" if self.slo.quantile is None else "seconds",
            "passed": self.passed,
            "values": dict(self.values),
            "requests": dict(self.requests),
        }


def judge(slos: Sequence[Slo], scopes: Mapping[str, ScopeFigures]) -> list[SloVerdict]:
    """Each SLO on each scope with requests. A scope with requests but no measured latency (every one
    failed) fails a latency SLO: nothing answered within it. No requests at all fails every SLO."""
    out = []
    for slo in slos:
        values: dict[str, float | None] = {}
        counts: dict[str, int] = {}
        passed = True
        for name, fig in scopes.items():
            if fig.requests == 0:
                continue
            if slo.quantile is None:
                value: float | None = fig.errors / fig.requests
            else:
                value = fig.latency_s.get(slo.quantile)
            values[name], counts[name] = value, fig.requests
            passed = passed and value is not None and value <= slo.limit
        out.append(SloVerdict(slo, values, counts, passed and bool(values)))
    return out


@dataclass(frozen=True, slots=True)
class RateVerdict:
    """Whether the offered load was applied: see the module docstring."""

    offered: int
    sent: int
    dropped: int  # due while ``concurrency`` requests were in flight: answers came back too slowly
    offered_rps: float
    achieved_rps: float
    final_lag_s: float | None
    passed: bool

    def line(self) -> str:
        share = self.achieved_rps / self.offered_rps if self.offered_rps else 0.0
        lag = "" if self.final_lag_s is None else f", schedule lag at the end {_ms(self.final_lag_s)}"
        head = (
            f"{'PASS' if self.passed else 'FAIL'} rate held: {self.sent} of {self.offered} offered sent, "
            f"{_num(self.achieved_rps)} of {_num(self.offered_rps)} req/s ({share:.1%}){lag}"
        )
        if self.passed:
            return head
        why = []
        if self.dropped:
            why.append(
                f"{self.dropped} dropped with every connection busy: answers came back too slowly for this "
                "rate (raise --concurrency if the target can take more)"
            )
        if self.final_lag_s is not None and self.final_lag_s > BEHIND_S:
            why.append(
                "the driver fell behind its schedule: the latencies include its own delay and the target "
                "saw less load than planned"
            )
        return head + "; " + "; ".join(why or ["the target saw less load than planned"])

    def to_json(self) -> dict[str, object]:
        return {
            "offered": self.offered,
            "sent": self.sent,
            "dropped": self.dropped,
            "offered_rps": round(self.offered_rps, 3),
            "achieved_rps": round(self.achieved_rps, 3),
            "final_lag_s": self.final_lag_s,
            "held_share": HELD_SHARE,
            "passed": self.passed,
        }


def judge_rate(
    offered: int, sent: int, dropped: int, span_s: float, planned_s: float, final_lag_s: float | None
) -> RateVerdict:
    """``sent`` of ``offered`` requests over ``span_s`` (the time the sending took, at least the
    ``planned_s`` the profile lasts); held when at least ``HELD_SHARE`` of the offered rate went out and
    the lag at the end stayed under ``BEHIND_S``."""
    offered_rps = offered / planned_s if planned_s > 0 else 0.0
    achieved_rps = sent / max(span_s, planned_s) if planned_s > 0 else 0.0
    held = offered == 0 or achieved_rps >= HELD_SHARE * offered_rps
    behind = final_lag_s is not None and final_lag_s > BEHIND_S
    return RateVerdict(offered, sent, dropped, offered_rps, achieved_rps, final_lag_s, held and not behind)


def _num(x: float) -> str:
    return f"{x:,.1f}".rstrip("0").rstrip(".") if x != int(x) else f"{int(x):,}"


def _ms(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:.1f} ms" if ms < 100 else f"{ms:.0f} ms"


def _percent(share: float) -> str:
    return f"{share * 100:.2f}%".replace(".00%", "%")
