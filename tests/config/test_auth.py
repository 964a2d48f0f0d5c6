"""Edge config (auth, routes[].auth, rate_limits): errors name the key path; and rollguard hash-key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from proxy.config.load import build_config
from proxy.errors import ConfigError
from tests.helpers.clientauth import HS_SECRET, KEY_A, auth_doc, mixed_config, sha

# -- config errors name the key path ------------------------------------------------------------------

BAD: list[tuple[str, dict[str, Any], str]] = [
    (
        "short hash",
        {"auth": {"api_keys": [{"name": "a", "key_sha256": "abc"}]}},
        "auth.api_keys[0].key_sha256",
    ),
    (
        "same key twice",
        {
            "auth": {
                "api_keys": [{"name": "a", "key_sha256": sha(KEY_A)}, {"name": "b", "key_sha256": sha(KEY_A)}]
            }
        },
        "auth.api_keys[1].key_sha256",
    ),
    ("required without credentials", {"auth": {"required": True}}, "auth.required"),
    ("bad alg", {"auth": {"jwt": {"keys": [{"alg": "none", "secret": "env:X"}]}}}, "auth.jwt.keys[0].alg"),
    (
        "missing pem",
        {"auth": {"jwt": {"keys": [{"alg": "RS256", "public_key": "nope.pem"}]}}},
        "auth.jwt.keys[0].public_key",
    ),
    (
        "secret for RS",
        {"auth": {"jwt": {"keys": [{"alg": "RS256", "secret": "env:RG_TEST_JWT_SECRET"}]}}},
        "auth.jwt.keys[0]",
    ),
    (
        "short secret",
        {"auth": {"jwt": {"keys": [{"alg": "HS256", "secret": "env:RG_SHORT"}]}}},
        "auth.jwt.keys[0].secret",
    ),
    (
        "unset secret",
        {"auth": {"jwt": {"keys": [{"alg": "HS256", "secret": "env:RG_UNSET_X"}]}}},
        "auth.jwt.keys[0].secret",
    ),
    (
        "inline secret",
        {"auth": {"jwt": {"keys": [{"alg": "HS256", "secret": "hunter2"}]}}},
        "auth.jwt.keys[0].secret",
    ),
    ("missing jwks", {"auth": {"jwt": {"jwks": "missing.json"}}}, "auth.jwt.jwks"),
    ("no jwt keys", {"auth": {"jwt": {"issuer": "x"}}}, "auth.jwt"),
    (
        "reserved header",
        {"auth": {"api_key_header": "Authorization", "peers": [{"name": "p", "peer": "p"}]}},
        "auth.api_key_header",
    ),
    ("bad rate", {"rate_limits": [{"route": "infer", "rate": "100/day"}]}, "rate_limits[0].rate"),
    ("zero rate", {"rate_limits": [{"route": "infer", "rate": "0/s"}]}, "rate_limits[0].rate"),
    ("unknown route", {"rate_limits": [{"route": "nope", "rate": "1/s"}]}, "rate_limits[0].route"),
    ("bad per", {"rate_limits": [{"route": "infer", "rate": "1/s", "per": "user"}]}, "rate_limits[0].per"),
    ("zero burst", {"rate_limits": [{"route": "infer", "rate": "1/s", "burst": 0}]}, "rate_limits[0].burst"),
    (
        "duplicate rule",
        {"rate_limits": [{"route": "*", "rate": "1/s"}, {"route": "*", "rate": "2/s"}]},
        "rate_limits[1].route",
    ),
]


@pytest.mark.parametrize(("label", "over", "path"), BAD, ids=[b[0] for b in BAD])
def test_bad_edge_config_names_the_key_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, label: str, over: dict[str, Any], path: str
) -> None:
    monkeypatch.setenv("RG_TEST_JWT_SECRET", HS_SECRET)
    monkeypatch.setenv("RG_SHORT", "short")
    with pytest.raises(ConfigError) as info:
        build_config(auth_doc(tmp_path, **over), tmp_path)
    assert info.value.path == path, str(info.value)
    assert str(info.value).startswith(path + ":")


def test_route_auth_errors_name_the_route(tmp_path: Path) -> None:
    route = {"name": "infer", "path": "/v1/infer"}
    with pytest.raises(ConfigError) as info:  # an auth block but nothing to authenticate with
        build_config(auth_doc(tmp_path, routes=[{**route, "auth": {"roles": ["x"]}}]), tmp_path)
    assert info.value.path == "routes[0].auth"
    peers = {"peers": [{"name": "batch", "roles": ["scorer"], "peer": "b"}]}
    with pytest.raises(ConfigError) as info:
        build_config(
            auth_doc(tmp_path, routes=[{**route, "auth": {"roles": ["scorre"]}}], auth=peers), tmp_path
        )
    assert info.value.path == "routes[0].auth.roles[0]" and "scorre" in str(info.value)
    with pytest.raises(ConfigError) as info:
        build_config(
            auth_doc(tmp_path, routes=[{**route, "auth": {"clients": ["bach"]}}], auth=peers), tmp_path
        )
    assert info.value.path == "routes[0].auth.clients[0]"


def test_api_key_header_is_stripped_from_mirrors(tmp_path: Path) -> None:
    config = mixed_config(tmp_path, api_key_header="x-client-key")
    assert {"x-client-key", "x-api-key"} <= config.shadow.credential_headers


# -- rollguard hash-key ---------------------------------------------------------------------------------


def _hash_key(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", "hash-key", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_hash_key_generates_or_reads_a_key() -> None:
    made = _hash_key("--generate", "--name", "checkout")
    assert made.returncode == 0, made.stderr
    lines = dict(line.split(": ", 1) for line in made.stdout.splitlines())
    key = lines["key"]
    assert key.startswith("rg_") and len(key) >= 40
    assert lines["key_sha256"] == sha(key)
    assert f"name: checkout, roles: [], key_sha256: {sha(key)}" in lines["config"]
    read = _hash_key(stdin=KEY_A + "\n")
    assert read.returncode == 0 and f"key_sha256: {sha(KEY_A)}" in read.stdout
    assert KEY_A not in read.stdout  # a key read from stdin is not echoed
    short = _hash_key(stdin="hunter2\n")
    assert short.returncode == 2 and "at least 24" in short.stderr
