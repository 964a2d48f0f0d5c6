"""The ``tls`` blocks of a config: listeners (``tls``, ``admin.tls``) and upstreams (``upstreams.*.tls``).

Each block is checked past what the schema can say (which fields go together, the URL's scheme) and then
by building its SSL context once, so that a missing file, a key that does not match its certificate or
a wrong key password is a :class:`ConfigError` naming the key, at ``check-config`` time, not at start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from proxy.config.document import config_path, resolve_secret
from proxy.config.model import ListenerTls, UpstreamTls
from proxy.config.tls_contexts import client_context, server_context
from proxy.errors import ConfigError, TlsError

__all__ = ["listener_tls", "upstream_tls"]


def _secret(raw: dict[str, Any], at: str, base: Path) -> str | None:
    return resolve_secret(raw["key_password"], f"{at}.key_password", base) if "key_password" in raw else None


def _file(raw: dict[str, Any], key: str, base: Path, at: str) -> Path | None:
    return config_path(base, raw[key], f"{at}.{key}") if key in raw else None


def listener_tls(raw: dict[str, Any] | None, at: str, base: Path) -> ListenerTls | None:
    """``tls`` / ``admin.tls``; ``client_auth`` defaults to ``require`` when a ``client_ca`` is given."""
    if raw is None:
        return None
    client_ca = _file(raw, "client_ca", base, at)
    client_auth = raw.get("client_auth", "require" if client_ca is not None else "none")
    if client_auth != "none" and client_ca is None:
        raise ConfigError(f"{at}.client_ca", f"required by {at}.client_auth: {client_auth}")
    if client_auth == "none" and client_ca is not None:
        raise ConfigError(
            f"{at}.client_auth", f"is none, so {at}.client_ca would never be used: set optional or require"
        )
    cfg = ListenerTls(
        at=at,
        cert=config_path(base, raw["cert"], f"{at}.cert"),
        key=_file(raw, "key", base, at),
        key_password=_secret(raw, at, base),
        client_ca=client_ca,
        client_auth=client_auth,
        min_version=str(raw.get("min_version", "1.2")),  # type: ignore[arg-type]  # schema: "1.2"/"1.3"
    )
    try:
        server_context(cfg)
    except TlsError as exc:
        raise ConfigError(f"{at}.{exc.field}", str(exc)) from exc
    return cfg


def upstream_tls(raw: dict[str, Any] | None, url: str, at: str, base: Path) -> UpstreamTls | None:
    """``upstreams.<role>.tls``: only with an ``https://`` URL; ``key`` only with ``cert``."""
    if raw is None:
        return None
    if not url.startswith("https://"):
        raise ConfigError(at, f"needs an https:// upstream URL, and {at.rsplit('.', 1)[0]}.url is {url}")
    if "key" in raw and "cert" not in raw:
        raise ConfigError(f"{at}.key", f"set {at}.cert (the client certificate) as well")
    if "key_password" in raw and "cert" not in raw:
        raise ConfigError(f"{at}.key_password", f"there is no {at}.cert (client certificate) to unlock")
    cfg = UpstreamTls(
        ca=_file(raw, "ca", base, at),
        cert=_file(raw, "cert", base, at),
        key=_file(raw, "key", base, at),
        key_password=_secret(raw, at, base),
        server_name=raw.get("server_name"),
    )
    try:
        client_context(cfg)
    except TlsError as exc:
        raise ConfigError(f"{at}.{exc.field}", str(exc)) from exc
    return cfg
