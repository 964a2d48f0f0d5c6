"""The admin listener: auth matrix, weights with revisions, If-Match races, problem+json, CLI."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.config import config_doc, write_config
from tests.helpers.faulty_upstream import refused_url
from tests.helpers.metrics import metric_samples, sample
from tests.helpers.tokens import OPERATOR_TOKEN, VIEWER_TOKEN

# (method, path, body, minimum role); None = open to anyone.
ENDPOINTS = [
    ("GET", "/healthz", None, None),
    ("GET", "/readyz", None, None),
    ("GET", "/metrics", None, None),
    ("GET", "/status", None, "viewer"),
    ("GET", "/decisions", None, "viewer"),
    ("GET", "/history", None, "viewer"),
    ("PUT", "/weights", {"canary": 1}, "operator"),
]
CALLERS = {
    "none": None,
    "wrong": "not-a-configured-token",
    "viewer": VIEWER_TOKEN,
    "operator": OPERATOR_TOKEN,
}
RANK = {None: 0, "viewer": 1, "operator": 2}


@pytest.mark.parametrize(("method", "path", "body", "needs"), ENDPOINTS)
async def test_auth_matrix(proxy: Any, method: str, path: str, body: Any, needs: str | None) -> None:
    for caller, token in CALLERS.items():
        async with proxy.admin_client(token) as admin:
            r = await admin.request(method, path, json=body)
        caller_rank = RANK.get(caller, 0) if caller in ("viewer", "operator") else 0
        if needs is None or caller_rank >= RANK[needs]:
            assert r.status_code == 200, (caller, path, r.text)
        elif caller_rank == 0:
            assert r.status_code == 401, (caller, path)
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert r.headers["content-type"] == "application/problem+json"
        else:
            assert r.status_code == 403, (caller, path)
            assert r.json()["status"] == 403


async def test_bearer_scheme_is_required(proxy: Any) -> None:
    async with httpx.AsyncClient(base_url=proxy.admin_url) as c:
        basic = await c.get("/status", headers={"authorization": f"Basic {OPERATOR_TOKEN}"})
        raw = await c.get("/status", headers={"authorization": OPERATOR_TOKEN})
    assert basic.status_code == raw.status_code == 401


async def test_put_weights_answers_new_state_with_revision(proxy: Any) -> None:
    async with proxy.admin_client() as admin:
        before = (await admin.get("/status")).json()["rollout"]
        r = await admin.put("/weights", json={"canary": 12.34, "reason": "manual check"})
        assert r.status_code == 200
        doc = r.json()
        assert doc["weight"] == 12.34 and doc["weights"] == {"baseline": 87.66, "candidate": 12.34}
        assert doc["revision"] == before["revision"] + 1
        assert r.headers["etag"] == f'"{doc["revision"]}"'
        assert doc["phase"] == "paused"
        decisions = (await admin.get("/decisions")).json()["decisions"]
    last = decisions[-1]
    assert last["actor"] == "ops" and last["action"] == "set_weight" and last["reason"] == "manual check"
    assert last["before"]["weight"] == 0 and last["weight"] == 12.34
    assert OPERATOR_TOKEN not in str(decisions)
    samples = await metric_samples(proxy.admin_url)
    assert sample(samples, "rollguard_canary_weight_percent") == 12.34
    assert sample(samples, "rollguard_rollout_phase", phase="paused") == 1
    assert sample(samples, "rollguard_rollout_phase", phase="idle") == 0


@pytest.mark.parametrize(
    ("body", "status", "names"),
    [
        (b"{not json", 400, ""),
        (b"[1, 2]", 422, ""),
        (b'{"canary": 101}', 422, "canary"),
        (b'{"canary": -1}', 422, "canary"),
        (b'{"canary": "5"}', 422, "canary"),
        (b'{"canary": true}', 422, "canary"),
        (b'{"canary": null}', 422, "canary"),
        (b'{"canary": 1.234}', 422, "canary"),
        (b'{"canary": NaN}', 400, ""),
        (b'{"canary": 1e999}', 400, ""),
        (b"{}", 422, "canary"),
        (b'{"canary": 5, "reason": 7}', 422, "reason"),
        (b'{"canary": 5, "extra": 1}', 422, "extra"),
    ],
)
async def test_bad_weight_bodies(proxy: Any, body: bytes, status: int, names: str) -> None:
    async with proxy.admin_client() as admin:
        r = await admin.put("/weights", content=body, headers={"content-type": "application/json"})
        after = (await admin.get("/status")).json()["rollout"]
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert names in r.json()["detail"]
    assert after["revision"] == 1 and after["weight"] == 0  # nothing changed


async def test_if_match_race_has_exactly_one_winner(proxy: Any) -> None:
    async with proxy.admin_client() as admin:
        etag = (await admin.get("/status")).headers["etag"]
        results = await asyncio.gather(
            *(admin.put("/weights", json={"canary": w}, headers={"if-match": etag}) for w in (5, 10, 15, 20))
        )
        codes = sorted(r.status_code for r in results)
        assert codes == [200, 412, 412, 412]
        winner = next(r for r in results if r.status_code == 200).json()
        loser = next(r for r in results if r.status_code == 412)
        assert loser.headers["etag"] == f'"{winner["revision"]}"'
        status = (await admin.get("/status")).json()["rollout"]
        assert status["weight"] == winner["weight"]
        stale = await admin.put("/weights", json={"canary": 50}, headers={"if-match": etag})
        assert stale.status_code == 412
        fresh = await admin.put(
            "/weights", json={"canary": 50}, headers={"if-match": f'"{winner["revision"]}"'}
        )
        assert fresh.status_code == 200
        bad = await admin.put("/weights", json={"canary": 50}, headers={"if-match": "abc"})
        assert bad.status_code == 400


async def test_unknown_path_and_wrong_method_are_problem_json(proxy: Any) -> None:
    async with proxy.admin_client() as admin:
        missing = await admin.get("/nope")
        wrong = await admin.post("/weights", json={"canary": 5})
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    assert wrong.status_code == 405 and "PUT" in wrong.headers["allow"]


async def test_data_plane_and_admin_are_separate(proxy: Any) -> None:
    async with httpx.AsyncClient(base_url=proxy.data_url) as data:
        r = await data.get("/status")
    # /status on the data plane is just a path: forwarded to the baseline, never the admin API.
    assert r.headers["x-rollguard-version"] == "v1"
    assert "rollout" not in r.json()


async def test_readyz_needs_the_baseline(proxy_factory: Any, models: Any) -> None:
    from tests.helpers.faulty_upstream import refused_url

    down = await proxy_factory(
        upstreams={
            "baseline": {"url": refused_url(), "version": "v1"},
            "candidate": {"url": models.candidate.url, "version": "v2"},
        }
    )
    async with httpx.AsyncClient(base_url=down.admin_url) as c:
        r = await c.get("/readyz")
        live = await c.get("/healthz")
    assert r.status_code == 503 and "baseline" in r.json()["detail"]
    assert live.status_code == 200


async def test_readyz_ignores_the_candidate(proxy_factory: Any, models: Any) -> None:
    from tests.helpers.faulty_upstream import refused_url

    proxy = await proxy_factory(
        upstreams={
            "baseline": {"url": models.baseline.url, "version": "v1"},
            "candidate": {"url": refused_url(), "version": "v2"},
        }
    )
    async with httpx.AsyncClient(base_url=proxy.admin_url) as c:
        assert (await c.get("/readyz")).status_code == 200


def _cli(proxy: Any, *args: str, token: str | None = OPERATOR_TOKEN) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "ROLLGUARD_TOKEN"}
    if token:
        env["ROLLGUARD_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args, "--admin", proxy.admin_url],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )


async def test_cli_status_and_weights_set(proxy: Any) -> None:
    res = await asyncio.to_thread(_cli, proxy, "weights", "set", "7.5", "--reason", "from the cli")
    assert res.returncode == 0, res.stderr
    assert "7.5%" in res.stdout
    status = await asyncio.to_thread(_cli, proxy, "status", "--json", token=VIEWER_TOKEN)
    assert status.returncode == 0, status.stderr
    assert '"weight": 7.5' in status.stdout
    pretty = await asyncio.to_thread(_cli, proxy, "status", token=VIEWER_TOKEN)
    assert "7.5%" in pretty.stdout and "candidate" in pretty.stdout
    weak = await asyncio.to_thread(_cli, proxy, "weights", "set", "9", token=VIEWER_TOKEN)
    assert weak.returncode == 4 and "403" in weak.stderr  # unauthorized for the change
    none = await asyncio.to_thread(_cli, proxy, "status", token=None)
    assert none.returncode == 4 and "ROLLGUARD_TOKEN" in none.stderr
    out_of_range = await asyncio.to_thread(_cli, proxy, "weights", "set", "150")
    assert out_of_range.returncode == 5 and "422" in out_of_range.stderr  # refused by the server


async def test_cli_wait_returns_as_the_rollout_ends_with_distinct_codes(proxy_factory: Any) -> None:
    proxy = await proxy_factory(canary={"weight": 0, "shadow_samples": 0, "interval": "30s"})
    # Nothing moves while idle: the bounded wait times out (6), naming what it waited for.
    idle = await asyncio.to_thread(_cli, proxy, "wait", "--for", "promoted", "--timeout", "300ms")
    assert idle.returncode == 6 and "not promoted within 0.3s" in idle.stderr, idle.stderr
    assert "phase idle" in idle.stdout
    # Started: the first canary step is reached at once, so step=1 holds now.
    assert (await asyncio.to_thread(_cli, proxy, "rollout", "start")).returncode == 0
    step = await asyncio.to_thread(_cli, proxy, "wait", "--for", "step=1", "--timeout", "5s")
    assert step.returncode == 0, step.stderr
    # Waiting for a promotion while an operator rolls back: the wait ends at once, the other way (7).
    waiting = asyncio.create_task(
        asyncio.to_thread(_cli, proxy, "wait", "--for", "promoted", "--timeout", "20s", "--interval", "100ms")
    )
    rolled = await asyncio.to_thread(_cli, proxy, "rollout", "rollback", "--reason", "bad latency")
    assert rolled.returncode == 0, rolled.stderr
    lost = await waiting
    assert lost.returncode == 7, (lost.stdout, lost.stderr)
    assert "the rollout ended rolled_back (bad latency), not promoted" in lost.stderr
    assert "phase rolled_back" in lost.stdout  # whenever its first look came, it saw the end
    done = await asyncio.to_thread(_cli, proxy, "wait", "--for", "rolled_back", "--json")
    assert done.returncode == 0 and '"phase": "rolled_back"' in done.stdout
    # Refused by the server's rules (409: start while rolled back) is 5; bad usage is 2.
    again = await asyncio.to_thread(_cli, proxy, "rollout", "start")
    assert again.returncode == 5 and "409" in again.stderr
    bad = await asyncio.to_thread(_cli, proxy, "wait", "--for", "step=0")
    assert bad.returncode == 2 and "step=N (N >= 1)" in bad.stderr
    # No request log on stderr: a client command prints its answer only.
    assert "HTTP Request" not in lost.stderr + done.stderr


async def test_cli_unreachable_is_its_own_code() -> None:
    class Nowhere:
        admin_url = refused_url()

    res = await asyncio.to_thread(_cli, Nowhere(), "status")
    assert res.returncode == 3 and "cannot reach the admin API" in res.stderr


async def test_cli_reload_reports_what_changed(proxy_factory: Any, models: Any, tmp_path: Path) -> None:
    proxy = await proxy_factory()
    doc = config_doc(
        tmp_path, models.baseline.url, models.candidate.url, canary={"gates": {"error_rate": 0.02}}
    )
    write_config(tmp_path, doc)
    res = await asyncio.to_thread(_cli, proxy, "reload")
    assert res.returncode == 0, res.stderr
    assert "config reloaded (generation 2): canary" in res.stdout, res.stdout  # the start was the first
    doc["canary"]["steps"] = [1, 120]
    write_config(tmp_path, doc)
    bad = await asyncio.to_thread(_cli, proxy, "reload")
    assert bad.returncode == 5 and "canary.steps[1]: 120 is greater than the maximum of 100" in bad.stderr


async def test_failed_authentications_are_throttled_per_address(proxy: Any) -> None:
    async with httpx.AsyncClient(base_url=proxy.admin_url, headers={"authorization": "Bearer guess"}) as c:
        codes = [(await c.get("/status")).status_code for _ in range(10)]
        assert codes == [401] * 10
        blocked = await c.get("/status")
        assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) >= 1
        # ...but only failed attempts are throttled: the right token from this very address is accepted
        # (a flood of bad tokens from a shared address must never lock an operator out of a rollback)...
        assert (
            await c.get("/status", headers={"authorization": f"Bearer {VIEWER_TOKEN}"})
        ).status_code == 200
        assert (
            await c.post(
                "/rollout/rollback",
                json={"reason": "drill"},
                headers={"authorization": f"Bearer {OPERATOR_TOKEN}"},
            )
        ).status_code in (200, 409)
        assert (await c.get("/status")).status_code == 429  # while the bad token stays throttled
    # ...while another address is unaffected.
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    async with httpx.AsyncClient(
        base_url=proxy.admin_url, transport=transport, headers={"authorization": f"Bearer {VIEWER_TOKEN}"}
    ) as other:
        assert (await other.get("/status")).status_code == 200
    async with httpx.AsyncClient(base_url=proxy.admin_url) as anyone:
        assert (await anyone.get("/healthz")).status_code == 200  # unauthenticated endpoints stay open


async def test_metrics_can_require_the_viewer_role(proxy_factory: Any) -> None:
    proxy = await proxy_factory(
        admin={
            "listen": "127.0.0.1:0",
            "metrics_auth": True,
            "tokens": [{"name": "grafana", "role": "viewer", "token": "env:RG_TEST_VIEWER_TOKEN"}],
        }
    )
    async with httpx.AsyncClient(base_url=proxy.admin_url) as c:
        assert (await c.get("/metrics")).status_code == 401
        ok = await c.get("/metrics", headers={"authorization": f"Bearer {VIEWER_TOKEN}"})
    assert ok.status_code == 200 and "rollguard_canary_weight_percent" in ok.text
