"""Configuration: YAML validated once against ``schema.json``, then frozen dataclasses.

``load_config(path)`` is the only way in. It validates the document against the shipped JSON Schema,
runs the cross-field checks the schema cannot express, resolves ``env:``/``file:`` secrets and relative
paths, and returns an immutable :class:`Config`. Every failure is a :class:`ConfigError` whose message
starts with the key path (``canary.weight: 120 is greater than the maximum of 100``).
"""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path
from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator

from proxy._types import Role
from proxy.config.auth import build_auth, build_rate_limits, route_auth
from proxy.config.document import (
    config_path,
    finite_numbers,
    parse_listen,
    parse_yaml,
    resolve_secret,
    validate_document,
)
from proxy.config.model import (
    AdminConfig,
    AdminToken,
    CanaryConfig,
    CompatSchema,
    Config,
    ForwardedConfig,
    GatesConfig,
    LimitsConfig,
    LoggingConfig,
    PiiConfig,
    ReportsConfig,
    RouteConfig,
    SecurityConfig,
    ShadowConfig,
    StateConfig,
    StickyKey,
    TripwireConfig,
    TrustedKey,
    UpstreamConfig,
    defaults_of,
)
from proxy.config.tls import listener_tls, upstream_tls
from proxy.config.tracing import tracing_config
from proxy.config.units import parse_duration, parse_rate, parse_size
from proxy.errors import ConfigError

# Defaults that a missing key takes, read from the dataclass itself: written once, in config/model.py.
_UPSTREAM_DEFAULTS = defaults_of(UpstreamConfig)


def _path(value: str, base: Path, at: str) -> Path:
    return config_path(base, value, at)


def _route(raw: dict[str, Any], i: int, base: Path, default_deadline: float) -> RouteConfig:
    at = f"routes[{i}]"
    sticky = None
    if "sticky_key" in raw:
        source, _, name = raw["sticky_key"].partition(":")
        sticky = StickyKey(source=source, name=name.lower() if source == "header" else name)
    schemas: dict[str, Path | None] = {}
    for key in ("request_schema", "response_schema"):
        schemas[key] = None
        if key in raw:
            file = _path(raw[key], base, f"{at}.{key}")
            schemas[key] = file
            _check_schema_file(file, f"{at}.{key}")
    return RouteConfig(
        name=raw["name"],
        path=raw["path"],
        methods=frozenset(raw.get("methods", ["POST"])),
        request_schema=schemas["request_schema"],
        response_schema=schemas["response_schema"],
        compat_schemas=_compat_schemas(raw.get("compat_schemas", []), base, at),
        score=raw.get("score"),
        decision_threshold=float(raw.get("decision_threshold", 0.5)),
        sticky_key=sticky,
        segment=raw.get("segment"),
        mode=raw.get("mode", "enforce"),
        response_mode=raw.get("response_mode", "observe"),
        retry_idempotency_key=bool(raw.get("retry_idempotency_key", False)),
        deadline=parse_duration(raw["deadline"]) if "deadline" in raw else default_deadline,
        auth=route_auth(raw.get("auth")),
    )


def _compat_schemas(raw: list[str], base: Path, at: str) -> tuple[CompatSchema, ...]:
    """``routes[i].compat_schemas``: each file checked like ``response_schema``, each named by its file
    name without the extension (the metric's ``schema`` label), so two that share a name are an error."""
    out: list[CompatSchema] = []
    for j, value in enumerate(raw):
        here = f"{at}.compat_schemas[{j}]"
        file = _path(value, base, here)
        _check_schema_file(file, here)
        # From the name as configured, not the resolved file: a symlink does not rename the series.
        name = Path(value).stem
        for k, earlier in enumerate(out):
            if earlier.path == file:
                raise ConfigError(here, f"{file} is already {at}.compat_schemas[{k}]")
            if earlier.name == name:
                raise ConfigError(
                    here,
                    f"{value!r} has the schema label {name!r} of {at}.compat_schemas[{k}] "
                    "(the label is the file name without its extension): rename one of the files",
                )
        out.append(CompatSchema(name=name, path=file))
    return tuple(out)


