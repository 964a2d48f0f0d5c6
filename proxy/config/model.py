"""The frozen configuration model: what a validated config file becomes (see ``config.load_config``).

Every field documents its default and meaning; secrets never appear in ``repr``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from proxy._types import Role

AdminRole = Literal["viewer", "operator"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Listen:
    host: str
    port: int  # 0 picks a free port; the bound one is reported at start

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminToken:
    name: str  # who: the actor in logs and audit lines, never the token
    role: AdminRole
    token: str = field(repr=False)  # resolved secret; never printed

    def __repr__(self) -> str:
        return f"AdminToken(name={self.name!r}, role={self.role!r}, token='***')"


ClientAuth = Literal["none", "optional", "require"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenerTls:
    """TLS on a listener (``tls`` for the data plane, ``admin.tls``); files are re-read on SIGHUP."""

    at: str  # the key path, for messages: "tls" or "admin.tls"
    cert: Path  # PEM certificate chain, leaf first (may also hold the key)
    key: Path | None = None  # PEM private key; None: in the cert file
    key_password: str | None = field(default=None, repr=False)  # resolved secret; never printed
    client_ca: Path | None = None  # PEM bundle that client certificates must chain to
    client_auth: ClientAuth = "none"  # require: no valid client certificate, no handshake
    min_version: Literal["1.2", "1.3"] = "1.2"


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamTls:
    """TLS towards an ``https://`` upstream. Verification is always on; there is no switch to turn it off."""

    ca: Path | None = None  # the only CAs trusted for this upstream; None: the system trust store
    cert: Path | None = None  # client certificate (mTLS), PEM; may also hold the key
    key: Path | None = None
    key_password: str | None = field(default=None, repr=False)  # resolved secret; never printed
    server_name: str | None = None  # SNI and the name verified; None: the URL's host


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminConfig:
    listen: Listen  # default 127.0.0.1:9901: loopback, never the data plane's port
    tls: ListenerTls | None = None  # None: plain HTTP
    tokens: tuple[AdminToken, ...] = ()  # no tokens: every authenticated admin call is 401
    metrics_auth: bool = False  # true: /metrics needs the viewer role too


@dataclass(frozen=True, slots=True, kw_only=True)
class StateConfig:
    path: Path  # file store; the decision log sits beside it as <stem>.decisions.jsonl


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportsConfig:
    dir: Path | None = None  # artifacts written when a rollout ends; None: <state file's folder>/reports
    keep: int = 20  # rollouts whose artifact folders are kept; the oldest beyond this are removed
    samples: int = 5  # valid and (separately) invalid request samples per route in staging_report.json


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamConfig:
    role: Role
    url: str  # http(s)://host:port, no path
    version: str  # the model version this upstream serves; a metric label
    timeout: float = 2.0  # one attempt, first byte sent to last byte received
    connect_timeout: float = 1.0
    read_timeout: float = 2.0  # longest silence between two reads
    max_connections: int = 512  # pool size; beyond it requests wait for a connection
    cost_per_request: float = 0.0  # cost of one call = cost_per_request + cost_per_second x upstream time
    cost_per_second: float = 0.0
    breaker_failures: int = 5  # consecutive failed calls that open the upstream's circuit
    breaker_failure_rate: float = 0.5  # ...or this share failed of the last 100 calls...
    breaker_min_volume: int = 20  # ...once at least this many were seen
    breaker_open_for: float = 5.0  # seconds the circuit stays open before a probe
    retries: int = 1  # extra attempts when it is safe (see README); 0 disables
    retry_backoff_base: float = 0.025  # full-jitter exponential backoff: uniform(0, min(cap, base * 2**n))
    retry_backoff_cap: float = 0.25
    retry_budget: float = 0.2  # retries in flight stay under this share of active requests
    manifest: Path | None = None  # signed release manifest (candidate); required by require_signed_candidate
    tls: UpstreamTls | None = None  # https:// only; None there: the system trust store, no client cert


@dataclass(frozen=True, slots=True, kw_only=True)
class StickyKey:
    source: Literal["header", "cookie", "json"]
    name: str  # header name (lower-case), cookie name, or JSON pointer

    def __str__(self) -> str:
        return f"{self.source}:{self.name}"


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteAuth:
    """Who may use a route. A client is allowed when it has one of ``roles`` or is named in ``clients``;
    both empty: any authenticated client."""

    required: bool = True  # false: open to anonymous clients even when auth.required is true
    roles: frozenset[str] = frozenset()
    clients: frozenset[str] = frozenset()

    def allows(self, name: str, roles: frozenset[str]) -> bool:
        if not self.roles and not self.clients:
            return True
        return name in self.clients or not self.roles.isdisjoint(roles)


