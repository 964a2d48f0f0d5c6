"""staging_report.json: counts that match the traffic sent, bounded masked samples, process
figures, the endpoint's role, `rollguard report --out`, and the artifacts written when a rollout ends."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import random
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.config.load import load_config
from proxy.demo.sample_model import ModelBehavior
from proxy.errors import ConfigError
from proxy.reports.staging import SampleSlots
from tests.helpers.config import config_doc, write_config
from tests.helpers.models import Models
from tests.helpers.proxy_runner import RunningProxy
from tests.helpers.tokens import OPERATOR_TOKEN, VIEWER_TOKEN

# Personal data planted in bodies, queries and a contract breach's value; none may reach the report raw.
EMAIL = "joao.silva@example.com"
QUERY_EMAIL = "maria.souza@example.org"
BREACH_EMAIL = "ana.lima@example.net"
CPF = "529.982.247-25"
CARD = "4111111111111111"
RAW = [
    EMAIL,
    QUERY_EMAIL,
    "maria.souza%40example.org",
    BREACH_EMAIL,
    CPF,
    "52998224725",
    CARD,
    "4111 1111 1111 1111",
]

VALID, FORCED, BREACHES, NOT_JSON = 12, 5, 4, 3
LIMIT = 5


def _body(region: str = "br-se") -> dict[str, Any]:
    return {
        "features": {"amount": 42.5, "tenure_months": 12, "txn_24h": 1, "region": region},
        "user_id": EMAIL,
        "note": f"card {CARD} cpf {CPF}",
    }


async def _send_traffic(proxy: RunningProxy) -> dict[int, int]:
    """Valid requests (some forced to a failing candidate), schema breaches and broken JSON."""
    statuses: dict[int, int] = {}
    query = {"email": QUERY_EMAIL, "cpf": CPF}
    force = {"x-rollguard-force": "candidate", "x-rollguard-token": OPERATOR_TOKEN}
    async with httpx.AsyncClient(base_url=proxy.data_url, timeout=10) as client:
        calls = (
            [client.post("/v1/infer", params=query, json=_body()) for _ in range(VALID)]
            + [client.post("/v1/infer", params=query, json=_body(), headers=force) for _ in range(FORCED)]
            + [client.post("/v1/infer", params=query, json=_body(BREACH_EMAIL)) for _ in range(BREACHES)]
            + [
                client.post(
                    "/v1/infer",
                    params=query,
                    content=f'{{"features": {{"amount": 1}}, "card": "{CARD}", "who": "{EMAIL}"'.encode(),
                    headers={"content-type": "application/json"},
                )
                for _ in range(NOT_JSON)
            ]
        )
        for resp in await asyncio.gather(*calls):
            statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1
    return statuses


async def _report(proxy: RunningProxy) -> tuple[dict[str, Any], str]:
    async with proxy.admin_client(VIEWER_TOKEN) as admin:
        resp = await admin.get("/reports/staging_report.json")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    return resp.json(), resp.text


async def test_report_counts_match_the_traffic_and_samples_are_bounded_and_masked(
    proxy_factory: Any, models: Models
) -> None:
    models.candidate.model.set_behavior(ModelBehavior(version="v2", error_rate=1.0))
    proxy = await proxy_factory(reports={"samples": LIMIT})
    statuses = await _send_traffic(proxy)
    # Forced candidate requests fail (500) and the baseline answers them: every valid request is a 200.
    assert statuses == {200: VALID + FORCED, 400: BREACHES + NOT_JSON}, statuses

    report, text = await _report(proxy)
    for raw in RAW:
        assert raw not in text, f"{raw!r} reached staging_report.json raw"
    assert report["versions"] == {"baseline": "v1", "candidate": "v2"}
    assert report["rollout"]["phase"] == "idle"

    route = report["routes"]["infer"]
    base, cand = route["versions"]["baseline"], route["versions"]["candidate"]
    answered = VALID + FORCED
    assert base["requests"] == answered and base["status"] == {"200": answered}
    assert base["latency_ms"]["count"] == answered
    assert base["upstream"]["attempts"] == answered and base["upstream"]["failures"] == 0
    assert 0 < base["latency_ms"]["p50"] <= base["latency_ms"]["p95"] <= base["latency_ms"]["p99"]
    assert base["schema_violations"] == {"request": BREACHES + NOT_JSON, "response": 0}
    assert cand["requests"] == 0 and cand["latency_ms"]["count"] == 0
    assert cand["upstream"]["attempts"] == FORCED
    assert cand["upstream"]["errors"] == {"http_5xx": FORCED}
    assert cand["upstream"]["failure_rate"] == 1.0
    assert cand["upstream"]["latency_ms"]["p95"] is not None
    assert route["local_responses"] == {"400": BREACHES + NOT_JSON}
    assert route["fallbacks"] == {"http_5xx": FORCED}
    assert route["shadow"] == {"sent": 0, "failed": 0, "dropped": 0, "skipped": 0, "errors": {}}
    assert route["contract"] == {
        "request_schema": True,
        "response_schema": True,
        "mode": "enforce",
        "checked": answered + BREACHES + NOT_JSON,
        "valid": answered,
        "invalid": BREACHES + NOT_JSON,
    }
    totals = report["totals"]
    assert totals["baseline"]["requests"] == answered
    assert totals["candidate"]["upstream_failures"] == FORCED
    assert totals["baseline"]["schema_violations"]["request"] == BREACHES + NOT_JSON

    samples = route["samples"]
    assert samples["limit"] == LIMIT
    assert len(samples["valid"]) == LIMIT and len(samples["invalid"]) == LIMIT
    for s in samples["valid"]:
        assert s["status"] == 200 and s["method"] == "POST" and s["violation"] is None
        assert s["version"] == "v1"
        assert "<email:" in s["body"] and "<email:" in s["query"] and "<cpf:" in s["query"]
        assert len(s["body"]) <= 512
    paths = {s["violation"]["path"] for s in samples["invalid"]}
    assert paths <= {"/features/region", "/"}, paths
    for s in samples["invalid"]:
        assert s["status"] == 400 and s["role"] is None
        assert s["violation"]["message"], s
        if s["violation"]["path"] == "/features/region":
            assert "<email:" in s["violation"]["message"], s  # the breaching value itself was masked
        else:
            assert s["violation"]["message"].startswith("not valid JSON")
            assert "<card:" in s["body"] or "<email:" in s["body"], s

    process = report["process"]
    assert process["pid"] == os.getpid()  # the proxy runs in this test's process
    assert 10 * 2**20 < process["rss_bytes"] <= process["peak_rss_bytes"] < 8 * 2**30
    assert process["cpu_user_s"] + process["cpu_system_s"] > 0
    assert 0 < process["open_fds"] < (process["fd_limit"] or 10**9)
    assert process["uptime_s"] > 0 and process["threads"] >= 1
    assert report["candidate_manifest"]["enforced"] is False
    assert report["observer_errors"] == 0


async def test_observe_mode_forwards_breaches_and_samples_them_with_the_model_status(
    proxy_factory: Any, models: Models, tmp_path: Path
) -> None:
    doc = config_doc(tmp_path, models.baseline.url, models.candidate.url)
    routes = doc["routes"]
    routes[0]["mode"] = "observe"
    proxy = await proxy_factory(routes=routes)
    async with httpx.AsyncClient(base_url=proxy.data_url, timeout=10) as client:
        resp = await client.post("/v1/infer", json=_body(BREACH_EMAIL))
    assert resp.status_code == 400  # the sample model refuses it itself
    report, text = await _report(proxy)
    assert BREACH_EMAIL not in text
    route = report["routes"]["infer"]
    (sample,) = route["samples"]["invalid"]
    assert sample["status"] == 400 and sample["version"] == "v1"
    assert route["versions"]["baseline"]["schema_violations"]["request"] == 1
    assert route["local_responses"] == {}


async def test_endpoint_needs_the_viewer_role(proxy: RunningProxy) -> None:
    async with proxy.admin_client(None) as anonymous:
        assert (await anonymous.get("/reports/staging_report.json")).status_code == 401
    async with proxy.admin_client("not-a-token") as wrong:
        assert (await wrong.get("/reports/staging_report.json")).status_code == 401
    report, _ = await _report(proxy)
    assert set(report["routes"]) == {"infer", "unmatched"}


async def test_rollguard_report_writes_all_four_files(proxy: RunningProxy, tmp_path: Path) -> None:
    out = tmp_path / "artifacts"
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "proxy", "report", "--admin", proxy.admin_url, "--out", str(out)),
        env={**os.environ, "ROLLGUARD_TOKEN": VIEWER_TOKEN},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, stderr.decode()
    assert "not available" not in stdout.decode()
    names = {"staging_report.json", "shadow_eval.json", "canary_plan.md", "rollout_decision.txt"}
    assert {p.name for p in out.iterdir()} == names
    assert json.loads((out / "staging_report.json").read_text())["versions"]["candidate"] == "v2"


def _folders(root: Path, phase: str) -> list[Path]:
    return sorted(p for p in root.glob(f"*-{phase}") if p.is_dir()) if root.exists() else []


async def _wait_for_folders(root: Path, phase: str, within: float = 10.0) -> list[Path]:
    async with asyncio.timeout(within):
        while True:
            found = await asyncio.to_thread(_folders, root, phase)
            if found:
                return found
            await asyncio.sleep(0.05)


async def test_artifacts_are_written_when_a_rollout_ends(proxy_factory: Any, tmp_path: Path) -> None:
    out = tmp_path / "ended"
    proxy = await proxy_factory(reports={"dir": str(out), "keep": 1})
    async with httpx.AsyncClient(base_url=proxy.data_url, timeout=10) as client:
        assert (await client.post("/v1/infer", json=_body())).status_code == 200
    names = {"staging_report.json", "shadow_eval.json", "canary_plan.md", "rollout_decision.txt"}
    async with proxy.admin_client() as admin:
        assert (await admin.post("/rollout/start", json={"reason": "v2 release"})).status_code == 200
        rollout_id = (await admin.get("/status")).json()["rollout"]["rollout_id"]
        assert (await admin.post("/rollout/promote", json={"reason": "looks good"})).status_code == 200
        (promoted,) = await _wait_for_folders(out, "promoted")
        assert rollout_id in promoted.name
        assert {p.name for p in promoted.iterdir()} == names
        staging = json.loads((promoted / "staging_report.json").read_text())
        assert staging["rollout"] == {"id": rollout_id, "phase": "promoted", "weight": 100.0}
        assert staging["routes"]["infer"]["versions"]["baseline"]["requests"] == 1
        assert EMAIL not in (promoted / "staging_report.json").read_text()
        assert "promote" in (promoted / "rollout_decision.txt").read_text()
        assert "# Canary plan: v1 -> v2" in (promoted / "canary_plan.md").read_text()

        assert (await admin.post("/rollout/rollback", json={"reason": "second thoughts"})).status_code == 200
        (rolled_back,) = await _wait_for_folders(out, "rolled_back")
        assert {p.name for p in rolled_back.iterdir()} == names
        assert "second thoughts" in (rolled_back / "rollout_decision.txt").read_text()
    # keep: 1 -> only the newest rollout's folder remains, and no temporary folder is left behind.
    assert [p.name for p in out.iterdir()] == [rolled_back.name]


class _Watch(logging.Handler):
    """Sets ``seen`` when a record containing ``text`` is logged (from any thread)."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.ERROR)
        self.text = text
        self.loop = asyncio.get_running_loop()
        self.seen = asyncio.Event()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        if self.text in record.getMessage():
            self.loop.call_soon_threadsafe(self.seen.set)


