"""The OpenAPI document against the API it describes, through a real admin listener.

Every route the admin app serves is documented and every documented operation is served; every answer
below, success or error, has a status the document lists for its operation, exactly one of the media types
it lists, the headers it promises, and a body its schema accepts (jsonschema, draft 2020-12). The answers
are taken in every state that changes their shape: idle, a hand-set weight, a canary with judged windows,
the shadow phase with mirrored evidence, a rollback, and the failures of each request rule.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from prometheus_client import CollectorRegistry

from proxy.admin.api import AdminApi
from proxy.admin.openapi import document as openapi_document
from proxy.config.load import load_config
from proxy.reports.artifacts import ARTIFACTS
from proxy.rollout.state import initial
from proxy.rollout.store import MemoryStateStore
from tests.helpers.config import config_doc, write_config
from tests.helpers.faulty_upstream import refused_url
from tests.helpers.models import Models
from tests.helpers.proxy_runner import RunningProxy
from tests.helpers.tokens import OPERATOR_TOKEN, VIEWER_TOKEN
from tests.helpers.traffic import drive_traffic

# Windows close every 300 ms and never gather enough to decide: each one is a HOLD with its gates and needs.
HOLDING_CANARY = {"weight": 0, "steps": [10, 50, 100], "interval": "300ms", "min_samples": 1_000_000}


def _template(doc: dict[str, Any], path: str) -> str:
    """The documented path ``path`` is an instance of: itself when listed, else the template it fits."""
    if path in doc["paths"]:
        return path
    for template in doc["paths"]:
        if "{" in template and re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), path):
            return template
    raise AssertionError(f"{path} is not documented")


class Conformance:
    """Checks answers against the document the proxy serves, and remembers what it has checked."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.checked: set[tuple[str, str, int]] = set()

    def schema(self, schema: dict[str, Any]) -> jsonschema.protocols.Validator:
        root = {**schema, "components": self.doc["components"]}
        return jsonschema.Draft202012Validator(
            root, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
        )

    def __call__(self, r: httpx.Response) -> httpx.Response:
        method, path = r.request.method.lower(), r.request.url.path
        template = _template(self.doc, path)
        operation = self.doc["paths"][template].get(method)
        assert operation is not None, f"{method.upper()} {template} is not documented"
        where = f"{method.upper()} {path} -> {r.status_code}"
        answer = operation["responses"].get(str(r.status_code))
        assert answer is not None, f"{where}: not among {sorted(operation['responses'])}: {r.text[:300]}"
        for name, header in answer.get("headers", {}).items():
            value = r.headers.get(name)
            assert value is not None or not header.get("required"), f"{where}: no {name} header"
            if value is not None:
                typed: Any = int(value) if header["schema"].get("type") == "integer" else value
                self.schema(header["schema"]).validate(typed)
        content = answer.get("content")
        if content is None:
            assert not r.content, f"{where}: a body the document does not describe"
        else:
            media = r.headers.get("content-type")
            assert media in content, f"{where}: {media} is not among {sorted(content)}"
            body = r.json() if media.split(";")[0].endswith("json") else r.text
            errors = sorted(self.schema(content[media]["schema"]).iter_errors(body), key=str)
            assert not errors, f"{where}: " + "; ".join(
                f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5]
            )
        self.checked.add((method, template, r.status_code))
        return r


@pytest.fixture
async def conform(proxy: RunningProxy) -> Conformance:
    async with httpx.AsyncClient(base_url=proxy.admin_url) as c:
        return Conformance((await c.get("/openapi.json")).json())


async def _until(
    fetch: Callable[[], Awaitable[httpx.Response]], ok: Callable[[dict[str, Any]], bool]
) -> httpx.Response:
    async with asyncio.timeout(30):
        while True:
            r = await fetch()
            if ok(r.json()):
                return r
            await asyncio.sleep(0.1)


def test_every_route_is_documented_and_every_operation_is_routed(tmp_path: Path, models: Models) -> None:
    config = load_config(
        write_config(tmp_path, config_doc(tmp_path, models.baseline.url, models.candidate.url))
    )
    store = MemoryStateStore(initial("v2", 0, "2026-01-01T00:00:00Z"))
    app = AdminApi(config=config, store=store, pools={}, registry=CollectorRegistry()).app()
    doc = openapi_document(metrics_auth=False)
    routes = [(r.path_regex, {m.lower() for m in r.methods or ()} - {"head"}) for r in app.routes]
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    for path, method in documented:
        assert any(regex.match(path) and method in methods for regex, methods in routes), (method, path)
    for regex, methods in routes:
        for method in methods:
            assert any(regex.match(p) and m == method for p, m in documented), (method, regex.pattern)
    # Every report is documented under its own name, with the media type it is served with.
    assert {f"/reports/{name}" for name in ARTIFACTS} <= set(doc["paths"])


