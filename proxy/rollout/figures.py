"""One version's evidence as people read it: requests, failures, error rate, latency p50/p95/p99.

Two sources give the same figures. Live evidence (:class:`VersionWindow`): the requests routed to a version
since the current step began. The shadow's mirrored pairs (``shadow_eval.json``): while the
candidate takes no live traffic, the copies it answered are its only evidence, and what the shadow gates
judge. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from proxy.rollout.evidence import VersionWindow

Source = Literal["live", "mirror"]
QUANTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))


def mirror_failures(routes: Iterable[Mapping[str, Any]], role: str) -> tuple[int, int]:
    """``role``'s failures on the mirrored pairs of every route: (errors, contract breaches)."""
    errors = breaches = 0
    for r in routes:
        errors += sum((r.get("errors", {}).get(role) or {}).values())
        breaches += int((r.get("schema_violations") or {}).get(role, 0))
    return errors, breaches


@dataclass(frozen=True, slots=True, kw_only=True)
class VersionFigures:
    """A version's figures over one span of evidence; latencies in ms, None where nothing was measured."""

    requests: int
    failures: int
    latency_ms: Mapping[str, float | None]  # p50, p95, p99
    decision_rate: float | None = None  # share of decided requests that were positive
    source: Source = "live"

    @property
    def error_rate(self) -> float | None:
        return self.failures / self.requests if self.requests else None

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "failures": self.failures,
            "error_rate": self.error_rate,
            "latency_ms": dict(self.latency_ms),
            "decision_rate": self.decision_rate,
            "source": self.source,
        }


def live_figures(window: VersionWindow) -> VersionFigures:
    """The figures of a version's live evidence."""

    def ms(q: float) -> float | None:
        v = window.latency.quantile(q)
        return None if v is None else round(v * 1000.0, 3)

    return VersionFigures(
        requests=window.requests,
        failures=window.failures,
        latency_ms={name: ms(q) for name, q in QUANTILES},
        decision_rate=window.decision_rate,
    )


def mirror_figures(report: Mapping[str, Any]) -> VersionFigures:
    """The candidate's figures on the mirrored pairs of every route in a shadow evaluation.

    Requests are the pairs mirrored, failures its errors and contract breaches on them (what the shadow's
    error gate counts). Quantiles cannot be merged across routes, so each is the slowest route's, as the
    shadow's latency gate judges the worst route; the decision rate is weighted by compared pairs.
    """
    routes = [r for r in report.get("routes", {}).values() if isinstance(r, Mapping)]
    errors, breaches = mirror_failures(routes, "candidate")
    latency: dict[str, float | None] = {}
    for name, _ in QUANTILES:
        values = [
            float(v)
            for r in routes
            if isinstance(v := ((r.get("latency_ms") or {}).get("candidate") or {}).get(name), int | float)
        ]
        latency[name] = max(values) if values else None
    compared = sum(int(r.get("compared", 0)) for r in routes)
    positive = sum(
        float(rate) * int(r.get("compared", 0))
        for r in routes
        if isinstance(rate := (r.get("decision_rate") or {}).get("candidate"), int | float)
    )
    return VersionFigures(
        requests=sum(int(r.get("pairs_total", 0)) for r in routes),
        failures=errors + breaches,
        latency_ms=latency,
        decision_rate=positive / compared if compared else None,
        source="mirror",
    )