@dataclass(frozen=True, slots=True, kw_only=True)
class CompatSchema:
    """One of ``routes[].compat_schemas``: an older response schema that some consumers still read."""

    name: str  # the ``schema`` label: the configured file name without its extension, unique per route
    path: Path


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteConfig:
    name: str
    path: str  # exact, or a prefix ending in "*"
    methods: frozenset[str] = frozenset({"POST"})
    request_schema: Path | None = None
    response_schema: Path | None = None
    # Checked against the candidate's inspected 2xx JSON answers and counted; never changes an answer.
    compat_schemas: tuple[CompatSchema, ...] = ()
    score: str | None = None  # JSON pointer to the model's numeric output
    decision_threshold: float = 0.5
    sticky_key: StickyKey | None = None  # None: each request draws at random
    segment: str | None = None
    mode: Literal["enforce", "observe"] = "enforce"  # request contract: 400 and not forwarded, or count
    response_mode: Literal["enforce", "observe"] = "observe"  # a baseline breach: 502, or count and pass
    deadline: float = 4.0  # whole client request, fallback included; default: the two timeouts added
    retry_idempotency_key: bool = False  # a non-idempotent request with an Idempotency-Key may be retried
    auth: RouteAuth | None = None  # None: auth.required decides


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitsConfig:
    max_body_bytes: int = 10 * 1024 * 1024
    replay_body_bytes: int = 1024 * 1024  # bodies up to this are held (json: sticky keys, checks)
    inspect_body_bytes: int = 1024 * 1024  # responses up to this are checked; larger stream unchecked
    max_header_bytes: int = 64 * 1024  # request line + header fields; 431 beyond (both listeners)
    head_timeout: float = 10.0  # seconds from a request's first byte to the end of its head; 408 beyond
    body_timeout: float = 10.0  # seconds from the end of the head to the body's last byte; 408 beyond
    min_body_rate: int = 1024  # bytes/s a body must average once 5 s have passed; 408 below (0: off)
    max_concurrency: int = 1024  # requests in flight per listener; 503 + Retry-After beyond


@dataclass(frozen=True, slots=True, kw_only=True)
class ForwardedConfig:
    trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
        ipaddress.ip_network("127.0.0.1/32"),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class TripwireConfig:
    """``canary.tripwire``: the policy of ``rollout/tripwire.py``, validated when built."""

    consecutive_failures: int = 5  # candidate failures in a row that roll back at once
    alpha: float = 0.001  # the SPRT's chance of tripping a candidate that fails at the baseline's rate
    beta: float = 0.01  # its chance of accepting a candidate that fails at ``failure_rate``
    failure_rate: float = 0.05  # the candidate failure share the SPRT is built to catch
    baseline_floor: float = 0.001  # the baseline failure share assumed at least (not a config key)
    baseline_window: int = 10_000  # about how many recent baseline requests its estimate weighs (likewise)

    def __post_init__(self) -> None:
        if self.consecutive_failures < 1:
            raise ValueError(f"consecutive_failures must be >= 1, got {self.consecutive_failures}")
        if not (0 < self.alpha < 0.5 and 0 < self.beta < 0.5):
            raise ValueError("alpha and beta must be in (0, 0.5)")
        if not 0 < self.baseline_floor < self.failure_rate < 1:
            raise ValueError("need 0 < baseline_floor < failure_rate < 1")
        if self.baseline_window < 1:
            raise ValueError(f"baseline_window must be >= 1, got {self.baseline_window}")


@dataclass(frozen=True, slots=True, kw_only=True)
class GatesConfig:
    latency_p95_ms: float = 120.0
    latency_p99_ms: float = 300.0  # the tail: a slow path on 1-2% of requests hardly moves the p95
    error_rate: float = 0.005
    decision_delta_pp: float = 1.0
    policy_violations: int = 0
    cost_per_1k: float = 0.50
    score_psi: float = 0.2  # score distribution shift that counts as practically large
    latency_ratio: float = 1.2  # p95 ratio to the baseline: passing proves it below, failing can't
    latency_p99_ratio: float = 1.5  # likewise for the p99 (a tail needs ~3x the samples of a p95)
    error_ratio: float = 2.0  # the error margin over the baseline: the larger of (ratio - 1) x its rate...
    error_delta: float = 0.005  # ...and this difference
    family_alpha: float = 0.05  # chance of failing an A/A candidate in a whole rollout, every look


