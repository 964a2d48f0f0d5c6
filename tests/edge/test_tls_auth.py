"""mTLS identity as a data-plane credential, end to end: a verified client certificate names the client,
the route's allow list decides, and the access log carries the name."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trustme

from proxy.config.load import load_config
from tests.helpers.config import config_doc, write_config
from tests.helpers.pki import Files, client_context, issue, write_ca, write_leaf
from tests.helpers.proxy_runner import start_proxy
from tests.helpers.traffic import VALID_BODY


def mtls_doc(
    tmp_path: Path, models: Any, server: Files, client_ca: trustme.CA, peers: list[dict[str, Any]]
) -> dict[str, Any]:
    """A data plane on TLS that verifies client certificates from ``client_ca`` when presented, and
    needs a client on every route; ``peers`` name the certificate identities it knows."""
    return config_doc(
        tmp_path,
        models.baseline.url,
        models.candidate.url,
        tls={
            "cert": str(server.cert),
            "key": str(server.key),
            "client_ca": str(write_ca(client_ca, server.cert.parent, "clients")),
            "client_auth": "optional",
        },
        auth={"required": True, "peers": peers},
    )


async def test_a_verified_client_certificate_is_a_credential(tmp_path: Path, models: Any) -> None:
    folder = tmp_path / "pki"
    server_ca, client_ca = trustme.CA(), trustme.CA()
    server = write_leaf(server_ca.issue_cert("127.0.0.1"), folder, "server")
    scorer = issue(client_ca, folder, "scorer", common_name="svc-scorer", uris=("spiffe://ex.org/scorer",))
    reader = issue(client_ca, folder, "reader", common_name="svc-reader", dns=("reader.internal",))
    nobody = issue(client_ca, folder, "nobody", common_name="svc-unknown")
    doc = mtls_doc(
        tmp_path,
        models,
        server,
        client_ca,
        [
            {"name": "scorer", "roles": ["scorer"], "peer": "spiffe://ex.org/scorer"},
            {"name": "reader", "roles": ["reader"], "peer": "reader.internal"},
        ],
    )
    doc["routes"][0]["auth"] = {"roles": ["scorer"]}
    proxy, stop, task = await start_proxy(load_config(write_config(tmp_path, doc)))
    try:

        async def post(cert: Any, rid: str) -> httpx.Response:
            ctx = client_context(server_ca, cert)
            async with httpx.AsyncClient(base_url=proxy.data_url, verify=ctx) as c:
                return await c.post("/v1/infer", json=VALID_BODY, headers={"x-request-id": rid})

        assert (await post(scorer, "scorer-1")).status_code == 200
        forbidden = await post(reader, "reader-1")
        assert forbidden.status_code == 403
        assert forbidden.headers["content-type"] == "application/problem+json"
        for cert, rid in ((nobody, "nobody-1"), (None, "bare-1")):
            refused = await post(cert, rid)
            assert refused.status_code == 401, rid
            assert refused.headers["www-authenticate"].startswith("Bearer")
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
    lines = [orjson.loads(x) for x in (tmp_path / "access.log").read_bytes().splitlines()]
    by_id = {x["request_id"]: x for x in lines if x.get("log") == "access"}
    assert by_id["scorer-1"]["client_name"] == "scorer"
    assert by_id["reader-1"]["client_name"] == "reader" and by_id["reader-1"]["status"] == 403
    assert "client_name" not in by_id["nobody-1"] and "client_name" not in by_id["bare-1"]


async def test_a_certificate_from_another_ca_never_reaches_authorization(tmp_path: Path, models: Any) -> None:
    folder = tmp_path / "pki"
    server_ca, client_ca, other_ca = trustme.CA(), trustme.CA(), trustme.CA()
    server = write_leaf(server_ca.issue_cert("127.0.0.1"), folder, "server")
    # The same identity as a configured peer, but signed by a CA nobody trusts.
    forged = issue(other_ca, folder, "forged", common_name="svc", uris=("spiffe://ex.org/scorer",))
    doc = mtls_doc(
        tmp_path, models, server, client_ca, [{"name": "s", "roles": ["r"], "peer": "spiffe://ex.org/scorer"}]
    )
    proxy, stop, task = await start_proxy(load_config(write_config(tmp_path, doc)))
    try:
        ctx = client_context(server_ca, forged)
        async with httpx.AsyncClient(base_url=proxy.data_url, verify=ctx) as c:
            with pytest.raises(httpx.TransportError):
                await c.post("/v1/infer", json=VALID_BODY)
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
