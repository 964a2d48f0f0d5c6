"""Who is calling the data plane: API keys, JWT bearer tokens, and mTLS peer identities.

``ClientAuthenticator.identify(scope)`` returns the :class:`Client` the request's credentials prove,
``None`` for a request that presents none, and raises :class:`Unauthorized` for credentials that do not
verify. Precedence: the API-key header (``auth.api_key_header``), else ``Authorization: Bearer``, else
the verified client certificate's identities (``scope["extensions"]["tls"]["client_cert_identities"]``).
Other ``Authorization`` schemes (Basic, ...) are left alone: they may be meant for the model server.

API keys are stored as SHA-256 digests only. That is enough for keys with >= 128 bits of entropy (what
``rollguard hash-key`` makes): nobody can search a space that large for a preimage, so the digest is as
good as the key is random, and a slow password hash (bcrypt, argon2) would only add milliseconds to every
request. The lookup is a dict probe on the digest, so its timing depends on the digest, which tells an
attacker nothing about a key they do not already hold.

Errors name what was wrong ("the token has expired"), never the credential. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import jwt

from proxy.config.model import AuthConfig, JwtConfig, JwtKey
from proxy.errors import Unauthorized

Via = Literal["api_key", "jwt", "peer"]
# Failure reasons, the bounded ``reason`` label of rollguard_auth_failures_total.
REASONS = (
    "missing",
    "malformed",
    "unknown_key",
    "unknown_kid",
    "bad_alg",
    "bad_signature",
    "expired",
    "claims",
    "forbidden",
)
_MAX_CREDENTIAL = 8192
_MAX_NAME = 256


@dataclass(frozen=True, slots=True)
class Client:
    name: str  # what logs, allow lists and rate limits see; never the credential
    roles: frozenset[str]
    via: Via


class ClientAuthenticator:
    """``wall_clock`` (epoch seconds) judges JWT time claims; injected by tests."""

    def __init__(self, cfg: AuthConfig, *, wall_clock: Callable[[], float] = time.time) -> None:
        self._keys = {c.key_sha256: Client(name=c.name, roles=c.roles, via="api_key") for c in cfg.api_keys}
        self._header = cfg.api_key_header.encode()
        self._peers = [(p.peer, Client(name=p.name, roles=p.roles, via="peer")) for p in cfg.peers]
        self._jwt = JwtVerifier(cfg.jwt, clock=wall_clock) if cfg.jwt is not None else None

    def identify(self, scope: dict[str, Any]) -> Client | None:
        key = bearer = None
        for k, v in scope["headers"]:
            if k == self._header:
                if key is not None:
                    raise Unauthorized(f"more than one {self._header.decode()} header", reason="malformed")
                key = v
            elif k == b"authorization":
                # Two credentials are refused, never one of them picked: a proxy in front and this one
                # might each read a different one.
                if bearer is not None:
                    raise Unauthorized("more than one Authorization header", reason="malformed")
                bearer = v
        if key is not None:
            return self._api_key(key.strip())
        if bearer is not None:
            scheme, _, cred = bearer.partition(b" ")
            if scheme.lower() == b"bearer":
                cred = cred.strip()
                if not cred:
                    raise Unauthorized("the Bearer credential is empty", reason="malformed")
                if self._jwt is not None and cred.count(b".") == 2 and len(cred) <= _MAX_CREDENTIAL:
                    # Shaped like a JWT: an API key of that shape still wins, then the token is verified.
                    known = self._keys.get(hashlib.sha256(cred).digest())
                    return known if known is not None else self._jwt.verify(cred)
                return self._api_key(cred)
        return self._peer(scope) if self._peers else None

    def _api_key(self, presented: bytes) -> Client:
        if not presented or len(presented) > _MAX_CREDENTIAL:
            raise Unauthorized("the API key is empty or too long", reason="malformed")
        client = self._keys.get(hashlib.sha256(presented).digest())
        if client is None:
            raise Unauthorized("the API key is not known", reason="unknown_key")
        return client

    def _peer(self, scope: dict[str, Any]) -> Client | None:
        tls = (scope.get("extensions") or {}).get("tls") or {}
        identities = tls.get("client_cert_identities")
        if not identities:
            return None
        # First configured peer that the certificate names: config order decides, not the cert's.
        for peer, client in self._peers:
            if peer in identities:
                return client
        return None  # a valid certificate of a client we do not know: anonymous, like no credentials


class JwtVerifier:
    """Verifies compact JWS tokens against keys bound to one algorithm each (see ``jwt_keys``).

    PyJWT checks the signature, ``iss`` and ``aud``; the time claims (``exp`` required, ``nbf``,
    ``iat``) are checked here against the injected ``clock`` (epoch seconds), with ``leeway``. A token
    that verified is remembered until its ``exp`` (a bounded cache of ``cache_size`` tokens): clients
    send the same token for minutes, and verifying it costs tens of microseconds (RS256, ES256 more)
    where a dict probe costs one. Only verified tokens are cached, and a hit re-checks ``exp``;
    ``cache_size=0`` turns the cache off.
    """

    def __init__(
        self, cfg: JwtConfig, *, clock: Callable[[], float] = time.time, cache_size: int = 4096
    ) -> None:
        self.cfg = cfg
        self.clock = clock
        self.cache_size = cache_size
        self._verified: dict[bytes, tuple[Client, float]] = {}
        self._by_kid = {k.kid: k for k in cfg.keys if k.kid is not None}
        self._by_alg: dict[str, list[JwtKey]] = {}
        for k in sorted(cfg.keys, key=lambda k: k.kid is not None):  # keys without a kid are tried first
            self._by_alg.setdefault(k.alg, []).append(k)
        required = ["exp"]
        if cfg.issuer is not None:
            required.append("iss")
        if cfg.audience:
            required.append("aud")
        self._options: Any = {
            "require": required,
            "verify_aud": bool(cfg.audience),
            "verify_exp": False,  # checked in _check_times against the injected clock
            "verify_nbf": False,
            "verify_iat": False,
            "enforce_minimum_key_length": True,
        }

    def verify(self, token: bytes) -> Client:
        if len(token) > _MAX_CREDENTIAL:
            raise Unauthorized("the token is too long", reason="malformed")
        now = self.clock()
        hit = self._verified.get(token)
        if hit is not None:
            if now <= hit[1]:
                return hit[0]
            del self._verified[token]
        client, until = self._verify(token, now)
        if self.cache_size > 0:
            if len(self._verified) >= self.cache_size:
                del self._verified[next(iter(self._verified))]  # the oldest entry: bounded memory
            self._verified[token] = (client, until)
        return client

    def _verify(self, token: bytes, now: float) -> tuple[Client, float]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("the token is malformed", reason="malformed") from None
        alg, kid = header.get("alg"), header.get("kid")
        if kid is not None:
            key = self._by_kid.get(kid) if isinstance(kid, str) else None
            if key is None:
                raise Unauthorized("the token's key id (kid) is not known", reason="unknown_kid")
            if key.alg != alg:
                raise Unauthorized("the token's algorithm does not match its key", reason="bad_alg")
            candidates = [key]
        else:
            candidates = self._by_alg.get(alg, []) if isinstance(alg, str) else []
            if not candidates:
                accepted = ", ".join(sorted(self._by_alg))
                raise Unauthorized(
                    f"the token's algorithm is not accepted (only {accepted})", reason="bad_alg"
                )
        claims: dict[str, Any] | None = None
        for key in candidates:
            try:
                claims = jwt.decode(
                    token,
                    key.key,
                    algorithms=[key.alg],
                    audience=list(self.cfg.audience) or None,
                    issuer=self.cfg.issuer,
                    leeway=self.cfg.leeway,
                    options=self._options,
                )
                break
            except jwt.InvalidSignatureError:
                continue  # the next key of this algorithm may be the one that signed it
            except jwt.PyJWTError as exc:
                raise _explain(exc) from None
        if claims is None:
            raise Unauthorized("the token's signature does not verify", reason="bad_signature")
        until = self._check_times(claims, now)
        return Client(name=self._name(claims), roles=self._roles(claims), via="jwt"), until

    def _check_times(self, claims: dict[str, Any], now: float) -> float:
        """RFC 7519 §4.1.4-6 with leeway; returns the last instant the token is acceptable."""
        leeway = self.cfg.leeway
        times = {}
        for name in ("exp", "nbf", "iat"):
            value = claims.get(name)
            if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
                raise Unauthorized(f"the token's {name} claim is not a number", reason="claims")
            times[name] = value
        exp = times["exp"]
        assert exp is not None  # PyJWT enforced "require"
        if now > exp + leeway:
            raise Unauthorized("the token has expired", reason="expired")
        for name in ("nbf", "iat"):
            value = times[name]
            if value is not None and now < value - leeway:
                raise Unauthorized(f"the token is not valid yet ({name} in the future)", reason="claims")
        return float(exp) + leeway

    def _name(self, claims: dict[str, Any]) -> str:
        name = claims.get(self.cfg.name_claim)
        if not isinstance(name, str) or not name or len(name) > _MAX_NAME:
            raise Unauthorized(f"the token has no usable {self.cfg.name_claim} claim", reason="claims")
        return name

    def _roles(self, claims: dict[str, Any]) -> frozenset[str]:
        raw = claims.get(self.cfg.roles_claim)
        if isinstance(raw, str):
            return frozenset(raw.split())
        if isinstance(raw, list):
            return frozenset(r for r in raw if isinstance(r, str))
        return frozenset()


def _explain(exc: jwt.PyJWTError) -> Unauthorized:
    """A verified token's claim failures, and malformed ones, as a short reason. Order: subclasses first."""
    if isinstance(exc, jwt.ExpiredSignatureError):
        return Unauthorized("the token has expired", reason="expired")
    if isinstance(exc, jwt.ImmatureSignatureError):
        return Unauthorized("the token is not valid yet (nbf or iat in the future)", reason="claims")
    if isinstance(exc, jwt.InvalidAudienceError):
        return Unauthorized("the token's audience is not accepted", reason="claims")
    if isinstance(exc, jwt.InvalidIssuerError):
        return Unauthorized("the token's issuer is not accepted", reason="claims")
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return Unauthorized(f"the token lacks the {exc.claim} claim", reason="claims")
    if isinstance(exc, jwt.InvalidAlgorithmError | jwt.InvalidKeyError):
        return Unauthorized("the token's algorithm does not match its key", reason="bad_alg")
    if isinstance(exc, jwt.DecodeError):
        return Unauthorized("the token is malformed", reason="malformed")
    return Unauthorized("the token's claims are not valid", reason="claims")