@dataclass(frozen=True, slots=True, kw_only=True)
class CanaryConfig:
    weight: float = 0.0  # percent, 0.01 resolution; used while the state store holds none
    fallback_to_baseline: bool = True  # a failed candidate attempt is answered by the baseline
    steps: tuple[float, ...] = (1.0, 5.0, 25.0, 50.0, 100.0)
    interval: float = 60.0  # analysis window, seconds
    min_samples: int = 200  # fewer candidate samples since the step began: inconclusive
    max_failed_windows: int = 3  # consecutive failing windows -> rollback
    passes_per_step: int = 1
    max_hold: float = 1800.0  # longest a step may stay inconclusive...
    on_max_hold: Literal["wait", "rollback"] = "wait"  # ...then wait for an operator, or roll back
    auto_promote: bool = True
    shadow_samples: int = 500  # compared pairs the shadow phase needs before step 1 (0: no shadow phase)
    step_evidence: Literal["exposure", "full"] = "exposure"  # margins widened at steps of less exposure
    paired_sample: float = 0.0  # share of candidate-routed requests also sent to the baseline, off-path
    tripwire: TripwireConfig = TripwireConfig()
    gates: GatesConfig = GatesConfig()


@dataclass(frozen=True, slots=True, kw_only=True)
class ShadowConfig:
    sample: float = 0.0  # share of matching baseline-routed requests mirrored to the candidate
    max_in_flight: int = 256  # beyond this, mirrors are dropped and counted, never queued
    timeout: float = 2.0  # one mirror attempt, first byte to last
    methods: frozenset[str] = frozenset({"POST"})
    max_body_bytes: int = 1024 * 1024  # larger bodies are not mirrored (counted as skipped)
    forward_credentials: bool = False  # authorization, cookie and credential_headers are stripped
    credential_headers: frozenset[str] = frozenset({"x-api-key"})
    noise_sample: float = 0.05  # share of mirrored requests also sent to the baseline a second time
    abs_tolerance: float = 1e-9  # numeric fields closer than this are equal
    rel_tolerance: float = 1e-6
    noise_min_samples: int = 50  # pairs per field before it is classified
    noise_abs_threshold: float = 0.05  # candidate must differ this much more often than baseline-vs-baseline
    noise_rel_factor: float = 2.0  # ...and this many times as often
    segment_top_n: int = 10
    breaker_failures: int = 20  # consecutive failed mirrors that stop mirroring for breaker_open_for
    breaker_open_for: float = 5.0  # seconds; then one probe mirror decides whether to resume
    capture: Path | None = None  # each compared pair appended as a backtest trace line
    after_rollback: bool = False  # keep mirroring a rolled-back candidate (else none until re-armed)


@dataclass(frozen=True, slots=True, kw_only=True)
class PiiConfig:
    key: bytes | None = field(default=None, repr=False)  # HMAC key; None: a random one per process
    ip_addresses: bool = True
    json_fields: tuple[str, ...] = ()  # JSON pointers masked whole in logged bodies
    header_names: tuple[str, ...] = ()  # header names masked whole, beyond the built-in credentials


@dataclass(frozen=True, slots=True, kw_only=True)
class LoggingConfig:
    access_log: str = "stdout"  # "stdout", "off", or an absolute file path
    level: str = "info"
    sample_success: float = 1.0  # share of successful requests logged; errors are always logged
    pii: PiiConfig = PiiConfig()


