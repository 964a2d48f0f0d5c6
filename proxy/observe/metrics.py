"""Every Prometheus metric rollguard exports, defined once on an injected registry.

Labels stay bounded: route names from the config plus ``unmatched``, roles, configured versions,
status codes and fixed kinds. Never a client id, key or raw path. Label children are cached per
(route, role, version) so the hot path does one dict lookup, not a label resolution, per observe.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from proxy._version import __version__
from proxy.observe.exchange import Exchange

BREAKER_STATES = ("closed", "half_open", "open")


@dataclass(frozen=True, slots=True)
class UpstreamGauge:
    """One upstream's occupancy and circuit, read at scrape time (never on the request path)."""

    role: str
    version: str
    in_flight: int
    circuit: str  # one of BREAKER_STATES


class UpstreamCollector(Collector):
    """``rollguard_upstream_in_flight`` and ``rollguard_upstream_circuit_state`` for the pools in use now.

    Read from the current generation on each scrape, so a reload's new pools (and versions) show at
    once and a retired generation's never linger, at no cost per request."""

    def __init__(self, upstreams: Callable[[], Iterable[UpstreamGauge]]) -> None:
        self.upstreams = upstreams

    def collect(self) -> Iterator[GaugeMetricFamily]:
        in_flight = GaugeMetricFamily(
            "rollguard_upstream_in_flight",
            "Upstream requests in flight now, per role (bounded by the upstream's max_connections).",
            labels=["role", "version"],
        )
        circuit = GaugeMetricFamily(
            "rollguard_upstream_circuit_state",
            "1 for each upstream's circuit-breaker state now (closed, half_open, open), 0 for the others.",
            labels=["role", "version", "state"],
        )
        for u in self.upstreams():
            in_flight.add_metric([u.role, u.version], u.in_flight)
            for state in BREAKER_STATES:
                circuit.add_metric([u.role, u.version, state], 1.0 if u.circuit == state else 0.0)
        yield in_flight
        yield circuit


# Every latency gate threshold is a bucket edge (0.12 for the default 120 ms p95 gate), so a PromQL
# histogram_quantile and /status agree to within one bucket.
BASE_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.035,
    0.05,
    0.075,
    0.1,
    0.12,
    0.15,
    0.2,
    0.25,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    3.0,
    5.0,
    10.0,
)


SCORE_DELTA_BUCKETS = (
    -1.0,
    -0.5,
    -0.2,
    -0.1,
    -0.05,
    -0.02,
    -0.01,
    -0.005,
    0.0,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
)


# The bounded label values of the counters that alerts watch, primed at 0 by ``prime``.
UPSTREAM_ERROR_KINDS = (
    "connect",
    "timeout",
    "reset",
    "protocol",
    "http_5xx",
    "contract",
    "circuit_open",
    "pool_full",
)
SHADOW_OUTCOMES = ("sent", "dropped", "failed", "skipped")
ROLLBACK_REASONS = ("gates", "tripwire", "operator")


def latency_buckets(gate_thresholds_s: Iterable[float] = ()) -> tuple[float, ...]:
    return tuple(sorted(set(BASE_BUCKETS) | {round(t, 6) for t in gate_thresholds_s}))


class ListenerName:
    DATA = "data"
    ADMIN = "admin"


@dataclass(slots=True)
class ExchangeMetrics:
    """The pre-resolved children for one (route, role, version)."""

    request_duration: Histogram
    upstream_duration: Histogram


