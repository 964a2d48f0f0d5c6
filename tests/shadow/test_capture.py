"""shadow.capture: mirrored pairs written as a backtest trace, replayable, with no key in the clear."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest

from proxy.config.load import load_config
from proxy.rollout.trace import parse_line
from tests.helpers.config import config_doc, write_config
from tests.helpers.models import Models
from tests.helpers.proxy_runner import start_proxy
from tests.helpers.traffic import VALID_BODY


async def test_compared_pairs_become_a_trace_that_backtest_replays(
    tmp_path: Path, models: Models, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RG_TEST_PII_KEY", "test-pii-key-0123456789abcdef")
    capture = tmp_path / "captured" / "pairs.jsonl"
    doc = config_doc(
        tmp_path,
        models.baseline.url,
        models.candidate.url,
        shadow={"sample": 1.0, "noise_sample": 0.0, "capture": str(capture)},
        logging={"access_log": "off", "pii": {"key": "env:RG_TEST_PII_KEY"}},
    )
    config = load_config(write_config(tmp_path, doc))
    proxy, stop, task = await start_proxy(config)
    try:
        async with httpx.AsyncClient(base_url=proxy.data_url) as client:
            for i in range(60):
                r = await client.post("/v1/infer", json=VALID_BODY, headers={"x-user-id": f"user-{i % 7}"})
                assert r.status_code == 200
        async with asyncio.timeout(10):
            while True:  # mirrors complete off the client's path
                async with proxy.admin_client() as admin:
                    report = (await admin.get("/reports/shadow_eval.json")).json()
                if report["routes"].get("infer", {}).get("pairs_total", 0) >= 60:
                    break
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)  # closing flushes the capture

    raw = capture.read_bytes()
    lines = raw.splitlines()
    assert len(lines) == 60
    traced = [parse_line(line, n) for n, line in enumerate(lines, 1)]
    assert all(r.route == "infer" for r in traced)
    assert all(r.baseline.status == 200 and r.candidate.status == 200 for r in traced)
    assert all(r.baseline.score is not None and r.baseline.latency_ms > 0 for r in traced)
    assert [r.t for r in traced] == sorted(r.t for r in traced)
    keys = {r.key for r in traced}
    assert len(keys) == 7 and all(k is not None and k.startswith("<key:") for k in keys)
    assert b"user-" not in raw and b"features" not in raw and b"br-se" not in raw  # no key, no body

    res = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "proxy", "backtest", "--config", str(config.source), str(capture), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
        check=False,
    )
    assert res.returncode == 0, res.stderr
    summary = orjson.loads(res.stdout.splitlines()[-1])
    assert summary["summary"] is True and summary["requests"] == 60
