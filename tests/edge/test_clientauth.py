"""Client identity and per-route policy, pure: JWT matrix, API keys, mTLS peers, allow lists, config errors.

Keys are generated here with ``cryptography``; configs go through the real loader (``build_config``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from proxy.config.load import build_config
from proxy.config.model import Config
from proxy.edge.policy import EdgePolicy
from proxy.errors import Forbidden, RateLimited, Unauthorized
from proxy.observe.exchange import Exchange
from tests.helpers.clientauth import HS_SECRET, KEY_A, KEY_B, auth_doc, mixed_config, sha

ISS, AUD = "https://idp.example.test", "rollguard"


def pem(public: Any) -> bytes:
    return bytes(
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


@pytest.fixture(scope="module")
def keys() -> dict[str, Any]:
    return {
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "rsa_other": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ec": ec.generate_private_key(ec.SECP256R1()),
        "ec_jwks": ec.generate_private_key(ec.SECP256R1()),
    }


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RG_TEST_JWT_SECRET", HS_SECRET)


def jwt_config(tmp_path: Path, keys: dict[str, Any]) -> Config:
    (tmp_path / "rs.pem").write_bytes(pem(keys["rsa"].public_key()))
    (tmp_path / "ec.pem").write_bytes(pem(keys["ec"].public_key()))
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(keys["ec_jwks"].public_key()))
    jwk.update(kid="jwks-1", alg="ES256", use="sig")
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    doc = auth_doc(
        tmp_path,
        auth={
            "required": True,
            "jwt": {
                "keys": [
                    {"kid": "hs-1", "alg": "HS256", "secret": "env:RG_TEST_JWT_SECRET"},
                    {"kid": "rs-1", "alg": "RS256", "public_key": "rs.pem"},
                    {"alg": "ES256", "public_key": "ec.pem"},
                ],
                "jwks": "jwks.json",
                "issuer": ISS,
                "audience": AUD,
                "leeway": "5s",
            },
        },
    )
    return build_config(doc, tmp_path)


def claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    out: dict[str, Any] = {
        "sub": "svc-checkout",
        "roles": ["scorer"],
        "iss": ISS,
        "aud": AUD,
        "exp": now + 300,
    }
    out.update(over)
    return {k: v for k, v in out.items() if v is not None}


def scope(headers: dict[str, str] | None = None, tls: dict[str, Any] | None = None) -> dict[str, Any]:
    s: dict[str, Any] = {
        "type": "http",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": ("10.0.0.7", 51234),
    }
    if tls is not None:
        s["extensions"] = {"tls": tls}
    return s


def bearer(token: str) -> dict[str, Any]:
    return scope({"authorization": f"Bearer {token}"})


def admit(policy: EdgePolicy, s: dict[str, Any], route: str = "infer") -> dict[str, Any]:
    """The access-log fields admission adds: the client's name, when one was identified."""
    ex = Exchange(request_id="t", method="POST", path="/infer", route_name=route, route=None, scope=s)
    policy.admit(ex)
    return {} if ex.client_name is None else {"client_name": ex.client_name}