async def test_open_endpoints_answer_as_documented(proxy: RunningProxy, conform: Conformance) -> None:
    async with httpx.AsyncClient(base_url=proxy.admin_url) as c:
        for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/ui", "/ui/", "/ui/bootstrap.json"):
            conform(await c.get(path))
        asset = conform(await c.get("/ui/assets/app.js"))
        conform(await c.get("/ui/assets/favicon.svg"))
        same = conform(await c.get("/ui/assets/app.js", headers={"if-none-match": asset.headers["etag"]}))
        assert same.status_code == 304
        assert conform(await c.get("/ui/assets/index.html")).status_code == 404
    # The served document is the one built here, and it is valid OpenAPI as schemathesis reads it.
    assert conform.doc == openapi_document(metrics_auth=False)


async def test_reads_answer_as_documented(proxy: RunningProxy, conform: Conformance) -> None:
    async with proxy.admin_client(VIEWER_TOKEN) as viewer:
        status = conform(await viewer.get("/status"))
        assert status.headers["etag"] == f'"{status.json()["rollout"]["revision"]}"'
        conform(await viewer.get("/decisions"))
        conform(await viewer.get("/decisions", params={"limit": 5}))
        conform(await viewer.get("/history"))
        for name in ARTIFACTS:
            assert conform(await viewer.get(f"/reports/{name}")).status_code == 200
        assert conform(await viewer.get("/reports/nope.json")).status_code == 404
        for limit in ("0", "10001", "five", " 5", "+5", "١٢"):
            r = conform(await viewer.get("/decisions", params={"limit": limit}))
            assert r.status_code == 422 and "limit" in r.json()["detail"], limit


async def test_authentication_answers_as_documented(proxy: RunningProxy, conform: Conformance) -> None:
    async with httpx.AsyncClient(base_url=proxy.admin_url) as c:
        assert conform(await c.get("/status")).status_code == 401
        weak = await c.put(
            "/weights", json={"canary": 1}, headers={"authorization": f"Bearer {VIEWER_TOKEN}"}
        )
        assert conform(weak).status_code == 403
        twice = await c.get(
            "/status",
            headers=[
                ("authorization", f"Bearer {VIEWER_TOKEN}"),
                ("authorization", f"Bearer {OPERATOR_TOKEN}"),
            ],
        )
        assert conform(twice).status_code == 400
        codes = [conform(await c.get("/history", headers={"authorization": "Bearer guess"})).status_code]
        while codes[-1] == 401 and len(codes) < 20:
            codes.append(conform(await c.post("/rollout/pause")).status_code)
        assert codes[-1] == 429  # the throttle, with its Retry-After


async def test_mutations_and_their_refusals_answer_as_documented(
    proxy: RunningProxy, conform: Conformance
) -> None:
    async with proxy.admin_client() as ops:
        etag = (await ops.get("/status")).headers["etag"]
        moved = conform(
            await ops.put("/weights", json={"canary": 5, "reason": "by hand"}, headers={"if-match": etag})
        )
        assert moved.status_code == 200 and moved.headers["etag"] != etag
        stale = conform(await ops.put("/weights", json={"canary": 6}, headers={"if-match": etag}))
        assert stale.status_code == 412 and stale.headers["etag"] == moved.headers["etag"]
        for bad_tag in (b"abc", b'"1', b"1, 2", b"9" * 19, "²".encode("latin-1")):
            r = await ops.put("/weights", json={"canary": 6}, headers={"if-match": bad_tag})
            assert conform(r).status_code == 400, bad_tag
        assert (await ops.put("/weights", json={"canary": 6}, headers={"if-match": "*"})).status_code == 200
        assert conform(await ops.put("/weights", content=b"{nope")).status_code == 400
        for body in (
            {},
            {"canary": 101},
            {"canary": 0.001},
            {"canary": 5, "extra": 1},
            {"canary": 5, "reason": "x" * 501},
        ):
            r = conform(await ops.put("/weights", json=body))
            assert r.status_code == 422, body
        assert conform(await ops.put("/shadow", json={"sample": 0.5})).status_code == 200
        assert conform(await ops.put("/shadow", json={"sample": 2})).status_code == 422
        assert (
            conform(await ops.post("/rollout/pause")).status_code == 409
        )  # paused by hand: not a phase to pause
        assert conform(await ops.post("/rollout/start", json={"why": "?"})).status_code == 422
        assert conform(await ops.post("/rollout/rollback", json={"reason": "drill"})).status_code == 200
        assert conform(await ops.put("/weights", json={"canary": 1})).status_code == 409
        assert conform(await ops.post("/rollout/rearm")).status_code == 200
        assert conform(await ops.post("/config/reload")).status_code == 200
        assert conform(await ops.post("/config/reload", json={"now": True})).status_code == 422
        conform(await ops.get("/status"))  # with the reload it records
        log = conform(await ops.get("/decisions"))
    assert {"set_weight", "set_shadow_sample", "ROLLBACK", "rearm", "config_reload"} <= {
        e["action"] for e in log.json()["decisions"]
    }


