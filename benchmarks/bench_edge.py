"""Edge policy micro-benchmark: what client authentication and rate limiting cost per request.

    .venv/bin/python benchmarks/bench_edge.py [--out FILE]

Times ``EdgePolicy.admit`` (the one call the forwarder makes per request when auth or rate limits are
configured) for each kind of credential, with and without a per-client rate limit, in microseconds per
call (``timeit``, ~0.1 s a run, best of 5). Keys are generated at start. A client sends the same JWT
until it expires, so the JWT rows of ``admit`` hit the verified-token cache; the "first sight" rows
time a full verification (signature and claims) with the cache off. Nothing is asserted about speed.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from micro import best_us, finish  # noqa: E402 - benchmarks/micro.py, beside this script

from proxy.config.load import build_config
from proxy.edge.clientauth import JwtVerifier
from proxy.edge.policy import EdgePolicy
from proxy.observe.exchange import Exchange

API_KEY = "rg_bench-key-0123456789abcdefghijklmnopqrstuvwxyz"
HS_SECRET = "bench-hs256-secret-0123456789abcdef0123456789"


def exchange(s: dict[str, Any]) -> Exchange:
    return Exchange(
        request_id="bench", method="POST", path="/v1/infer", route_name="infer", route=None, scope=s
    )


def _pem(key: Any) -> bytes:
    return bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def policy(work: Path, *, limited: bool) -> tuple[EdgePolicy, dict[str, str], JwtVerifier]:
    rs, es = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec.generate_private_key(ec.SECP256R1()),
    )
    (work / "rs.pem").write_bytes(_pem(rs))
    (work / "es.pem").write_bytes(_pem(es))
    (work / "hs.secret").write_text(HS_SECRET)
    doc: dict[str, Any] = {
        "state": {"url": f"file:{work}/state.json"},
        "upstreams": {
            "baseline": {"url": "http://127.0.0.1:9001", "version": "v1"},
            "candidate": {"url": "http://127.0.0.1:9002", "version": "v2"},
        },
        "routes": [{"name": "infer", "path": "/v1/infer", "auth": {"roles": ["scorer"]}}],
        "auth": {
            "api_keys": [
                {
                    "name": "checkout",
                    "roles": ["scorer"],
                    "key_sha256": hashlib.sha256(API_KEY.encode()).hexdigest(),
                }
            ],
            "peers": [{"name": "batch", "roles": ["scorer"], "peer": "batch.internal"}],
            "jwt": {
                "keys": [
                    {"kid": "hs", "alg": "HS256", "secret": f"file:{work}/hs.secret"},
                    {"kid": "rs", "alg": "RS256", "public_key": "rs.pem"},
                    {"kid": "es", "alg": "ES256", "public_key": "es.pem"},
                ],
                "audience": "rollguard",
            },
        },
    }
    if limited:
        # High enough that the timed loop never hits it: the cost of an admitted request.
        doc["rate_limits"] = [{"route": "infer", "per": "client", "rate": "100000000/s", "burst": 1000000}]
    tokens = {
        alg: jwt.encode(
            {"sub": "svc", "roles": ["scorer"], "aud": "rollguard", "exp": int(time.time()) + 3600},
            key,
            alg,
            {"kid": kid},
        )
        for alg, key, kid in (("HS256", HS_SECRET, "hs"), ("RS256", rs, "rs"), ("ES256", es, "es"))
    }
    config = build_config(doc, work)
    assert config.auth.jwt is not None
    uncached = JwtVerifier(config.auth.jwt, cache_size=0)
    return EdgePolicy(config), tokens, uncached


def scope(headers: dict[str, str], tls: list[str] | None = None) -> dict[str, Any]:
    s: dict[str, Any] = {
        "type": "http",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()]
        + [
            (b"content-type", b"application/json"),
            (b"host", b"api.example.com"),
            (b"user-agent", b"bench/1"),
        ],
        "client": ("10.0.0.7", 40000),
    }
    if tls is not None:
        s["extensions"] = {"tls": {"client_cert_identities": tls}}
    return s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    results: list[dict[str, Any]] = []
    print(f"{'what':<44} {'µs/call':>9} {'loops':>8}")
    print("-" * 63)
    with tempfile.TemporaryDirectory() as tmp:
        for limited in (False, True):
            pol, tokens, uncached = policy(Path(tmp), limited=limited)
            cases = {
                "API key (x-api-key)": scope({"x-api-key": API_KEY}),
                "mTLS peer identity": scope({}, ["batch.internal"]),
                **{f"JWT {alg}": scope({"authorization": f"Bearer {tok}"}) for alg, tok in tokens.items()},
            }
            for name, s in cases.items():
                ex = exchange(s)
                pol.admit(ex)
                assert ex.client_name in ("checkout", "batch", "svc"), ex  # admitted, or timing is moot
                label = f"{name}{' + rate limit' if limited else ''}"
                us, number = best_us(lambda ex=ex, pol=pol: pol.admit(ex))
                results.append({"what": label, "us_per_call": round(us, 3), "loops": number})
                print(f"{label:<44} {us:>9.2f} {number:>8}")
            if limited:
                continue
            for alg, tok in tokens.items():  # a token seen for the first time: full verification
                label = f"JWT {alg}, first sight (signature verified)"
                raw = tok.encode()
                us, number = best_us(lambda t=raw, v=uncached: v.verify(t))
                results.append({"what": label, "us_per_call": round(us, 3), "loops": number})
                print(f"{label:<44} {us:>9.2f} {number:>8}")
    finish(args.out, REPO, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
