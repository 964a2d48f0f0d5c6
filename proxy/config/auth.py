"""Config builders for the data plane's edge: client authentication (``auth``, ``routes[].auth``) and
``rate_limits``. Called by ``config.build_config`` after schema validation; errors name the key path.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from proxy.config.document import config_path
from proxy.config.model import (
    ApiKeyClient,
    AuthConfig,
    JwtConfig,
    JwtKey,
    PeerClient,
    RateLimit,
    RouteAuth,
    RouteConfig,
    defaults_of,
)
from proxy.config.units import parse_duration
from proxy.errors import ConfigError

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def route_auth(raw: dict[str, Any] | None) -> RouteAuth | None:
    if raw is None:
        return None
    return RouteAuth(
        required=bool(raw.get("required", True)),
        roles=frozenset(raw.get("roles", ())),
        clients=frozenset(raw.get("clients", ())),
    )


def build_auth(
    raw: dict[str, Any], base: Path, routes: tuple[RouteConfig, ...], secret: Callable[[str, str], str]
) -> AuthConfig:
    """``secret(value, path)`` resolves ``env:``/``file:`` references (``config.resolve_secret``)."""
    keys: list[ApiKeyClient] = []
    for i, k in enumerate(raw.get("api_keys", [])):
        digest = bytes.fromhex(k["key_sha256"])
        if any(digest == other.key_sha256 for other in keys):
            raise ConfigError(f"auth.api_keys[{i}].key_sha256", "the same key is configured twice")
        keys.append(ApiKeyClient(name=k["name"], roles=frozenset(k.get("roles", ())), key_sha256=digest))
    peers = tuple(
        PeerClient(name=p["name"], roles=frozenset(p.get("roles", ())), peer=p["peer"])
        for p in raw.get("peers", [])
    )
    jwt = _jwt(raw["jwt"], base, secret) if "jwt" in raw else None
    auth = AuthConfig(
        required=bool(raw.get("required", False)),
        api_key_header=raw.get("api_key_header", "x-api-key").lower(),
        api_keys=tuple(keys),
        peers=peers,
        jwt=jwt,
        strip_credentials=bool(raw.get("strip_credentials", defaults_of(AuthConfig)["strip_credentials"])),
    )
    if auth.api_key_header in ("authorization", "cookie", "host") or auth.api_key_header.startswith(
        "x-rollguard-"
    ):
        raise ConfigError("auth.api_key_header", f"{auth.api_key_header!r} is reserved")
    if not auth.enabled:
        # Requiring clients with no way to recognise one would refuse every request: a mistake.
        if auth.required:
            raise ConfigError("auth.required", "needs a credential source: auth.api_keys, jwt or peers")
        for i, r in enumerate(routes):
            if r.auth is not None and r.auth.required:
                raise ConfigError(
                    f"routes[{i}].auth", "needs a credential source: auth.api_keys, auth.jwt or auth.peers"
                )
    _check_allow_lists(auth, routes)
    return auth


def _check_allow_lists(auth: AuthConfig, routes: tuple[RouteConfig, ...]) -> None:
    """Names and roles on allow lists must be known, unless JWTs (which bring their own) are accepted."""
    if auth.jwt is not None:
        return
    names = {c.name for c in auth.api_keys} | {c.name for c in auth.peers}
    roles = {r for c in auth.api_keys for r in c.roles} | {r for c in auth.peers for r in c.roles}
    for i, r in enumerate(routes):
        if r.auth is None:
            continue
        for j, name in enumerate(sorted(r.auth.clients)):
            if name not in names:
                raise ConfigError(f"routes[{i}].auth.clients[{j}]", f"no client is named {name!r}")
        for j, role in enumerate(sorted(r.auth.roles)):
            if role not in roles:
                raise ConfigError(f"routes[{i}].auth.roles[{j}]", f"no client has the role {role!r}")


def _jwt(raw: dict[str, Any], base: Path, secret: Callable[[str, str], str]) -> JwtConfig:
    from proxy.config.keys import hmac_key, jwks_keys, pem_key

    keys: list[JwtKey] = []
    for i, k in enumerate(raw.get("keys", [])):
        at = f"auth.jwt.keys[{i}]"
        alg, kid = k["alg"], k.get("kid")
        try:
            if alg == "HS256":
                if "secret" not in k or "public_key" in k:
                    raise ConfigError(at, "HS256 takes a secret (env:NAME or file:PATH), not a public_key")
                keys.append(hmac_key(secret(k["secret"], f"{at}.secret").encode(), kid, k["secret"]))
            else:
                if "public_key" not in k or "secret" in k:
                    raise ConfigError(at, f"{alg} takes a public_key (a PEM file), not a secret")
                keys.append(pem_key(config_path(base, k["public_key"], f"{at}.public_key"), alg, kid))
        except ValueError as exc:
            field = "secret" if alg == "HS256" else "public_key"
            raise ConfigError(f"{at}.{field}", str(exc)) from exc
    if "jwks" in raw:
        try:
            keys.extend(jwks_keys(config_path(base, raw["jwks"], "auth.jwt.jwks")))
        except ValueError as exc:
            raise ConfigError("auth.jwt.jwks", str(exc)) from exc
    if not keys:
        raise ConfigError("auth.jwt", "needs keys or a jwks file")
    seen: set[str] = set()
    for key in keys:
        if key.kid is not None:
            if key.kid in seen:
                raise ConfigError("auth.jwt", f"two keys have the kid {key.kid!r} ({key.source})")
            seen.add(key.kid)
    aud = raw.get("audience", ())
    return JwtConfig(
        keys=tuple(keys),
        issuer=raw.get("issuer"),
        audience=(aud,) if isinstance(aud, str) else tuple(aud),
        leeway=parse_duration(raw.get("leeway", 30.0)),
        name_claim=raw.get("name_claim", "sub"),
        roles_claim=raw.get("roles_claim", "roles"),
    )


def parse_rate(text: str, path: str) -> float:
    """``100/s``, ``600/m``, ``1000/h`` -> requests per second."""
    count, _, unit = text.partition("/")
    rate = float(count) / _UNITS[unit]
    if rate <= 0 or not math.isfinite(rate):
        raise ConfigError(path, f"{text!r} must be more than zero requests")
    return rate


def build_rate_limits(raw: list[dict[str, Any]], routes: tuple[RouteConfig, ...]) -> tuple[RateLimit, ...]:
    names = {r.name for r in routes} | {"unmatched", "*"}
    out: list[RateLimit] = []
    for i, r in enumerate(raw):
        at = f"rate_limits[{i}]"
        if r["route"] not in names:
            raise ConfigError(
                f"{at}.route", f"no route is named {r['route']!r} (nor is it 'unmatched' or '*')"
            )
        rate = parse_rate(r["rate"], f"{at}.rate")
        count = float(r["rate"].partition("/")[0])
        per = cast(Any, r.get("per", "client"))
        if any(o.route == r["route"] and o.per == per for o in out):
            raise ConfigError(f"{at}.route", f"an earlier rate limit already covers {r['route']!r} per {per}")
        out.append(
            RateLimit(
                route=r["route"],
                per=per,
                rate=rate,
                burst=int(r.get("burst", max(1, math.ceil(count)))),
                max_keys=int(r.get("max_keys", 100_000)),
                text=r["rate"],
            )
        )
    return tuple(out)