async def test_a_judged_canary_answers_as_documented(proxy_factory: Any) -> None:
    proxy = await proxy_factory(canary={**HOLDING_CANARY, "shadow_samples": 0})
    async with httpx.AsyncClient(base_url=proxy.admin_url) as c:
        conform = Conformance((await c.get("/openapi.json")).json())
    stop = asyncio.Event()
    traffic = asyncio.create_task(drive_traffic(proxy.data_url, stop, rps=200))
    try:
        async with proxy.admin_client() as ops:
            assert conform(await ops.post("/rollout/start", json={"reason": "ship v2"})).status_code == 200
            judged = await _until(
                lambda: ops.get("/status"),
                lambda d: d["controller"]["gates"] and d["controller"]["needs"] is not None,
            )
            conform(judged)
            assert conform(await ops.post("/rollout/start")).status_code == 409  # not from idle
            conform(await ops.post("/rollout/pause"))
            conform(await ops.post("/rollout/resume"))
            conform(await ops.post("/rollout/promote"))
            conform(await ops.get("/status"))
            log = conform(await ops.get("/decisions"))
            conform(await ops.get("/history"))
            for name in ARTIFACTS:
                conform(await ops.get(f"/reports/{name}"))
    finally:
        stop.set()
        await traffic
    assert any(e["actor"] == "controller" and e["gates"] for e in log.json()["decisions"])


async def test_the_shadow_phase_answers_as_documented(proxy_factory: Any) -> None:
    proxy = await proxy_factory(
        canary={**HOLDING_CANARY, "shadow_samples": 1_000_000}, shadow={"sample": 1.0}
    )
    async with httpx.AsyncClient(base_url=proxy.admin_url) as c:
        conform = Conformance((await c.get("/openapi.json")).json())
    stop = asyncio.Event()
    traffic = asyncio.create_task(drive_traffic(proxy.data_url, stop, rps=200))
    try:
        async with proxy.admin_client() as ops:
            assert conform(await ops.post("/rollout/start")).status_code == 200
            mirrored = await _until(
                lambda: ops.get("/status"),
                lambda d: d["controller"]["gates"] and d["controller"]["window"]["mirror"]["requests"] > 0,
            )
            conform(mirrored)
            conform(await ops.get("/reports/shadow_eval.json"))
            conform(await ops.get("/history"))
    finally:
        stop.set()
        await traffic


async def test_readiness_failure_answers_as_documented(proxy_factory: Any, models: Models) -> None:
    down = await proxy_factory(
        upstreams={
            "baseline": {"url": refused_url(), "version": "v1"},
            "candidate": {"url": models.candidate.url, "version": "v2"},
        }
    )
    async with httpx.AsyncClient(base_url=down.admin_url) as c:
        conform = Conformance((await c.get("/openapi.json")).json())
        assert conform(await c.get("/readyz")).status_code == 503


async def test_metrics_behind_a_token_are_documented_so(proxy_factory: Any) -> None:
    proxy = await proxy_factory(
        admin={
            "listen": "127.0.0.1:0",
            "metrics_auth": True,
            "tokens": [{"name": "grafana", "role": "viewer", "token": "env:RG_TEST_VIEWER_TOKEN"}],
        }
    )
    async with httpx.AsyncClient(base_url=proxy.admin_url) as c:
        conform = Conformance((await c.get("/openapi.json")).json())
        assert conform(await c.get("/metrics")).status_code == 401
        ok = await c.get("/metrics", headers={"authorization": f"Bearer {VIEWER_TOKEN}"})
        assert conform(ok).status_code == 200
    open_doc = openapi_document(metrics_auth=False)["paths"]["/metrics"]["get"]
    assert "security" not in open_doc and "401" not in open_doc["responses"]


async def test_every_documented_operation_is_served(proxy: RunningProxy, conform: Conformance) -> None:
    """Called as documented with an operator token, no operation is missing (404/405) or fails (5xx)."""
    async with proxy.admin_client() as admin:
        for path, ops in conform.doc["paths"].items():
            for method in ops:
                url = path.replace("{name}", "app.js" if path.startswith("/ui/") else "unknown.txt")
                r = await admin.request(method.upper(), url)
                assert r.status_code < 500 and r.status_code != 405, (method, url, r.status_code)
                assert r.status_code != 404 or path == "/reports/{name}", (method, url)