class ProxyMetrics:
    """Owns the metric families; the only module that knows metric names."""

    def __init__(self, registry: CollectorRegistry, *, gate_thresholds_s: Iterable[float] = ()) -> None:
        buckets = latency_buckets(gate_thresholds_s)
        self.registry = registry
        # What every Envoy-like proxy exports besides its own series: the process (CPU, RSS, fds, start
        # time; Linux) and the build, so a dashboard can tell which release answered.
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        self.build_info = Gauge(
            "rollguard_build_info",
            "Always 1; the labels say which rollguard and Python serve.",
            ["version", "python"],
            registry=registry,
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
        self.requests = Counter(
            "rollguard_requests",
            "Client requests answered, by the version that answered.",
            ["route", "role", "version", "code"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "rollguard_request_duration_seconds",
            "Client-facing latency, proxy included.",
            ["route", "role", "version"],
            buckets=buckets,
            registry=registry,
        )
        self.upstream_duration = Histogram(
            "rollguard_upstream_duration_seconds",
            "Upstream latency, request sent to last byte.",
            ["route", "role", "version"],
            buckets=buckets,
            registry=registry,
        )
        self.upstream_errors = Counter(
            "rollguard_upstream_errors",
            "Failed upstream attempts by kind.",
            ["route", "role", "version", "kind"],
            registry=registry,
        )
        self.schema_violations = Counter(
            "rollguard_schema_violations",
            "Contract breaches by direction.",
            ["route", "role", "version", "direction"],
            registry=registry,
        )
        self.compat_violations = Counter(
            "rollguard_compat_violations",
            "Candidate answers (served in canary, or mirrored in shadow) that break one of the route's "
            "compat_schemas, the older response schemas consumers still read; schema is the file name "
            "without its extension. Counted only; the answer is unchanged. The baseline is not checked.",
            ["route", "schema"],
            registry=registry,
        )
        self.canary_weight = Gauge(
            "rollguard_canary_weight_percent",
            "Share of matching traffic routed to the candidate.",
            registry=registry,
        )
        self.rollout_phase = Gauge(
            "rollguard_rollout_phase",
            "1 for the rollout's current phase, 0 for the others.",
            ["phase"],
            registry=registry,
        )
        self.body_streamed = Counter(
            "rollguard_unbuffered_bodies",
            "Bodies too large to hold, streamed without checks.",
            ["route", "direction"],
            registry=registry,
        )
        self.local_responses = Counter(
            "rollguard_local_responses",
            "Answers the proxy gave itself before any model was involved.",
            ["route", "code"],
            registry=registry,
        )
        self.fallbacks = Counter(
            "rollguard_fallbacks",
            "Candidate attempts replaced by the baseline's answer, by the failure.",
            ["route", "reason"],
            registry=registry,
        )
        self.paired_requests = Counter(
            "rollguard_paired_requests",
            "Candidate-routed requests also sent to the baseline (canary.paired_sample): sent, failed "
            "(of those sent), dropped (shadow.max_in_flight reached), skipped (body over max_body_bytes).",
            ["route", "outcome"],
            registry=registry,
        )
        self.shadow_requests = Counter(
            "rollguard_shadow_requests",
            "Mirrors to the candidate: sent, failed (of those sent), dropped "
            "(max_in_flight reached), skipped (body over shadow.max_body_bytes).",
            ["route", "outcome"],
            registry=registry,
        )
        self.shadow_in_flight = Gauge(
            "rollguard_shadow_in_flight",
            "Mirrors and paired-canary requests in flight now (bounded by shadow.max_in_flight; "
            "beyond it they are dropped).",
            registry=registry,
        )
        self.shadow_comparisons = Counter(
            "rollguard_shadow_comparisons",
            "Mirrored pairs compared: match or mismatch (status, decision, contract).",
            ["route", "outcome"],
            registry=registry,
        )
        self.shadow_score_delta = Histogram(
            "rollguard_shadow_score_delta",
            "Candidate score minus baseline score, per mirrored pair.",
            ["route"],
            buckets=SCORE_DELTA_BUCKETS,
            registry=registry,
        )
        self.rejected_total = Counter(
            "rollguard_listener_rejections",
            "Requests a listener answered itself below the app (431, 408, "
            "400, 501, 505, 503 overload): local-origin, never counted against a model version.",
            ["listener", "code", "reason"],
            registry=registry,
        )
        self.retries = Counter(
            "rollguard_retries",
            "Upstream attempts retried (only when safe), by the failure retried.",
            ["route", "role", "reason"],
            registry=registry,
        )
        self.gate_value = Gauge(
            "rollguard_gate_value",
            "The candidate's value of each gate at the last window, in the threshold's units "
            "(decision_delta: percentage points between the versions' positive-decision rates).",
            ["gate", "version"],
            registry=registry,
        )
        self.gate_threshold = Gauge(
            "rollguard_gate_threshold",
            "Each gate's configured threshold.",
            ["gate", "version"],
            registry=registry,
        )
        self.rollbacks = Counter(
            "rollguard_rollbacks",
            "Rollbacks by what decided them: gates, tripwire, max_hold, operator.",
            ["reason"],
            registry=registry,
        )
        self.auth_failures = Counter(
            "rollguard_auth_failures",
            "Data-plane requests refused by client authentication (401) or authorization (403), "
            "by a bounded reason (missing, malformed, unknown_key, unknown_kid, bad_alg, bad_signature, "
            "expired, claims, forbidden), and x-rollguard-force headers with a wrong operator token "
            "(force_token: served unforced, or 429 once the address is throttled).",
            ["route", "reason"],
            registry=registry,
        )
        self.rate_limited = Counter(
            "rollguard_rate_limited",
            "Data-plane requests refused with 429 by a rate limit.",
            ["route"],
            registry=registry,
        )
        self.config_reloads = Counter(
            "rollguard_config_reloads",
            "Config reloads (SIGHUP or POST /config/reload) by outcome: ok, or error (nothing applied).",
            ["outcome"],
            registry=registry,
        )
        for outcome in ("ok", "error"):
            self.config_reloads.labels(outcome)
        self.config_reload_success = Gauge(
            "rollguard_config_last_reload_success_timestamp_seconds",
            "When the config in force was loaded (start, or the last successful reload), Unix seconds.",
            registry=registry,
        )
        self.observer_errors = Counter(
            "rollguard_observer_errors",
            "Exchange observers (metrics, evidence, staging, tracing, access_log) that raised on a "
            "request; the request was answered all the same.",
            ["observer"],
            registry=registry,
        )
        for observer in ("metrics", "evidence", "staging", "tracing", "access_log"):
            self.observer_errors.labels(observer)
        self._children: dict[tuple[str, str, str], ExchangeMetrics] = {}
        self._codes: dict[tuple[str, str, str, int], Counter] = {}

    def exchange(self, route: str, role: str, version: str) -> ExchangeMetrics:
        key = (route, role, version)
        children = self._children.get(key)
        if children is None:
            children = ExchangeMetrics(
                request_duration=self.request_duration.labels(route, role, version),
                upstream_duration=self.upstream_duration.labels(route, role, version),
            )
            self._children[key] = children
        return children

    def count_request(self, route: str, role: str, version: str, code: int) -> None:
        key = (route, role, version, code)
        counter = self._codes.get(key)
        if counter is None:
            counter = self._codes[key] = self.requests.labels(route, role, version, str(code))
        counter.inc()

    def on_exchange(self, ex: Exchange) -> None:
        """Count one finished client request: each upstream attempt (its latency, failure, contract
        breach, whether it was retried), the fallback, the request contract, and the answer's code and
        latency against the version that answered, or as a local answer when no model was involved."""
        route = ex.route_name
        body = ex.body
        if body is not None and not body.held:
            self.body_streamed.labels(route, "request").inc()
        if ex.breach is not None and ex.role is not None and ex.version is not None:
            self.schema_violation(route, ex.role, ex.version, "request")
        for att in ex.attempts:
            role = att.pool.role
            version = att.pool.version
            self.exchange(route, role, version).upstream_duration.observe(att.elapsed)
            if att.violation is not None:
                self.schema_violation(route, role, version, "response")
            if att.compat:
                self.compat_violation(route, att.compat)
            kind = att.failure_kind
            if kind is not None:
                self.upstream_error(route, role, version, kind)
                if att.retried:
                    self.retries.labels(route, role, kind).inc()
        if ex.fallback is not None:
            self.fallback(route, ex.fallback)
        answered = ex.answered
        if answered is not None:
            version = answered.pool.version
            self.count_request(route, answered.role, version, ex.status)
            self.exchange(route, answered.role, version).request_duration.observe(ex.elapsed)
        elif ex.status != 499:
            # Answered by the proxy before any model was involved: never counts against a version.
            self.local_response(route, ex.status)

    def observer_failure(self, observer: str) -> None:
        self.observer_errors.labels(observer).inc()

    def upstream_error(self, route: str, role: str, version: str, kind: str) -> None:
        self.upstream_errors.labels(route, role, version, kind).inc()

    def schema_violation(self, route: str, role: str, version: str, direction: str) -> None:
        self.schema_violations.labels(route, role, version, direction).inc()

    def compat_violation(self, route: str, schemas: Iterable[str]) -> None:
        for schema in schemas:
            self.compat_violations.labels(route, schema).inc()

    def rejected(self, listener: str, code: int, reason: str) -> None:
        self.rejected_total.labels(listener, str(code), reason).inc()

    def local_response(self, route: str, code: int) -> None:
        self.local_responses.labels(route, str(code)).inc()

    def auth_failure(self, route: str, reason: str) -> None:
        self.auth_failures.labels(route, reason).inc()

    def rate_limit(self, route: str) -> None:
        self.rate_limited.labels(route).inc()

    def fallback(self, route: str, reason: str) -> None:
        self.fallbacks.labels(route, reason).inc()

    def shadow_request(self, route: str, outcome: str) -> None:
        self.shadow_requests.labels(route, outcome).inc()

    def paired_request(self, route: str, outcome: str) -> None:
        self.paired_requests.labels(route, outcome).inc()

    def shadow_comparison(self, route: str, match: bool, score_delta: float | None) -> None:
        self.shadow_comparisons.labels(route, "match" if match else "mismatch").inc()
        if score_delta is not None:
            self.shadow_score_delta.labels(route).observe(score_delta)

    def set_rollout(self, weight_percent: float, phase: str, phases: Iterable[str]) -> None:
        """The weight gauge, and ``rollguard_rollout_phase`` 1 for ``phase``, 0 for the other ``phases``."""
        self.canary_weight.set(weight_percent)
        for p in phases:
            self.rollout_phase.labels(p).set(1 if p == phase else 0)

    def prime(
        self,
        routes: Iterable[str],
        versions: dict[str, str],
        compat: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        """Create the zero-valued series for every known label set, so rate() has a start point.

        A counter series born at 1 hides its first increment from rate() and increase(): the first
        rollback, the first open circuit or the first dropped mirror would never alert. So every
        bounded label set of the counters that alerts watch exists at 0 from the start. ``compat`` maps a
        route to its compat schemas' names.
        """
        for route, schemas in (compat or {}).items():
            for schema in schemas:
                self.compat_violations.labels(route, schema)
        configured = list(routes)
        for route in [*configured, "unmatched"]:
            for role, version in versions.items():
                self.exchange(route, role, version)
                for kind in UPSTREAM_ERROR_KINDS:
                    self.upstream_errors.labels(route, role, version, kind)
        for route in configured:
            if "candidate" in versions:
                for kind in UPSTREAM_ERROR_KINDS:
                    self.upstream_errors.labels(route, "shadow", versions["candidate"], kind)
            for outcome in SHADOW_OUTCOMES:
                self.shadow_requests.labels(route, outcome)
            for outcome in ("match", "mismatch"):
                self.shadow_comparisons.labels(route, outcome)
        for reason in ROLLBACK_REASONS:
            self.rollbacks.labels(reason)