async def test_an_unwritable_reports_dir_is_logged_and_the_rollout_goes_on(
    proxy_factory: Any, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the reports folder should be")
    proxy = await proxy_factory(reports={"dir": str(blocker / "reports")})
    watch = _Watch("not written")
    logger = logging.getLogger("rollguard.artifacts")
    logger.addHandler(watch)
    try:
        async with proxy.admin_client() as admin:
            assert (await admin.post("/rollout/start")).status_code == 200
            assert (await admin.post("/rollout/rollback", json={"reason": "bad"})).status_code == 200
            await asyncio.wait_for(watch.seen.wait(), 10)
            status = (await admin.get("/status")).json()["rollout"]
            assert status["phase"] == "rolled_back"
            # Still served live, whatever happened on disk.
            assert (await admin.get("/reports/staging_report.json")).status_code == 200
    finally:
        logger.removeHandler(watch)
    assert any(str(blocker) in m for m in watch.messages), watch.messages
    assert blocker.read_text().startswith("a file")


def test_reports_dir_defaults_beside_the_state_file(tmp_path: Path) -> None:
    config = load_config(
        write_config(tmp_path, config_doc(tmp_path, "http://127.0.0.1:1", "http://127.0.0.1:2"))
    )
    assert config.reports_dir == config.state.path.parent / "reports"
    assert (config.reports.keep, config.reports.samples) == (20, 5)
    doc = config_doc(tmp_path, "http://127.0.0.1:1", "http://127.0.0.1:2", reports={"dir": "out/reports"})
    assert load_config(write_config(tmp_path, doc)).reports_dir == tmp_path / "out" / "reports"


@pytest.mark.parametrize(
    ("reports", "path", "words"),
    [
        ({"keep": 0}, "reports.keep", ["minimum of 1"]),
        ({"samples": 51}, "reports.samples", ["maximum of 50"]),
        ({"samples": "5"}, "reports.samples", ["integer"]),
        ({"dir": ""}, "reports.dir", ["non-empty"]),
        ({"folder": "x"}, "reports", ["unknown key", "'folder'"]),
    ],
)
def test_bad_reports_config_names_the_key_path(
    tmp_path: Path, reports: dict[str, Any], path: str, words: list[str]
) -> None:
    doc = copy.deepcopy(config_doc(tmp_path, "http://127.0.0.1:1", "http://127.0.0.1:2", reports=reports))
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, doc))
    assert info.value.path == path, str(info.value)
    for word in words:
        assert word in info.value.message, info.value.message


def test_sample_slots_stay_bounded_and_stay_uniform() -> None:
    draw = random.Random(7).random
    counts = [0] * 10
    for _ in range(2000):
        slots = SampleSlots(5)
        for i in range(10):
            slot = slots.slot(draw)
            if slot is not None:
                slots.put(slot, {"i": i})
        assert len(slots.kept) == 5 and slots.seen == 10
        for item in slots.kept:
            counts[item["i"]] += 1
    # Each of the 10 items is kept with probability 1/2: 1000 of 2000 trials, within a generous margin.
    assert all(850 < c < 1150 for c in counts), counts
    big = SampleSlots(3)
    for i in range(100_000):
        slot = big.slot(draw)
        if slot is not None:
            big.put(slot, {"i": i})
    assert len(big.kept) == 3 and big.seen == 100_000
