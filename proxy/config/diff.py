"""What a config reload changes: pure comparisons of two :class:`Config` s, no I/O.

``changed_sections`` names the top-level sections (``upstreams.baseline``, ``routes``, ``canary``...) that
differ, for the log and the decision log. ``restart_keys`` names every changed key that a running process
cannot take over (its listeners' sockets and TLS settings, listener-level limits, the state store, the
access-log target, the PII key, the trace exporter). ``effective`` is the config a reload applies: the new
file, with those keys kept as they are until a restart, so what ``/status`` and the reports show is what
is in force.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

from proxy.config.model import AuthConfig, Config, ListenerTls, TracingConfig

# The listener-level limits live below the ASGI app, in the protocol built when the listener starts.
_LISTENER_LIMITS = (
    "max_header_bytes",
    "head_timeout",
    "body_timeout",
    "min_body_rate",
    "max_concurrency",
)
# On a TLS listener only the material (files and their password) follows a reload; these shape the
# handshake of a context built once for the listener's life.
_TLS_FIXED = ("client_auth", "min_version")
_TRACING_LIVE = ("sample_ratio",)


def _section(name: str) -> str:
    return {"baseline": "upstreams.baseline", "candidate": "upstreams.candidate"}.get(name, name)


def _comparable_auth(auth: AuthConfig) -> Any:
    """JWT keys are library objects without value equality: compared by what they were built from."""
    if auth.jwt is None:
        return auth
    keys = tuple((k.kid, k.alg, k.source, _key_bytes(k.key)) for k in auth.jwt.keys)
    return (replace(auth, jwt=None), replace(auth.jwt, keys=()), keys)


def _key_bytes(jwk: Any) -> Any:
    key = getattr(jwk, "key", None)
    if isinstance(key, bytes):
        return key
    public_bytes = getattr(key, "public_bytes", None)
    if public_bytes is None:
        return id(jwk)  # unknown shape: never equal, so a reload rebuilds what depends on it
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def same_auth(old: Config, new: Config) -> bool:
    """Whether client authentication and rate limits (and the routes' auth blocks) are unchanged."""
    return (
        _comparable_auth(old.auth) == _comparable_auth(new.auth)
        and old.rate_limits == new.rate_limits
        and [(r.name, r.auth) for r in old.routes] == [(r.name, r.auth) for r in new.routes]
    )


def changed_sections(old: Config, new: Config) -> list[str]:
    """The top-level sections whose values differ (``source`` aside)."""
    out = []
    for f in fields(Config):
        if f.name == "source":
            continue
        a, b = getattr(old, f.name), getattr(new, f.name)
        if f.name == "auth":
            a, b = _comparable_auth(a), _comparable_auth(b)
        if a != b:
            out.append(_section(f.name))
    return out


def _tls_keys(at: str, old: ListenerTls | None, new: ListenerTls | None) -> list[str]:
    if old is None or new is None:
        return [] if old is new else [at]
    return [f"{at}.{k}" for k in _TLS_FIXED if getattr(old, k) != getattr(new, k)]


def restart_keys(old: Config, new: Config) -> list[str]:
    """Every changed key that only a restart applies, as key paths (``limits.max_concurrency``)."""
    out = []
    if old.listen != new.listen:
        out.append("listen")
    if old.admin.listen != new.admin.listen:
        out.append("admin.listen")
    out += _tls_keys("tls", old.tls, new.tls)
    out += _tls_keys("admin.tls", old.admin.tls, new.admin.tls)
    if old.state != new.state:
        out.append("state.url")
    out += [f"limits.{k}" for k in _LISTENER_LIMITS if getattr(old.limits, k) != getattr(new.limits, k)]
    if old.logging.access_log != new.logging.access_log:
        out.append("logging.access_log")
    if old.logging.pii != new.logging.pii:
        out.append("logging.pii")
    if old.shadow.capture != new.shadow.capture:
        out.append("shadow.capture")
    out += [f"reports.{k}" for k in ("dir", "keep") if getattr(old.reports, k) != getattr(new.reports, k)]
    out += [
        f"tracing.{f.name}"
        for f in fields(TracingConfig)
        if f.name not in _TRACING_LIVE and getattr(old.tracing, f.name) != getattr(new.tracing, f.name)
    ]
    return out


def _tls(old: ListenerTls | None, new: ListenerTls | None) -> ListenerTls | None:
    if old is None or new is None:
        return old
    return replace(new, **{k: getattr(old, k) for k in _TLS_FIXED})


def effective(old: Config, new: Config) -> Config:
    """``new`` with every restart-only key kept at its running value."""
    return replace(
        new,
        listen=old.listen,
        tls=_tls(old.tls, new.tls),
        admin=replace(new.admin, listen=old.admin.listen, tls=_tls(old.admin.tls, new.admin.tls)),
        state=old.state,
        limits=replace(new.limits, **{k: getattr(old.limits, k) for k in _LISTENER_LIMITS}),
        logging=replace(new.logging, access_log=old.logging.access_log, pii=old.logging.pii),
        shadow=replace(new.shadow, capture=old.shadow.capture),
        reports=replace(new.reports, dir=old.reports.dir, keep=old.reports.keep),
        tracing=replace(old.tracing, sample_ratio=new.tracing.sample_ratio),
    )