def _check_schema_file(file: Path, path: str) -> None:
    try:
        doc = json.loads(file.read_bytes())
    except OSError as exc:
        raise ConfigError(path, f"cannot read {file}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ConfigError(path, f"{file} is not valid JSON: {exc}") from exc
    try:
        Draft202012Validator.check_schema(doc)
    except Exception as exc:  # jsonschema's SchemaError; message names the bad keyword
        raise ConfigError(path, f"{file} is not a valid JSON Schema: {getattr(exc, 'message', exc)}") from exc
    try:
        # What the data plane compiles, once more here: a $ref that resolves nowhere passes the check above
        # and would otherwise fail the start or the reload without naming the key.
        jsonschema_rs.Draft202012Validator(doc)
    except ValueError as exc:  # jsonschema-rs's ValidationError
        raise ConfigError(path, f"{file} does not compile: {getattr(exc, 'message', exc)}") from exc


def _upstream(raw: dict[str, Any], role: Role, base: Path) -> UpstreamConfig:
    d = _UPSTREAM_DEFAULTS
    timeout = parse_duration(raw.get("timeout", d["timeout"]))
    url = raw["url"].rstrip("/")
    return UpstreamConfig(
        role=role,
        url=url,
        version=raw["version"],
        timeout=timeout,
        connect_timeout=parse_duration(raw.get("connect_timeout", min(1.0, timeout))),
        read_timeout=parse_duration(raw.get("read_timeout", timeout)),
        max_connections=int(raw.get("max_connections", d["max_connections"])),
        cost_per_request=float(raw.get("cost", {}).get("per_request", 0.0)),
        cost_per_second=float(raw.get("cost", {}).get("per_second", 0.0)),
        **_resilience(raw),
        manifest=_path(raw["manifest"], base, f"upstreams.{role}.manifest") if "manifest" in raw else None,
        tls=upstream_tls(raw.get("tls"), url, f"upstreams.{role}.tls", base),
    )


def _resilience(raw: dict[str, Any]) -> dict[str, Any]:
    d = _UPSTREAM_DEFAULTS
    b, r = raw.get("breaker", {}), raw.get("retries", {})
    return {
        "breaker_failures": int(b.get("failures", d["breaker_failures"])),
        "breaker_failure_rate": float(b.get("failure_rate", d["breaker_failure_rate"])),
        "breaker_min_volume": int(b.get("min_volume", d["breaker_min_volume"])),
        "breaker_open_for": parse_duration(b.get("open_for", d["breaker_open_for"])),
        "retries": int(r.get("attempts", d["retries"])),
        "retry_backoff_base": parse_duration(r.get("backoff_base", d["retry_backoff_base"])),
        "retry_backoff_cap": parse_duration(r.get("backoff_cap", d["retry_backoff_cap"])),
        "retry_budget": float(r.get("budget", d["retry_budget"])),
    }


def _canary(raw: dict[str, Any], weight: float) -> CanaryConfig:
    d = CanaryConfig()
    steps = tuple(float(x) for x in raw.get("steps", d.steps))
    for i, (a, b) in enumerate(zip(steps, steps[1:], strict=False)):
        if b <= a:
            raise ConfigError(f"canary.steps[{i + 1}]", f"{b:g} must be greater than the step before ({a:g})")
    if steps[-1] != 100:
        raise ConfigError(
            f"canary.steps[{len(steps) - 1}]", f"the last step must be 100 (promotion), not {steps[-1]:g}"
        )
    trip = raw.get("tripwire", {})
    if float(trip.get("failure_rate", 0.05)) <= 0.001:
        # The SPRT tests the candidate against the baseline's rate, floored at 0.1%: it needs room above it.
        raise ConfigError(
            "canary.tripwire.failure_rate", "must be greater than 0.001 (the baseline rate's floor)"
        )
    gates = raw.get("gates", {})
    dg, dt = GatesConfig(), TripwireConfig()
    return CanaryConfig(
        weight=weight,
        fallback_to_baseline=bool(raw.get("fallback_to_baseline", True)),
        steps=steps,
        interval=parse_duration(raw.get("interval", d.interval)),
        min_samples=int(raw.get("min_samples", d.min_samples)),
        max_failed_windows=int(raw.get("max_failed_windows", d.max_failed_windows)),
        passes_per_step=int(raw.get("passes_per_step", d.passes_per_step)),
        max_hold=parse_duration(raw.get("max_hold", d.max_hold)),
        on_max_hold=raw.get("on_max_hold", d.on_max_hold),
        auto_promote=bool(raw.get("auto_promote", d.auto_promote)),
        shadow_samples=int(raw.get("shadow_samples", d.shadow_samples)),
        step_evidence=raw.get("step_evidence", d.step_evidence),
        paired_sample=float(raw.get("paired_sample", d.paired_sample)),
        tripwire=TripwireConfig(**{k: type(getattr(dt, k))(trip[k]) for k in trip}),
        gates=GatesConfig(**{k: type(getattr(dg, k))(gates[k]) for k in gates}),
    )


def _security(raw: dict[str, Any], candidate: UpstreamConfig, base: Path) -> SecurityConfig:
    from proxy.config.keys import load_public_key

    keys = []
    for i, k in enumerate(raw.get("trusted_keys", [])):
        text = resolve_secret(k["key"], f"security.trusted_keys[{i}].key", base)
        try:
            load_public_key(text)
        except ValueError as exc:
            raise ConfigError(f"security.trusted_keys[{i}].key", f"not an Ed25519 public key: {exc}") from exc
        keys.append(TrustedKey(name=k["name"], key=text))
    required = bool(raw.get("require_signed_candidate", False))
    if required and candidate.manifest is None:
        raise ConfigError("upstreams.candidate.manifest", "required by security.require_signed_candidate")
    if required and not keys:
        raise ConfigError("security.trusted_keys", "required by security.require_signed_candidate")
    return SecurityConfig(require_signed_candidate=required, trusted_keys=tuple(keys))


def _pii(raw: dict[str, Any], base: Path) -> PiiConfig:
    key = None
    if "key" in raw:
        key = resolve_secret(raw["key"], "logging.pii.key", base).encode()
        if len(key) < 16:
            raise ConfigError("logging.pii.key", f"must be at least 16 bytes, got {len(key)}")
    return PiiConfig(
        key=key,
        ip_addresses=bool(raw.get("ip_addresses", True)),
        json_fields=tuple(raw.get("json_fields", ())),
        header_names=tuple(h.lower() for h in raw.get("header_names", ())),
    )


def _shadow(raw: dict[str, Any], limits: LimitsConfig, api_key_header: str, base: Path) -> ShadowConfig:
    tol = raw.get("numeric_tolerance", {})
    noise = raw.get("noise", {})
    max_body = parse_size(raw["max_body_bytes"]) if "max_body_bytes" in raw else limits.replay_body_bytes
    if max_body > limits.replay_body_bytes:
        # Only held bodies can be sent twice; a larger cap would silently mirror nothing above it.
        raise ConfigError("shadow.max_body_bytes", "must not exceed limits.replay_body_bytes")
    defaults = ShadowConfig()
    return ShadowConfig(
        sample=float(raw.get("sample", defaults.sample)),
        max_in_flight=int(raw.get("max_in_flight", defaults.max_in_flight)),
        timeout=parse_duration(raw.get("timeout", defaults.timeout)),
        methods=frozenset(raw.get("methods", defaults.methods)),
        max_body_bytes=max_body,
        forward_credentials=bool(raw.get("forward_credentials", False)),
        after_rollback=bool(raw.get("after_rollback", False)),
        # The data plane's API-key header is a credential too: never mirrored unless asked for.
        credential_headers=frozenset(
            h.lower() for h in raw.get("credential_headers", defaults.credential_headers)
        )
        | {api_key_header},
        noise_sample=float(raw.get("noise_sample", defaults.noise_sample)),
        abs_tolerance=float(tol.get("abs", defaults.abs_tolerance)),
        rel_tolerance=float(tol.get("rel", defaults.rel_tolerance)),
        noise_min_samples=int(noise.get("min_samples", defaults.noise_min_samples)),
        noise_abs_threshold=float(noise.get("abs_threshold", defaults.noise_abs_threshold)),
        noise_rel_factor=float(noise.get("rel_factor", defaults.noise_rel_factor)),
        segment_top_n=int(raw.get("segment_top_n", defaults.segment_top_n)),
        breaker_failures=int(raw.get("breaker", {}).get("failures", defaults.breaker_failures)),
        breaker_open_for=parse_duration(raw.get("breaker", {}).get("open_for", defaults.breaker_open_for)),
        capture=_path(raw["capture"], base, "shadow.capture") if raw.get("capture") else None,
    )


def build_config(doc: dict[str, Any], base: Path, source: Path | None = None) -> Config:
    """Validate a parsed document and build the frozen :class:`Config`; relative paths from ``base``."""
    finite_numbers(doc)
    validate_document(doc)
    ups = doc["upstreams"]
    baseline, candidate = (
        _upstream(ups["baseline"], "baseline", base),
        _upstream(ups["candidate"], "candidate", base),
    )
    if baseline.version == candidate.version:
        raise ConfigError(
            "upstreams.candidate.version", f"must differ from the baseline's ({baseline.version!r})"
        )
    default_deadline = baseline.timeout + candidate.timeout
    routes = tuple(_route(r, i, base, default_deadline) for i, r in enumerate(doc.get("routes", [])))
    seen: set[str] = set()
    for i, r in enumerate(routes):
        if r.name in seen:
            raise ConfigError(f"routes[{i}].name", f"{r.name!r} is used by an earlier route")
        seen.add(r.name)
    admin_raw = doc.get("admin", {})
    tokens: list[AdminToken] = []
    for i, t in enumerate(admin_raw.get("tokens", [])):
        secret = resolve_secret(t["token"], f"admin.tokens[{i}].token", base)
        if any(secret == other.token for other in tokens):
            raise ConfigError(f"admin.tokens[{i}].token", "the same token is configured twice")
        tokens.append(AdminToken(name=t["name"], role=t["role"], token=secret))
    listen = parse_listen(doc.get("listen", "0.0.0.0:8080"), "listen")
    admin_listen = parse_listen(admin_raw.get("listen", "127.0.0.1:9901"), "admin.listen")
    wildcard = {"0.0.0.0", "::", ""}
    if (
        listen.port
        and listen.port == admin_listen.port
        and (listen.host == admin_listen.host or listen.host in wildcard or admin_listen.host in wildcard)
    ):
        raise ConfigError(
            "admin.listen", f"must differ from listen ({listen}): both would bind port {listen.port}"
        )
    limits_raw = doc.get("limits", {})
    limits_kw: dict[str, Any] = {
        k: parse_size(limits_raw[k])
        for k in ("max_body_bytes", "replay_body_bytes", "inspect_body_bytes", "max_header_bytes")
        if k in limits_raw
    }
    for k in ("head_timeout", "body_timeout"):
        if k in limits_raw:
            limits_kw[k] = parse_duration(limits_raw[k])
    if "min_body_rate" in limits_raw:
        limits_kw["min_body_rate"] = parse_rate(limits_raw["min_body_rate"])
    if "max_concurrency" in limits_raw:
        limits_kw["max_concurrency"] = int(limits_raw["max_concurrency"])
    limits = LimitsConfig(**limits_kw)
    if limits.max_header_bytes < 1024:
        # Below this an ordinary request line and Host header are refused: a typo, not a policy.
        raise ConfigError(
            "limits.max_header_bytes", f"{limits.max_header_bytes} is less than the minimum of 1024 (1KiB)"
        )
    if limits.replay_body_bytes > limits.max_body_bytes:
        raise ConfigError("limits.replay_body_bytes", "must not exceed limits.max_body_bytes")
    trusted = []
    for i, net in enumerate(doc.get("forwarded", {}).get("trusted", ["127.0.0.1/32"])):
        try:
            trusted.append(ipaddress.ip_network(net, strict=False))
        except ValueError as exc:
            raise ConfigError(f"forwarded.trusted[{i}]", f"{net!r} is not an IP network: {exc}") from exc
    weight = float(doc.get("canary", {}).get("weight", 0))
    if abs(weight * 100 - round(weight * 100)) > 1e-6:
        raise ConfigError("canary.weight", f"{weight} has more than two decimals (resolution is 0.01)")
    canary_raw = doc.get("canary", {})
    auth = build_auth(doc.get("auth", {}), base, routes, lambda v, at: resolve_secret(v, at, base))
    shadow = _shadow(doc.get("shadow", {}), limits, auth.api_key_header, base)
    state_ref = doc.get("state", {}).get("url", "file:./var/rollguard-state.json")
    log_raw = doc.get("logging", {})
    access_log = log_raw.get("access_log", "stdout")
    if access_log not in ("stdout", "off"):
        access_log = str(_path(access_log, base, "logging.access_log"))
    return Config(
        source=source,
        listen=listen,
        tls=listener_tls(doc.get("tls"), "tls", base),
        admin=AdminConfig(
            listen=admin_listen,
            tokens=tuple(tokens),
            metrics_auth=bool(admin_raw.get("metrics_auth", False)),
            tls=listener_tls(admin_raw.get("tls"), "admin.tls", base),
        ),
        state=StateConfig(path=_path(state_ref.removeprefix("file:"), base, "state.url")),
        baseline=baseline,
        candidate=candidate,
        routes=routes,
        limits=limits,
        forwarded=ForwardedConfig(trusted=tuple(trusted)),
        canary=_canary(canary_raw, weight),
        security=_security(doc.get("security", {}), candidate, base),
        shadow=shadow,
        logging=LoggingConfig(
            access_log=access_log,
            level=log_raw.get("level", "info"),
            sample_success=float(log_raw.get("sample_success", 1.0)),
            pii=_pii(log_raw.get("pii", {}), base),
        ),
        auth=auth,
        rate_limits=build_rate_limits(doc.get("rate_limits", []), routes),
        tracing=tracing_config(doc.get("tracing", {}), base),
        reports=_reports(doc.get("reports", {}), base),
    )


def _reports(raw: dict[str, Any], base: Path) -> ReportsConfig:
    d = ReportsConfig()
    return ReportsConfig(
        dir=_path(raw["dir"], base, "reports.dir") if "dir" in raw else None,
        keep=int(raw.get("keep", d.keep)),
        samples=int(raw.get("samples", d.samples)),
    )


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read, validate and freeze a config file. Raises :class:`ConfigError` naming the key path."""
    file = config_path(Path.cwd(), str(path), "")
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise ConfigError("", f"cannot read {file}: {exc.strerror}") from exc
    doc = parse_yaml(raw, file)
    if not isinstance(doc, dict):
        raise ConfigError("", f"{file} must hold a mapping of keys, not {type(doc).__name__}")
    return build_config(doc, file.parent, file)
