"""JWT verification keys, each bound to the one algorithm it may verify.

Every key becomes a :class:`jwt.PyJWK` built with an explicit algorithm, and verification passes only
that algorithm to PyJWT. That binding is what defeats algorithm confusion: a token whose header says
HS256 can only ever meet an HS256 secret, never an RSA public key's PEM bytes used as an HMAC secret,
and ``alg: none`` matches no key at all.

Sources: PEM public keys (RS256, ES256), an HMAC secret given as ``env:NAME`` / ``file:PATH`` (HS256,
at least 32 bytes as RFC 7518 §3.2 asks), or a JWKS file whose keys carry (or imply) their ``alg``.
Loading raises ``ValueError`` with a message fit for a ``ConfigError``; the caller adds the key path.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, Literal, cast

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt import PyJWK, PyJWKSet
from jwt.algorithms import ECAlgorithm, HMACAlgorithm, RSAAlgorithm
from jwt.exceptions import PyJWKError, PyJWKSetError

from proxy.config.model import JwtKey

Alg = Literal["HS256", "RS256", "ES256"]
ALGORITHMS: frozenset[str] = frozenset({"HS256", "RS256", "ES256"})
MIN_HMAC_BYTES = 32


def hmac_key(secret: bytes, kid: str | None, source: str) -> JwtKey:
    if len(secret) < MIN_HMAC_BYTES:
        raise ValueError(f"an HS256 secret must be at least {MIN_HMAC_BYTES} bytes, got {len(secret)}")
    jwk = HMACAlgorithm.to_jwk(secret, as_dict=True)
    return JwtKey(kid=kid, alg="HS256", key=PyJWK(jwk, algorithm="HS256"), source=source)


def pem_key(file: Path, alg: Alg, kid: str | None) -> JwtKey:
    """A PEM public key for RS256 (RSA, >= 2048 bits) or ES256 (EC P-256)."""
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {file}: {exc.strerror}") from exc
    try:
        key = load_pem_public_key(data)
    except ValueError as exc:
        raise ValueError(f"{file} is not a PEM public key") from exc
    jwk: dict[str, Any]
    if alg == "RS256":
        if not isinstance(key, rsa.RSAPublicKey):
            raise ValueError(f"{file} is not an RSA public key, which RS256 needs")
        if key.key_size < 2048:
            raise ValueError(f"{file} is a {key.key_size}-bit RSA key; RS256 needs at least 2048 bits")
        jwk = RSAAlgorithm.to_jwk(key, as_dict=True)
    elif alg == "ES256":
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise ValueError(f"{file} is not an EC P-256 public key, which ES256 needs")
        jwk = ECAlgorithm.to_jwk(key, as_dict=True)
    else:
        raise ValueError(f"{alg} takes a secret (env:NAME or file:PATH), not a public key file")
    return JwtKey(kid=kid, alg=alg, key=PyJWK(jwk, algorithm=alg), source=str(file))


def jwks_keys(file: Path) -> list[JwtKey]:
    """The signing keys of a JWKS file, each bound to its ``alg`` (or the one its type implies)."""
    try:
        doc = json.loads(file.read_bytes())
    except OSError as exc:
        raise ValueError(f"cannot read {file}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ValueError(f"{file} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValueError(f"{file} is not a JWKS document (an object with a keys list)")
    try:
        keyset = PyJWKSet.from_dict(doc)
    except (PyJWKError, PyJWKSetError) as exc:
        raise ValueError(f"{file} holds no usable key: {exc}") from exc
    out: list[JwtKey] = []
    for i, jwk in enumerate(keyset.keys):
        if jwk.public_key_use not in (None, "sig"):
            continue  # an encryption key never verifies a signature
        alg = jwk.algorithm_name
        if alg not in ALGORITHMS:
            raise ValueError(f"{file}: key {i} uses {alg}; accepted are {', '.join(sorted(ALGORITHMS))}")
        if alg == "HS256" and len(cast(bytes, jwk.key)) < MIN_HMAC_BYTES:
            raise ValueError(f"{file}: key {i} is an HS256 secret shorter than {MIN_HMAC_BYTES} bytes")
        out.append(JwtKey(kid=jwk.key_id, alg=cast(Alg, alg), key=jwk, source=f"{file} key {i}"))
    if not out:
        raise ValueError(f"{file} holds no signing key")
    return out


def load_public_key(text: str) -> Ed25519PublicKey:
    """A public key as PEM, or as the raw 32 bytes in base64."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_public_key(text.encode())
    else:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key
