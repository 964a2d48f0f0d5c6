"""Structured logs end to end: PII sent through the real proxy never reaches any of its output."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson

from proxy.config.load import load_config
from tests.helpers.config import config_doc, write_config
from tests.helpers.models import Models
from tests.helpers.proxy_runner import start_proxy
from tests.helpers.tokens import OPERATOR_TOKEN
from tests.helpers.traffic import VALID_BODY

EMAIL = "joao.silva@example.com"
CPF = "529.982.247-25"
CARD = "4111 1111 1111 1111"
PHONE = "+55 11 91234-5678"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvYW8ifQ."
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PLANTED = [EMAIL, CPF, "52998224725", CARD, "4111111111111111", PHONE, JWT, "maria@example.org", "10.9.8.7"]


async def test_pii_never_reaches_any_output(tmp_path: Path, models: Models) -> None:
    doc = config_doc(
        tmp_path,
        models.baseline.url,
        models.candidate.url,
        logging={"access_log": "stdout", "pii": {"key": "env:RG_TEST_PII_KEY"}},
        shadow={"sample": 1.0, "noise_sample": 0.5},
    )
    env = {
        "RG_TEST_PII_KEY": "k" * 32,
        "RG_TEST_OPERATOR_TOKEN": OPERATOR_TOKEN,
        "RG_TEST_VIEWER_TOKEN": "viewer-token-for-tests-012345",
        "PATH": "/usr/bin:/bin",
    }
    cfg = write_config(tmp_path, doc)
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once; its pipes are read in threads below
        [sys.executable, "-m", "proxy", "serve", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stderr is not None
        line = await asyncio.to_thread(proc.stderr.readline)
        while b"rollguard listening" not in line:
            line = await asyncio.to_thread(proc.stderr.readline)
            assert line, "proxy did not start"
        data_url = line.split(b"data=")[1].split()[0].decode()
        admin_url = line.split(b"admin=")[1].split()[0].decode()
        async with httpx.AsyncClient(base_url=data_url) as c:
            await c.post(
                f"/v1/infer?email={EMAIL}&cpf={CPF}&card={CARD}",
                json=VALID_BODY,
                headers={
                    "authorization": f"Bearer {JWT}",
                    "x-user-id": EMAIL,
                    "x-request-id": "maria@example.org",
                    "x-forwarded-for": "10.9.8.7",
                },
            )
            bad = await c.post(
                "/v1/infer",
                json={"features": {"amount": EMAIL, "tenure_months": 1, "txn_24h": 0, "region": "br-se"}},
            )
            assert bad.status_code == 400 and EMAIL in bad.text  # the client gets its own data back
            await c.get(f"/users/{EMAIL}/orders", params={"phone": PHONE})
        async with httpx.AsyncClient(
            base_url=admin_url, headers={"authorization": f"Bearer {OPERATOR_TOKEN}"}
        ) as admin:
            r = await admin.put("/weights", json={"canary": 5, "reason": f"asked by {EMAIL}, cpf {CPF}"})
            assert r.status_code == 200
            report = (await admin.get("/reports/shadow_eval.json")).text
            decisions = (await admin.get("/decisions")).text
    finally:
        proc.terminate()
        out, err = await asyncio.to_thread(proc.communicate, timeout=20)
    assert proc.returncode == 0, err.decode()
    state_files = b"".join(p.read_bytes() for p in (tmp_path / "state").iterdir())
    everything = out + err + state_files + report.encode() + decisions.encode()
    for value in PLANTED:
        assert value.encode() not in everything, value
    lines = [orjson.loads(x) for x in out.splitlines() if x.startswith(b"{")]
    access = [x for x in lines if x.get("log") == "access"]
    audit = [x for x in lines if x.get("log") == "audit"]
    assert len(access) == 3
    assert "<email:" in access[0]["query"] and "<cpf:" in access[0]["query"]
    assert access[0]["request_id"].startswith("<email:")
    assert any("<email:" in x.get("error", "") for x in access)  # the contract error names the value
    assert any("<email:" in x["path"] for x in access)
    assert audit and audit[0]["actor"] == "ops" and "<email:" in audit[0]["reason"]
    assert audit[0]["before"]["weight"] == 0 and audit[0]["after"]["weight"] == 5
    # Pseudonyms are stable: the same email masks the same way in the query and the path.
    pseudo = access[0]["query"].split("email=")[1].split("&")[0]
    assert any(pseudo in x["path"] for x in access)


async def test_successes_may_be_sampled_errors_never(tmp_path: Path, models: Models) -> None:
    doc = config_doc(
        tmp_path,
        models.baseline.url,
        models.candidate.url,
        logging={"access_log": str(tmp_path / "access.log"), "sample_success": 0.0},
    )
    proxy, stop, task = await start_proxy(load_config(write_config(tmp_path, doc)))
    async with httpx.AsyncClient(base_url=proxy.data_url) as c:
        for _ in range(20):
            assert (await c.post("/v1/infer", json=VALID_BODY)).status_code == 200
        for _ in range(3):
            assert (await c.post("/v1/infer", json={"features": {}})).status_code == 400
    stop.set()
    await task
    lines = [orjson.loads(x) for x in (tmp_path / "access.log").read_bytes().splitlines()]
    assert [x["status"] for x in lines] == [400, 400, 400]


async def test_access_line_has_the_contract_fields(
    proxy_factory: Any, tmp_path: Path, models: Models
) -> None:
    doc = config_doc(tmp_path, models.baseline.url, models.candidate.url, shadow={"sample": 1.0})
    proxy, stop, task = await start_proxy(load_config(write_config(tmp_path, doc)))
    async with httpx.AsyncClient(base_url=proxy.data_url) as c:
        await c.post("/v1/infer", json=VALID_BODY, headers={"x-request-id": "abc-123"})
    stop.set()
    await task
    line = orjson.loads((tmp_path / "access.log").read_bytes().splitlines()[0])
    for key in (
        "ts",
        "request_id",
        "route",
        "method",
        "status",
        "role",
        "version",
        "latency_ms",
        "upstream_ms",
        "shadow",
        "client",
    ):
        assert key in line, key
    assert line["request_id"] == "abc-123" and line["shadow"] == "sent"
    assert line["client"].startswith("<ip:")  # addresses are personal data too