def unsigned(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return ".".join((b64(json.dumps(header).encode()), b64(json.dumps(payload).encode()), b64(signature)))


# -- JWT ----------------------------------------------------------------------------------------------


def test_valid_tokens_of_each_algorithm_are_accepted(tmp_path: Path, keys: dict[str, Any], env: None) -> None:
    failures: list[tuple[str, str]] = []
    policy = EdgePolicy(jwt_config(tmp_path, keys), on_auth_failure=lambda r, why: failures.append((r, why)))
    tokens = {
        "HS256": jwt.encode(claims(), HS_SECRET, algorithm="HS256", headers={"kid": "hs-1"}),
        "RS256": jwt.encode(claims(sub="rs-client"), keys["rsa"], algorithm="RS256", headers={"kid": "rs-1"}),
        "ES256 (no kid)": jwt.encode(claims(sub="es-client"), keys["ec"], algorithm="ES256"),
        "ES256 (JWKS)": jwt.encode(claims(sub="jwks-client"), keys["ec_jwks"], "ES256", {"kid": "jwks-1"}),
    }
    names = {label: admit(policy, bearer(tok))["client_name"] for label, tok in tokens.items()}
    assert names == {
        "HS256": "svc-checkout",
        "RS256": "rs-client",
        "ES256 (no kid)": "es-client",
        "ES256 (JWKS)": "jwks-client",
    }
    assert failures == []


def test_roles_claim_as_list_or_space_separated_string(
    tmp_path: Path, keys: dict[str, Any], env: None
) -> None:
    policy = EdgePolicy(jwt_config(tmp_path, keys))
    auth = policy.authenticator
    assert auth is not None
    listed = jwt.encode(claims(roles=["a", "b"]), HS_SECRET, algorithm="HS256", headers={"kid": "hs-1"})
    spaced = jwt.encode(claims(roles="a b c"), HS_SECRET, algorithm="HS256", headers={"kid": "hs-1"})
    none = jwt.encode(claims(roles=None), HS_SECRET, algorithm="HS256", headers={"kid": "hs-1"})
    assert (c := auth.identify(bearer(listed))) is not None and c.roles == {"a", "b"}
    assert (c := auth.identify(bearer(spaced))) is not None and c.roles == {"a", "b", "c"}
    assert (c := auth.identify(bearer(none))) is not None and c.roles == frozenset()


def _bad_tokens(keys: dict[str, Any]) -> dict[str, tuple[str, str]]:
    now = int(time.time())
    rsa_pem = pem(keys["rsa"].public_key())
    hs = {"kid": "hs-1"}
    return {
        "bad signature": (jwt.encode(claims(), "x" * 40, "HS256", hs), "bad_signature"),
        "RS256 signed by another key": (
            jwt.encode(claims(), keys["rsa_other"], "RS256", {"kid": "rs-1"}),
            "bad_signature",
        ),
        "expired": (jwt.encode(claims(exp=now - 60), HS_SECRET, "HS256", hs), "expired"),
        "expired, wrong key too": (jwt.encode(claims(exp=now - 60), "y" * 40, "HS256", hs), "bad_signature"),
        "no exp": (jwt.encode(claims(exp=None), HS_SECRET, "HS256", hs), "claims"),
        "not yet valid": (jwt.encode(claims(nbf=now + 120), HS_SECRET, "HS256", hs), "claims"),
        "wrong audience": (jwt.encode(claims(aud="someone-else"), HS_SECRET, "HS256", hs), "claims"),
        "no audience": (jwt.encode(claims(aud=None), HS_SECRET, "HS256", hs), "claims"),
        "wrong issuer": (jwt.encode(claims(iss="https://evil.test"), HS_SECRET, "HS256", hs), "claims"),
        "no sub": (jwt.encode(claims(sub=None), HS_SECRET, "HS256", hs), "claims"),
        "alg none": (unsigned({"alg": "none", "typ": "JWT"}, claims()), "bad_alg"),
        "alg none with a kid": (unsigned({"alg": "none", "kid": "hs-1"}, claims()), "bad_alg"),
        # The classic confusion: an HS256 token whose HMAC secret is the RSA public key's PEM.
        "HS/RS confusion by kid": (
            unsigned(
                {"alg": "HS256", "kid": "rs-1"}, claims(), _hmac(rsa_pem, {"alg": "HS256", "kid": "rs-1"})
            ),
            "bad_alg",
        ),
        "HS/RS confusion without kid": (
            unsigned({"alg": "HS256"}, claims(), _hmac(rsa_pem, {"alg": "HS256"})),
            "bad_signature",
        ),
        "RS256 header on the HS key": (jwt.encode(claims(), keys["rsa"], "RS256", hs), "bad_alg"),
        "unknown kid": (jwt.encode(claims(), HS_SECRET, "HS256", {"kid": "nope"}), "unknown_kid"),
        "unsupported alg": (jwt.encode(claims(), "z" * 64, "HS512"), "bad_alg"),
        "malformed": ("aaa.bbb.ccc", "malformed"),
        "not base64 json": ("eyJhbGciOi.%%%.xyz", "malformed"),
    }


def _hmac(secret: bytes, header: dict[str, Any]) -> bytes:
    """The signature an attacker computes with the public PEM as the HMAC secret."""
    import hmac

    signing_input = unsigned(header, claims()).rsplit(".", 1)[0].encode()
    return hmac.new(secret, signing_input, hashlib.sha256).digest()


def test_bad_tokens_are_401_with_a_reason_and_never_echo_the_token(
    tmp_path: Path, keys: dict[str, Any], env: None
) -> None:
    failures: list[str] = []
    policy = EdgePolicy(jwt_config(tmp_path, keys), on_auth_failure=lambda r, why: failures.append(why))
    got = {}
    for label, (token, _reason) in _bad_tokens(keys).items():
        with pytest.raises(Unauthorized) as info:
            admit(policy, bearer(token))
        exc = info.value
        got[label] = exc.reason
        assert exc.status == 401
        challenge = dict(exc.headers)[b"www-authenticate"].decode()
        assert challenge.startswith('Bearer realm="rollguard", error="invalid_token", error_description="')
        for part in token.split("."):
            if len(part) > 3:
                assert part not in exc.detail and part not in challenge
    assert got == {label: reason for label, (_, reason) in _bad_tokens(keys).items()}
    assert failures == list(got.values())


def test_leeway_admits_small_clock_skew(tmp_path: Path, keys: dict[str, Any], env: None) -> None:
    policy = EdgePolicy(jwt_config(tmp_path, keys))  # leeway 5s
    now = int(time.time())
    skewed = jwt.encode(claims(nbf=now + 2, exp=now - 2), HS_SECRET, "HS256", {"kid": "hs-1"})
    assert admit(policy, bearer(skewed))["client_name"] == "svc-checkout"


def test_time_claims_follow_the_injected_clock_even_for_remembered_tokens(
    tmp_path: Path, keys: dict[str, Any], env: None
) -> None:
    config = jwt_config(tmp_path, keys)  # leeway 5s
    wall = FakeClock()
    wall.now = 2_000_000_000.0
    policy = EdgePolicy(config, wall_clock=wall)
    t0 = int(wall.now)
    token = jwt.encode(claims(nbf=t0 + 60, exp=t0 + 120), HS_SECRET, "HS256", {"kid": "hs-1"})
    with pytest.raises(Unauthorized) as info:
        admit(policy, bearer(token))
    assert info.value.reason == "claims" and "not valid yet" in info.value.detail
    wall.now = t0 + 56.0  # within the leeway of nbf
    assert admit(policy, bearer(token))["client_name"] == "svc-checkout"
    wall.now = t0 + 125.0  # past exp, within the leeway: the remembered verdict still holds
    assert admit(policy, bearer(token))["client_name"] == "svc-checkout"
    wall.now = t0 + 125.5
    with pytest.raises(Unauthorized) as info:  # past exp + leeway: refused although it verified before
        admit(policy, bearer(token))
    assert info.value.reason == "expired"
    future_iat = jwt.encode(claims(iat=t0 + 600, exp=t0 + 900), HS_SECRET, "HS256", {"kid": "hs-1"})
    wall.now = t0
    with pytest.raises(Unauthorized) as info:
        admit(policy, bearer(future_iat))
    assert info.value.reason == "claims"
    text_exp = jwt.encode(claims(exp="soon"), HS_SECRET, "HS256", {"kid": "hs-1"})
    with pytest.raises(Unauthorized) as info:
        admit(policy, bearer(text_exp))
    assert info.value.reason == "claims"


# -- API keys, peers, allow lists ---------------------------------------------------------------------


def test_api_key_by_bearer_or_header(tmp_path: Path) -> None:
    policy = EdgePolicy(mixed_config(tmp_path))
    assert admit(policy, bearer(KEY_A))["client_name"] == "checkout"
    assert admit(policy, scope({"x-api-key": KEY_A}))["client_name"] == "checkout"
    with pytest.raises(Unauthorized) as info:
        admit(policy, bearer(KEY_A + "x"))
    assert info.value.reason == "unknown_key" and KEY_A not in info.value.detail
    with pytest.raises(Unauthorized) as info:
        admit(policy, scope({"x-api-key": "wrong"}))
    assert info.value.reason == "unknown_key"


def test_configurable_api_key_header(tmp_path: Path) -> None:
    policy = EdgePolicy(mixed_config(tmp_path, api_key_header="X-Client-Key"))
    assert admit(policy, scope({"x-client-key": KEY_A}))["client_name"] == "checkout"
    with pytest.raises(Unauthorized) as info:  # x-api-key is now an ordinary header: no credential
        admit(policy, scope({"x-api-key": KEY_A}))
    assert info.value.reason == "missing"
    assert dict(info.value.headers)[b"www-authenticate"] == b'Bearer realm="rollguard"'


def test_allow_lists_per_route(tmp_path: Path) -> None:
    failures: list[tuple[str, str]] = []
    policy = EdgePolicy(mixed_config(tmp_path), on_auth_failure=lambda r, why: failures.append((r, why)))
    batch_peer = scope(
        tls={"client_cert_name": "CN=batch.internal", "client_cert_identities": ["batch.internal"]}
    )
    assert admit(policy, bearer(KEY_A), "infer")["client_name"] == "checkout"  # role scorer
    assert admit(policy, batch_peer, "infer")["client_name"] == "batch"  # role scorer, by peer
    assert admit(policy, batch_peer, "batch")["client_name"] == "batch"  # by name
    with pytest.raises(Forbidden) as info:
        admit(policy, bearer(KEY_B), "infer")  # reporting has role reader only
    assert info.value.status == 403 and "reporting" in info.value.detail
    with pytest.raises(Forbidden):
        admit(policy, bearer(KEY_A), "batch")
    with pytest.raises(Unauthorized):
        admit(policy, scope(), "infer")
    # Open routes: anonymous passes; credentials still name the client; bad ones are still refused.
    assert admit(policy, scope(), "public") == {}
    assert admit(policy, scope(), "plain") == {}
    assert admit(policy, scope(), "unmatched") == {}
    assert admit(policy, bearer(KEY_B), "public")["client_name"] == "reporting"
    with pytest.raises(Unauthorized):
        admit(policy, bearer("not-a-key-at-all-0123456789"), "public")
    assert failures == [
        ("infer", "forbidden"),
        ("batch", "forbidden"),
        ("infer", "missing"),
        ("public", "unknown_key"),
    ]


def test_global_required_covers_plain_routes_and_unmatched_paths(tmp_path: Path) -> None:
    policy = EdgePolicy(mixed_config(tmp_path, required=True))
    for route in ("plain", "unmatched"):
        with pytest.raises(Unauthorized):
            admit(policy, scope(), route)
        assert admit(policy, bearer(KEY_B), route)["client_name"] == "reporting"  # any client
    assert admit(policy, scope(), "public") == {}  # the route's own auth block wins


def test_peer_identity_from_the_tls_extension(tmp_path: Path) -> None:
    policy = EdgePolicy(mixed_config(tmp_path))
    auth = policy.authenticator
    assert auth is not None
    san = scope(tls={"client_cert_identities": ["other.example", "batch.internal", "spiffe://x/y"]})
    unknown = scope(tls={"client_cert_identities": ["stranger.example"]})
    no_cert = scope(tls={"client_cert_name": None, "client_cert_identities": []})
    assert (c := auth.identify(san)) is not None and (c.name, c.via) == ("batch", "peer")
    assert auth.identify(unknown) is None
    assert auth.identify(no_cert) is None
    assert auth.identify(scope()) is None
    # An explicit credential wins over the certificate.
    both = scope({"x-api-key": KEY_B}, tls={"client_cert_identities": ["batch.internal"]})
    assert (c := auth.identify(both)) is not None and c.name == "reporting"


def test_other_authorization_schemes_are_not_ours(tmp_path: Path) -> None:
    policy = EdgePolicy(mixed_config(tmp_path))
    assert admit(policy, scope({"authorization": "Basic dXNlcjpwYXNz"}), "public") == {}
    with pytest.raises(Unauthorized) as info:
        admit(policy, scope({"authorization": "Bearer "}), "public")
    assert info.value.reason == "malformed"


def test_nothing_configured_means_no_policy(tmp_path: Path) -> None:
    assert EdgePolicy.from_config(build_config(auth_doc(tmp_path), tmp_path)) is None


def test_repr_never_shows_key_material(tmp_path: Path, keys: dict[str, Any], env: None) -> None:
    text = repr(mixed_config(tmp_path).auth) + repr(jwt_config(tmp_path, keys).auth)
    assert sha(KEY_A) not in text and "key_sha256" not in text and HS_SECRET not in text


# -- rate limits through the policy, on an injected clock ---------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_limits_by_client_address_and_route(tmp_path: Path) -> None:
    routes = [{"name": "infer", "path": "/v1/infer"}, {"name": "other", "path": "/v1/other"}]
    doc = auth_doc(
        tmp_path,
        routes=routes,
        auth={"api_keys": [{"name": "checkout", "key_sha256": sha(KEY_A)}]},
        rate_limits=[
            {"route": "infer", "per": "client", "rate": "2/s", "burst": 2},
            {"route": "*", "per": "route", "rate": "60/m", "burst": 6},
        ],
    )
    clock = FakeClock()
    limited: list[str] = []
    policy = EdgePolicy(build_config(doc, tmp_path), clock=clock, on_rate_limited=limited.append)

    def codes(s: dict[str, Any], route: str, n: int) -> list[int]:
        out = []
        for _ in range(n):
            try:
                admit(policy, s, route)
                out.append(200)
            except RateLimited as exc:
                assert exc.retry_after is not None and exc.retry_after >= 1
                out.append(429)
        return out

    def anon(last: int) -> dict[str, Any]:
        s = scope()
        s["client"] = (f"10.0.0.{last}", 4000)
        return s

    assert codes(bearer(KEY_A), "infer", 3) == [200, 200, 429]  # checkout: burst 2
    assert codes(anon(1), "infer", 3) == [200, 200, 429]  # anonymous: keyed by address
    assert codes(anon(2), "infer", 3) == [200, 200, 429]  # another address has its own room...
    # ...but the route's shared limit (6 at once) is now spent, whoever asks.
    with pytest.raises(RateLimited) as info:
        admit(policy, anon(3), "infer")
    assert info.value.retry_after == 1  # one per second on the shared limit
    assert dict(info.value.headers) == {}  # no body declared: the connection is kept
    # "*" per route: unmatched paths have a shared limit of their own.
    assert codes(anon(4), "unmatched", 7) == [200] * 6 + [429]
    clock.now += 1.0
    assert codes(anon(3), "infer", 2) == [200, 429]
    assert limited == ["infer"] * 4 + ["unmatched", "infer"]


def test_refusals_of_large_or_unsized_bodies_close_the_connection(tmp_path: Path) -> None:
    policy = EdgePolicy(mixed_config(tmp_path))
    for headers, closes in (
        ({"content-length": "10"}, False),
        ({"content-length": str(10 * 1024 * 1024)}, True),
        ({"transfer-encoding": "chunked"}, True),
    ):
        with pytest.raises(Unauthorized) as info:
            admit(policy, scope(headers), "infer")
        assert (dict(info.value.headers).get(b"connection") == b"close") is closes, headers
