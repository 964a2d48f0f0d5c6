"""Signed candidates: keygen/sign/verify, and no traffic of any kind to an unverified candidate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from proxy.config.keys import load_public_key
from proxy.config.load import load_config
from proxy.errors import ConfigError
from proxy.rollout.manifest import keygen, sign, verify
from tests.helpers.config import config_doc, write_config
from tests.helpers.faulty_upstream import Fault, FaultyUpstream
from tests.helpers.metrics import metric_samples, sample
from tests.helpers.models import Models
from tests.helpers.proxy_runner import start_proxy
from tests.helpers.tokens import OPERATOR_TOKEN
from tests.helpers.traffic import VALID_BODY

GOOD = {
    "model": "risk-scorer",
    "version": "v2",
    "artifact_sha256": "ab" * 32,
    "stage": "Approved",
    "security_decision": "PASS",
    "signed_by": "release-bot",
    "created_at": "2026-11-26T10:00:00Z",
}


def make_release(
    tmp_path: Path, doc: dict[str, Any] | None = None, *, name: str = "v2.manifest.json"
) -> Path:
    """A key pair in tmp_path (once) and a signed manifest; returns the manifest path."""
    key = tmp_path / "release.key"
    if not key.exists():
        keygen(key, tmp_path / "release.key.pub")
    manifest = tmp_path / name
    manifest.write_bytes(orjson.dumps(doc or GOOD, option=orjson.OPT_INDENT_2))
    sign(manifest, key)
    return manifest


def trusted(tmp_path: Path) -> dict[str, Any]:
    return {"release": load_public_key((tmp_path / "release.key.pub").read_text())}


def test_a_signed_manifest_verifies(tmp_path: Path) -> None:
    verdict = verify(make_release(tmp_path), trusted(tmp_path), expected_version="v2")
    assert verdict.ok and verdict.signer == "release" and len(verdict.digest) == 64


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ("one byte", "does not verify"),
        ("unsigned", "unsigned"),
        ("untrusted key", "does not verify"),
        ("stage", "not Staging or Approved"),
        ("security", "not PASS"),
        ("version", "the candidate is 'v2'"),
        ("missing field", "missing artifact_sha256"),
    ],
)
def test_a_bad_manifest_is_refused_with_the_reason(tmp_path: Path, change: str, words: str) -> None:
    doc = dict(GOOD)
    if change == "stage":
        doc["stage"] = "Dev"
    elif change == "security":
        doc["security_decision"] = "FAIL"
    elif change == "version":
        doc["version"] = "v3"
    elif change == "missing field":
        del doc["artifact_sha256"]
    manifest = make_release(tmp_path, doc)
    keys = trusted(tmp_path)
    if change == "one byte":
        data = bytearray(manifest.read_bytes())
        data[data.index(b"Approved")] = ord("a")
        manifest.write_bytes(bytes(data))
    elif change == "unsigned":
        manifest.with_name(manifest.name + ".sig").unlink()
    elif change == "untrusted key":
        keygen(tmp_path / "other.key", tmp_path / "other.key.pub")
        keys = {"other": load_public_key((tmp_path / "other.key.pub").read_text())}
    verdict = verify(manifest, keys, expected_version="v2")
    assert not verdict.ok and words in verdict.reason, verdict.reason


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxy", *args], capture_output=True, text=True, timeout=30)


def test_cli_keygen_sign_verify(tmp_path: Path) -> None:
    key = tmp_path / "k"
    assert _cli("keygen", "--out", str(key)).returncode == 0
    manifest = tmp_path / "m.json"
    manifest.write_bytes(orjson.dumps(GOOD))
    assert _cli("sign", str(manifest), "--key", str(key)).returncode == 0
    ok = _cli("verify", str(manifest), "--key", f"{key}.pub")
    assert ok.returncode == 0 and ok.stdout.startswith("ok:"), ok.stdout + ok.stderr
    manifest.write_bytes(manifest.read_bytes().replace(b"PASS", b"PASs"))
    bad = _cli("verify", str(manifest), "--key", f"{key}.pub")
    assert bad.returncode == 1 and "REFUSED" in bad.stdout


def secure_doc(
    tmp_path: Path, baseline: str, candidate: str, manifest: Path, **overrides: Any
) -> dict[str, Any]:
    doc = config_doc(tmp_path, baseline, candidate, **overrides)
    doc["upstreams"]["candidate"]["manifest"] = str(manifest)
    doc["security"] = {
        "require_signed_candidate": True,
        "trusted_keys": [{"name": "release", "key": f"file:{tmp_path / 'release.key.pub'}"}],
    }
    return doc


def test_config_requires_a_manifest_and_keys(tmp_path: Path) -> None:
    make_release(tmp_path)
    doc = config_doc(tmp_path, "http://127.0.0.1:1", "http://127.0.0.1:2")
    doc["security"] = {"require_signed_candidate": True}
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, doc))
    assert info.value.path == "upstreams.candidate.manifest"
    bad_key = tmp_path / "bad.pub"
    bad_key.write_text("not a key")
    doc = secure_doc(tmp_path, "http://127.0.0.1:1", "http://127.0.0.1:2", tmp_path / "v2.manifest.json")
    doc["security"]["trusted_keys"][0]["key"] = f"file:{bad_key}"
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, doc))
    assert info.value.path == "security.trusted_keys[0].key"


async def test_a_verified_candidate_gets_traffic(tmp_path: Path, models: Models) -> None:
    manifest = make_release(tmp_path)
    doc = secure_doc(tmp_path, models.baseline.url, models.candidate.url, manifest)
    proxy, stop, task = await start_proxy(load_config(write_config(tmp_path, doc)))
    try:
        headers = {"authorization": f"Bearer {OPERATOR_TOKEN}"}
        async with httpx.AsyncClient(base_url=proxy.admin_url, headers=headers) as admin:
            assert (await admin.put("/weights", json={"canary": 100})).status_code == 200
            status = (await admin.get("/status")).json()
        assert status["candidate"]["allowed"] and status["candidate"]["manifest"]["signer"] == "release"
        assert status["rollout"]["candidate_digest"] == status["candidate"]["manifest"]["digest"]
        async with httpx.AsyncClient(base_url=proxy.data_url) as c:
            assert (await c.post("/v1/infer", json=VALID_BODY)).headers["x-rollguard-version"] == "v2"
    finally:
        stop.set()
        await task


async def test_an_altered_manifest_blocks_every_kind_of_traffic(tmp_path: Path, models: Models) -> None:
    manifest = make_release(tmp_path)
    manifest.write_bytes(manifest.read_bytes().replace(b"Approved", b"Approvee"))
    async with FaultyUpstream(Fault.OK) as candidate:
        doc = secure_doc(
            tmp_path,
            models.baseline.url,
            candidate.url,
            manifest,
            canary={"weight": 0},
            shadow={"sample": 1.0},
        )
        proxy, stop, task = await start_proxy(load_config(write_config(tmp_path, doc)))
        try:
            headers = {"authorization": f"Bearer {OPERATOR_TOKEN}"}
            async with httpx.AsyncClient(base_url=proxy.admin_url, headers=headers) as admin:
                status = (await admin.get("/status")).json()
                assert status["candidate"]["allowed"] is False
                assert "does not verify" in status["candidate"]["manifest"]["reason"]
                for method, path, body in [
                    ("PUT", "/weights", {"canary": 50}),
                    ("POST", "/rollout/start", {}),
                    ("PUT", "/shadow", {"sample": 0.5}),
                ]:
                    r = await admin.request(method, path, json=body)
                    assert r.status_code == 409 and "not verified" in r.json()["detail"], (path, r.text)
                log = (await admin.get("/decisions")).json()["decisions"]
            assert any(d.get("action") == "candidate_blocked" for d in log)
            async with httpx.AsyncClient(base_url=proxy.data_url) as c:
                forced = await c.post(
                    "/v1/infer",
                    json=VALID_BODY,
                    headers={"x-rollguard-force": "candidate", "x-rollguard-token": OPERATOR_TOKEN},
                )
                assert forced.headers["x-rollguard-version"] == "v1"
                for _ in range(20):  # shadow.sample 1.0 in the config: still no mirror
                    assert (await c.post("/v1/infer", json=VALID_BODY)).status_code == 200
            # A mirror is offered (and counted, whatever its outcome) before the client's answer is
            # sent, so after 20 answers the count is final: nothing to wait for.
            samples = await metric_samples(proxy.admin_url)
            assert sample(samples, "rollguard_shadow_requests_total") == 0
            assert candidate.requests_seen == 0
        finally:
            stop.set()
            await task


async def test_a_new_manifest_for_the_same_version_resets_the_rollout(tmp_path: Path, models: Models) -> None:
    manifest = make_release(tmp_path)
    doc = secure_doc(tmp_path, models.baseline.url, models.candidate.url, manifest)
    config = write_config(tmp_path, doc)
    proxy, stop, task = await start_proxy(load_config(config))
    headers = {"authorization": f"Bearer {OPERATOR_TOKEN}"}
    async with httpx.AsyncClient(base_url=proxy.admin_url, headers=headers) as admin:
        assert (await admin.put("/weights", json={"canary": 20})).status_code == 200
    stop.set()
    await task
    make_release(tmp_path, {**GOOD, "created_at": "2026-11-27T09:00:00Z"})  # a rebuilt artifact's release
    proxy, stop, task = await start_proxy(load_config(config))
    try:
        async with httpx.AsyncClient(base_url=proxy.admin_url, headers=headers) as admin:
            rollout = (await admin.get("/status")).json()["rollout"]
        assert rollout["phase"] == "idle" and rollout["weight"] == 0
        assert "different signed manifest" in rollout["reason"]
    finally:
        stop.set()
        await task
