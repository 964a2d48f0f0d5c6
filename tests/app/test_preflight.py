"""``rollguard preflight`` as a release pipeline runs it, against real sample models (and a real rollguard)
on loopback: a healthy setup passes every check with exit 0, and each broken item on its own fails the run
with exit 1 and its own FAIL line; a bad argument or a config that does not load is exit 2."""

from __future__ import annotations

import asyncio
import datetime
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import trustme

from proxy.config.load import load_config
from proxy.demo.sample_model import ModelBehavior, start_sample_model
from proxy.rollout.manifest import keygen, sign
from tests.helpers.config import config_doc, write_config
from tests.helpers.models import Models
from tests.helpers.paths import ROOT
from tests.helpers.proxy_runner import RunningProxy, start_proxy
from tests.helpers.tokens import OPERATOR_TOKEN

BOUND_S = 60
RULES = ROOT / "config" / "prometheus" / "rollguard-rules.yml"
NAME_WIDTH = 28  # the name column of a preflight line
REHEARSAL_REASON = "preflight rollback rehearsal"
MANIFEST = {
    "model": "risk-scorer",
    "version": "v2",
    "artifact_sha256": "ab" * 32,
    "stage": "Approved",
    "security_decision": "PASS",
    "signed_by": "release-bot",
    "created_at": "2026-11-26T10:00:00Z",
}


class Run:
    """One finished ``rollguard preflight``: its exit code, and its lines by check name."""

    def __init__(self, done: subprocess.CompletedProcess[str]) -> None:
        self.code = done.returncode
        self.out = done.stdout
        self.err = done.stderr
        self.lines: dict[str, tuple[str, str]] = {}
        for line in done.stdout.splitlines():
            status, rest = line[:4], line[6:]
            if status in ("PASS", "FAIL", "SKIP"):
                self.lines[rest[:NAME_WIDTH].strip()] = (status, rest[NAME_WIDTH + 1 :])

    def status(self, name: str) -> str:
        return self.lines[name][0]

    def detail(self, name: str) -> str:
        return self.lines[name][1]

    def failing(self) -> list[str]:
        return [name for name, (status, _) in self.lines.items() if status == "FAIL"]

    def __repr__(self) -> str:
        return f"exit {self.code}\n{self.out}\n{self.err}"


async def _preflight(config: Path, *args: str, token: str | None = None) -> Run:
    env = {k: v for k, v in os.environ.items() if k != "ROLLGUARD_TOKEN"}
    if token:
        env["ROLLGUARD_TOKEN"] = token
    command = [sys.executable, "-m", "proxy", "preflight", "--config", str(config), "--rules", str(RULES)]
    done = await asyncio.to_thread(
        subprocess.run,
        [*command, *args],
        capture_output=True,
        text=True,
        timeout=BOUND_S,
        env=env,
        cwd=ROOT,
        check=False,
    )
    return Run(done)