@dataclass(frozen=True, slots=True, kw_only=True)
class TrustedKey:
    name: str  # who signed, as reported in /status and the decision log
    key: str = field(repr=False)  # the public key, PEM or base64 of the raw 32 bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class SecurityConfig:
    require_signed_candidate: bool = False  # no traffic of any kind to a candidate without a valid manifest
    trusted_keys: tuple[TrustedKey, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiKeyClient:
    name: str  # the client's name: access log, allow lists, rate-limit key
    roles: frozenset[str] = frozenset()
    key_sha256: bytes = field(repr=False)  # SHA-256 digest of the key; the key itself is never stored


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerClient:
    name: str
    roles: frozenset[str] = frozenset()
    peer: str  # a subject CN, DNS or URI subjectAltName of the verified client certificate


@dataclass(frozen=True, slots=True, kw_only=True)
class JwtKey:
    kid: str | None  # None: tried for tokens without a kid (and only those)
    alg: Literal["HS256", "RS256", "ES256"]  # the one algorithm this key verifies
    key: Any = field(repr=False)  # a jwt.PyJWK bound to ``alg``
    source: str  # where it came from, for messages (a file path or "env:NAME")


@dataclass(frozen=True, slots=True, kw_only=True)
class JwtConfig:
    keys: tuple[JwtKey, ...]
    issuer: str | None = None  # checked (and required in the token) when set
    audience: tuple[str, ...] = ()  # the token's aud must name one of these, when set
    leeway: float = 30.0  # seconds of clock skew allowed on exp and nbf
    name_claim: str = "sub"  # the claim that names the client
    roles_claim: str = "roles"  # a list of strings, or one space-separated string


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthConfig:
    required: bool = False  # routes without their own auth block (and unmatched paths) need a client
    api_key_header: str = "x-api-key"  # also accepted: Authorization: Bearer <key>
    api_keys: tuple[ApiKeyClient, ...] = ()
    peers: tuple[PeerClient, ...] = ()
    jwt: JwtConfig | None = None
    # An API key or bearer token the proxy verified is removed before the request goes upstream: the model
    # servers never see a client's credential. False forwards it (a model that authenticates on its own).
    strip_credentials: bool = True

    @property
    def enabled(self) -> bool:
        return bool(self.api_keys or self.peers or self.jwt is not None)


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimit:
    route: str  # a route name, "unmatched", or "*" for every request
    per: Literal["client", "address", "route"] = "client"  # client: name, or address when anonymous
    rate: float  # requests per second
    burst: int  # requests admitted at once from idle
    max_keys: int = 100_000  # keys tracked; the least recently seen is forgotten beyond this
    text: str = ""  # the rate as configured ("100/s"), for messages


@dataclass(frozen=True, slots=True, kw_only=True)
class TracingConfig:
    exporter: Literal["none", "otlp"] = "none"  # none: no tracer at all, nothing on the hot path
    endpoint: str = "http://127.0.0.1:4318/v1/traces"  # OTLP/HTTP (protobuf) traces endpoint
    sample_ratio: float = 0.01  # share of new traces recorded; a sampled incoming traceparent always is
    service_name: str = "rollguard"  # the resource's service.name
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # resolved secrets, never printed
    timeout: float = 5.0  # one export to the collector, retries included
    queue_size: int = 2048  # finished spans waiting for export; beyond it spans are dropped, never queued

    @property
    def enabled(self) -> bool:
        return self.exporter != "none"

    def __repr__(self) -> str:
        names = ", ".join(f"{k}=***" for k, _ in self.headers)
        return (
            f"TracingConfig(exporter={self.exporter!r}, endpoint={self.endpoint!r}, "
            f"sample_ratio={self.sample_ratio}, service_name={self.service_name!r}, headers=[{names}], "
            f"timeout={self.timeout}, queue_size={self.queue_size})"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    source: Path | None
    listen: Listen
    admin: AdminConfig
    tls: ListenerTls | None = None  # the data plane's TLS; None: plain HTTP
    state: StateConfig
    baseline: UpstreamConfig
    candidate: UpstreamConfig
    routes: tuple[RouteConfig, ...] = ()
    limits: LimitsConfig = LimitsConfig()
    forwarded: ForwardedConfig = ForwardedConfig()
    canary: CanaryConfig = CanaryConfig()
    shadow: ShadowConfig = ShadowConfig()
    security: SecurityConfig = SecurityConfig()
    logging: LoggingConfig = LoggingConfig()
    auth: AuthConfig = AuthConfig()
    rate_limits: tuple[RateLimit, ...] = ()
    tracing: TracingConfig = TracingConfig()
    reports: ReportsConfig = ReportsConfig()

    def upstream(self, role: Role) -> UpstreamConfig:
        return self.baseline if role == "baseline" else self.candidate

    @property
    def reports_dir(self) -> Path:
        """Where the artifacts go when a rollout ends (``reports.dir``, default beside the state file)."""
        return self.reports.dir if self.reports.dir is not None else self.state.path.parent / "reports"


def defaults_of(cls: type) -> dict[str, Any]:
    """A config dataclass's field defaults by name: what a missing key takes, read from the one place
    they are written (this module), never restated by the loader."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out