def _refused_port() -> int:
    """A loopback port nothing listens on: bound once for a free number, then closed."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
async def collector() -> AsyncIterator[str]:
    """A TCP listener standing in for an OTLP collector: preflight only needs it to accept."""

    def drop(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(drop, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1/traces"
    finally:
        server.close()
        await server.wait_closed()


def _tls_files(tmp_path: Path, *, days: float) -> dict[str, str]:
    """A listener certificate valid for ``days`` more days, from a fresh CA."""
    ca = trustme.CA()
    not_after = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=days)
    leaf = ca.issue_cert("localhost", "127.0.0.1", common_name="localhost", not_after=not_after)
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    return {"cert": str(cert), "key": str(key)}


def _signed_manifest(tmp_path: Path) -> dict[str, Any]:
    """A signed release manifest for the candidate and the security block that trusts its key."""
    key = tmp_path / "release.key"
    keygen(key, tmp_path / "release.key.pub")
    manifest = tmp_path / "v2.manifest.json"
    manifest.write_bytes(orjson.dumps(MANIFEST))
    sign(manifest, key)
    return {
        "manifest": str(manifest),
        "security": {
            "require_signed_candidate": True,
            "trusted_keys": [{"name": "release", "key": f"file:{tmp_path / 'release.key.pub'}"}],
        },
    }


def _everything_doc(tmp_path: Path, models: Models, collector: str, *, cert_days: float) -> dict[str, Any]:
    """A config with every optional item preflight checks: a signed candidate, TLS, OTLP traces."""
    doc = config_doc(tmp_path, models.baseline.url, models.candidate.url)
    release = _signed_manifest(tmp_path)
    doc["upstreams"]["candidate"]["manifest"] = release["manifest"]
    doc["security"] = release["security"]
    doc["tls"] = _tls_files(tmp_path, days=cert_days)
    doc["tracing"] = {"exporter": "otlp", "endpoint": collector}
    return doc


@pytest.fixture
async def live(tmp_path: Path, models: Models) -> AsyncIterator[tuple[RunningProxy, Path]]:
    """A real rollguard in front of the models, and the config file it was started from."""
    config = write_config(tmp_path, config_doc(tmp_path, models.baseline.url, models.candidate.url))
    rp, stop, task = await start_proxy(load_config(config))
    try:
        yield rp, config
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


async def test_a_healthy_proxy_passes_every_check(live: tuple[RunningProxy, Path]) -> None:
    rp, config = live
    run = await _preflight(config, "--admin", rp.admin_url, token=OPERATOR_TOKEN)
    assert run.code == 0, run
    for name in (
        "schemas",
        "upstream baseline",
        "upstream candidate",
        "contract infer/baseline",
        "contract infer/candidate",
        "state store",
        "admin /metrics",
        "admin /readyz",
    ):
        assert run.status(name) == "PASS", (name, run)
    assert "matches infer_response.json" in run.detail("contract infer/candidate")
    assert "score " in run.detail("contract infer/baseline")
    # Not configured here, so not checked: said, and not held against the run.
    for name in ("manifest", "tls", "otlp endpoint", "rollback rehearsal"):
        assert run.status(name) == "SKIP", (name, run)
    assert run.status("alert rules") == ("PASS" if shutil.which("promtool") else "SKIP"), run
    assert "preflight: PASS" in run.out and "skipped (a skipped check does not fail the run)" in run.out
    # The probe beside the state file is gone again.
    assert not [p for p in (config.parent / "state").iterdir() if "preflight" in p.name]


async def test_every_optional_item_configured_and_healthy_passes(
    tmp_path: Path, models: Models, collector: str
) -> None:
    config = write_config(tmp_path, _everything_doc(tmp_path, models, collector, cert_days=365))
    run = await _preflight(config)
    assert run.code == 0, run
    assert run.status("manifest") == "PASS" and "signed by release" in run.detail("manifest"), run
    assert run.status("tls tls") == "PASS" and "localhost" in run.detail("tls tls"), run
    assert run.status("otlp endpoint") == "PASS", run
    assert run.failing() == []


async def test_an_unreachable_candidate_fails(tmp_path: Path, models: Models) -> None:
    down = f"http://127.0.0.1:{_refused_port()}"
    config = write_config(tmp_path, config_doc(tmp_path, models.baseline.url, down))
    run = await _preflight(config)
    assert run.code == 1, run
    assert run.status("upstream candidate") == "FAIL", run
    assert "refused" in run.detail("upstream candidate").lower(), run
    assert run.status("contract infer/candidate") == "FAIL", run
    assert run.status("upstream baseline") == "PASS" and run.status("contract infer/baseline") == "PASS"
    assert set(run.failing()) == {"upstream candidate", "contract infer/candidate"}
    assert "preflight: FAIL" in run.out


async def test_a_candidate_breaking_its_contract_fails(tmp_path: Path, models: Models) -> None:
    broken = await start_sample_model(ModelBehavior(version="v2", schema_break_rate=1.0, seed=1))
    try:
        config = write_config(tmp_path, config_doc(tmp_path, models.baseline.url, broken.url))
        run = await _preflight(config)
    finally:
        await broken.close()
    assert run.code == 1, run
    assert run.failing() == ["contract infer/candidate"], run
    assert "breaks infer_response.json at /" in run.detail("contract infer/candidate"), run


async def test_a_sample_body_that_breaks_the_request_schema_fails(tmp_path: Path, models: Models) -> None:
    bodies = tmp_path / "bodies.jsonl"
    bodies.write_text('\n{"features": {"amount": -5}}\n{"never": "read"}\n', encoding="utf-8")
    config = write_config(tmp_path, config_doc(tmp_path, models.baseline.url, models.candidate.url))
    run = await _preflight(config, "--bodies", str(bodies))
    assert run.code == 1, run
    assert run.failing() == ["contract infer"], run
    assert "bodies.jsonl line 2 breaks infer_request.json" in run.detail("contract infer"), run


async def test_a_route_without_a_sample_body_is_skipped_with_why(tmp_path: Path, models: Models) -> None:
    doc = config_doc(tmp_path, models.baseline.url, models.candidate.url)
    doc["routes"] = [{"name": "echo", "path": "/echo", "methods": ["POST"]}]
    run = await _preflight(write_config(tmp_path, doc))
    assert run.code == 0, run
    assert run.status("contract echo") == "SKIP" and "--bodies" in run.detail("contract echo"), run


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into a folder whatever its mode"
)
async def test_an_unwritable_state_folder_fails(tmp_path: Path, models: Models) -> None:
    config = write_config(tmp_path, config_doc(tmp_path, models.baseline.url, models.candidate.url))
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o500)
    try:
        run = await _preflight(config)
    finally:
        state.chmod(0o700)
    assert run.code == 1, run
    assert run.failing() == ["state store"], run
    assert "cannot create a file in" in run.detail("state store") and str(state) in run.detail("state store")


async def test_a_state_folder_that_cannot_be_made_fails(tmp_path: Path, models: Models) -> None:
    # A file where the state folder should be: no mode bits involved, so this holds for root as well.
    (tmp_path / "blocked").write_text("not a folder", encoding="utf-8")
    doc = config_doc(tmp_path, models.baseline.url, models.candidate.url)
    doc["state"] = {"url": f"file:{tmp_path / 'blocked' / 'state' / 'rollguard-state.json'}"}
    run = await _preflight(write_config(tmp_path, doc))
    assert run.code == 1, run
    assert run.failing() == ["state store"], run
    assert "cannot create a file in" in run.detail("state store"), run


async def test_a_certificate_about_to_expire_fails(tmp_path: Path, models: Models, collector: str) -> None:
    config = write_config(tmp_path, _everything_doc(tmp_path, models, collector, cert_days=3))
    run = await _preflight(config)
    assert run.code == 1, run
    assert run.failing() == ["tls tls"], run
    assert "expires on" in run.detail("tls tls") and "within --tls-warn 14.0 days" in run.detail("tls tls")
    # The same certificate is fine for a pipeline that only asks for one more day.
    relaxed = await _preflight(config, "--tls-warn", "1d")
    assert relaxed.code == 0 and relaxed.status("tls tls") == "PASS", relaxed


async def test_a_rollback_rehearsal_on_a_real_proxy(live: tuple[RunningProxy, Path]) -> None:
    rp, config = live
    run = await _preflight(config, "--admin", rp.admin_url, "--rehearse", token=OPERATOR_TOKEN)
    assert run.code == 0, run
    assert run.status("rollback rehearsal") == "PASS", run
    assert "weight 1% -> rollback -> 0% in " in run.detail("rollback rehearsal"), run
    async with rp.admin_client() as admin:
        rollout = (await admin.get("/status")).json()["rollout"]
        decisions = (await admin.get("/decisions?limit=20")).json()["decisions"]
    assert (rollout["phase"], rollout["weight"]) == ("idle", 0)
    rehearsed = [d for d in decisions if d.get("reason") == REHEARSAL_REASON]
    assert [d["action"] for d in rehearsed] == ["set_weight", "ROLLBACK", "rearm"], decisions
    # A dedicated rollout id: the weight and the rollback are recorded under one id nothing else used, and
    # the re-arm leaves the next rollout another.
    rehearsal_id = rehearsed[0]["state"]["rollout_id"]
    assert rehearsed[1]["state"]["rollout_id"] == rehearsal_id
    assert rehearsed[2]["state"]["rollout_id"] == rollout["rollout_id"] != rehearsal_id
    others = [d for d in decisions if d not in rehearsed and "state" in d]
    assert all(d["state"]["rollout_id"] != rehearsal_id for d in others), decisions
    detail = run.detail("rollback rehearsal")
    assert f"on rollout {rehearsal_id}, re-armed as rollout {rollout['rollout_id']}" in detail, run


async def test_a_rehearsal_never_touches_a_live_rollout(live: tuple[RunningProxy, Path]) -> None:
    rp, config = live
    async with rp.admin_client() as admin:
        assert (await admin.put("/weights", json={"canary": 5, "reason": "a live canary"})).status_code == 200
        before = (await admin.get("/status")).json()["rollout"]
        run = await _preflight(config, "--admin", rp.admin_url, "--rehearse", token=OPERATOR_TOKEN)
        after = (await admin.get("/status")).json()["rollout"]
    assert run.code == 1, run
    assert run.failing() == ["rollback rehearsal"], run
    assert run.detail("rollback rehearsal").startswith("refused: the rollout is paused at 5%"), run
    assert after["revision"] == before["revision"] and after["weight"] == 5


async def test_a_config_that_does_not_load_is_exit_2_naming_the_key(tmp_path: Path) -> None:
    doc = config_doc(tmp_path, "http://127.0.0.1:1", "http://127.0.0.1:2")
    doc["canary"] = {"weight": "lots"}
    run = await _preflight(write_config(tmp_path, doc))
    assert run.code == 2 and run.out == "", run
    assert "invalid config: canary.weight" in run.err, run


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--rehearse",), "--rehearse needs --admin"),
        (("--tls-warn", "soon"), "--tls-warn"),
        (("--bodies", "/nonexistent/bodies.jsonl"), "--bodies /nonexistent/bodies.jsonl"),
        (("--admin", "127.0.0.1:9901"), "expected an http:// or https:// URL"),
    ],
)
async def test_a_bad_argument_is_exit_2(tmp_path: Path, args: tuple[str, ...], words: str) -> None:
    config = write_config(tmp_path, config_doc(tmp_path, "http://127.0.0.1:1", "http://127.0.0.1:2"))
    run = await _preflight(config, *args)
    assert run.code == 2 and words in run.err, run
