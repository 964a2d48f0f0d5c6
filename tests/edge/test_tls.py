"""TLS on the listeners: HTTPS on the data plane and the admin listener, mTLS, the scope's TLS extension."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
import uvicorn
import uvloop

from proxy.app.serve import bind, bound
from proxy.config.model import LimitsConfig, Listen, ListenerTls
from proxy.config.tls_contexts import ServerTls
from proxy.edge.listener import ListenerGuard, ListenerLimits
from tests.helpers.pki import Files, client_context, issue, write_ca, write_leaf
from tests.helpers.tokens import OPERATOR_TOKEN
from tests.helpers.traffic import VALID_BODY


@dataclass
class Pki:
    """A server CA with a certificate for 127.0.0.1, and a client CA with a workload's certificate."""

    folder: Path
    server_ca: trustme.CA
    server: Files
    client_ca: trustme.CA
    client_ca_file: Path
    client: Files  # CN=svc-a, DNS svc-a.internal, URI spiffe://example.org/ns/prod/svc-a
    stranger: Files  # the same names, from a CA nobody configured


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    folder = tmp_path / "pki"
    server_ca, client_ca, other_ca = trustme.CA(), trustme.CA(), trustme.CA()
    names: dict[str, Any] = {
        "common_name": "svc-a",
        "dns": ("svc-a.internal",),
        "uris": ("spiffe://example.org/ns/prod/svc-a",),
    }
    return Pki(
        folder=folder,
        server_ca=server_ca,
        server=write_leaf(server_ca.issue_cert("127.0.0.1", "localhost"), folder, "server"),
        client_ca=client_ca,
        client_ca_file=write_ca(client_ca, folder, "clients-ca"),
        client=issue(client_ca, folder, "svc-a", organization="Example", **names),
        stranger=issue(other_ca, folder, "stranger", **names),
    )


def tls_block(files: Files, **extra: Any) -> dict[str, Any]:
    return {"cert": str(files.cert), "key": str(files.key), **extra}


def admin_block(tls: dict[str, Any]) -> dict[str, Any]:
    return {
        "listen": "127.0.0.1:0",
        "tokens": [{"name": "ops", "role": "operator", "token": "env:RG_TEST_OPERATOR_TOKEN"}],
        "tls": tls,
    }


# -- through the proxy -------------------------------------------------------------------------------------


async def test_data_plane_and_admin_listener_serve_https(proxy_factory: Any, pki: Pki) -> None:
    proxy = await proxy_factory(tls=tls_block(pki.server), admin=admin_block(tls_block(pki.server)))
    assert proxy.data_url.startswith("https://") and proxy.admin_url.startswith("https://")
    trust = client_context(pki.server_ca)
    async with httpx.AsyncClient(base_url=proxy.data_url, verify=trust) as c:
        r = await c.post("/v1/infer", json=VALID_BODY, headers={"x-user-id": "u-1"})
    assert r.status_code == 200 and r.headers["x-rollguard-version"] == "v1"
    assert r.json()["model_version"] == "v1"
    headers = {"authorization": f"Bearer {OPERATOR_TOKEN}"}
    async with httpx.AsyncClient(base_url=proxy.admin_url, verify=trust, headers=headers) as c:
        assert (await c.get("/healthz")).status_code == 200
        status = await c.get("/status")
    assert status.status_code == 200 and status.json()["rollout"]["phase"] == "idle"
    # The data plane does not answer plain HTTP on its TLS port.
    async with httpx.AsyncClient(base_url=proxy.data_url.replace("https://", "http://")) as c:
        with pytest.raises(httpx.TransportError):
            await c.get("/healthz")


async def test_a_client_trusting_another_ca_refuses_the_listener(proxy_factory: Any, pki: Pki) -> None:
    proxy = await proxy_factory(tls=tls_block(pki.server))
    async with httpx.AsyncClient(base_url=proxy.data_url, verify=client_context(trustme.CA())) as c:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await c.post("/v1/infer", json=VALID_BODY)


async def test_an_expired_server_certificate_is_refused_by_a_verifying_client(
    proxy_factory: Any, pki: Pki
) -> None:
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    leaf = pki.server_ca.issue_cert(
        "127.0.0.1", not_before=past - datetime.timedelta(days=30), not_after=past
    )
    proxy = await proxy_factory(tls=tls_block(write_leaf(leaf, pki.folder, "expired")))
    async with httpx.AsyncClient(base_url=proxy.data_url, verify=client_context(pki.server_ca)) as c:
        with pytest.raises(httpx.ConnectError, match="certificate has expired"):
            await c.post("/v1/infer", json=VALID_BODY)


async def test_a_certificate_for_another_host_is_refused(proxy_factory: Any, pki: Pki) -> None:
    leaf = pki.server_ca.issue_cert("model.example.com")
    proxy = await proxy_factory(tls=tls_block(write_leaf(leaf, pki.folder, "elsewhere")))
    async with httpx.AsyncClient(base_url=proxy.data_url, verify=client_context(pki.server_ca)) as c:
        with pytest.raises(httpx.ConnectError, match="IP address mismatch|Hostname mismatch"):
            await c.post("/v1/infer", json=VALID_BODY)


async def test_mtls_require_refuses_missing_and_foreign_client_certificates(
    proxy_factory: Any, pki: Pki
) -> None:
    proxy = await proxy_factory(
        tls=tls_block(pki.server, client_ca=str(pki.client_ca_file), client_auth="require")
    )
    for presented in (None, pki.stranger):
        ctx = client_context(pki.server_ca, presented)
        async with httpx.AsyncClient(base_url=proxy.data_url, verify=ctx) as c:
            # TLS 1.3 finishes the client's side of the handshake first: the refusal can surface on read.
            with pytest.raises(httpx.TransportError):
                await c.post("/v1/infer", json=VALID_BODY)
    ctx = client_context(pki.server_ca, pki.client)
    async with httpx.AsyncClient(base_url=proxy.data_url, verify=ctx) as c:
        r = await c.post("/v1/infer", json=VALID_BODY)
    assert r.status_code == 200 and r.headers["x-rollguard-version"] == "v1"


async def test_mtls_on_the_admin_listener(proxy_factory: Any, pki: Pki) -> None:
    admin_tls = tls_block(pki.server, client_ca=str(pki.client_ca_file))  # client_auth: require by default
    proxy = await proxy_factory(admin=admin_block(admin_tls))
    headers = {"authorization": f"Bearer {OPERATOR_TOKEN}"}
    bare = client_context(pki.server_ca)
    async with httpx.AsyncClient(base_url=proxy.admin_url, verify=bare, headers=headers) as c:
        with pytest.raises(httpx.TransportError):
            await c.get("/status")
    ctx = client_context(pki.server_ca, pki.client)
    async with httpx.AsyncClient(base_url=proxy.admin_url, verify=ctx, headers=headers) as c:
        assert (await c.get("/status")).status_code == 200


def _cli(admin_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLGUARD_")}
    env["ROLLGUARD_TOKEN"] = OPERATOR_TOKEN
    return subprocess.run(
        [sys.executable, "-m", "proxy", "status", "--json", "--admin", admin_url, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )


async def test_the_cli_reaches_an_mtls_admin_listener(proxy_factory: Any, pki: Pki) -> None:
    admin_tls = tls_block(pki.server, client_ca=str(pki.client_ca_file))
    proxy = await proxy_factory(admin=admin_block(admin_tls))
    server_ca = write_ca(pki.server_ca, pki.folder, "server-ca")
    with_cert = ("--cacert", str(server_ca), "--cert", str(pki.client.cert), "--key", str(pki.client.key))
    ok = await asyncio.to_thread(_cli, proxy.admin_url, *with_cert)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["rollout"]["phase"] == "idle"
    # Without a client certificate the handshake is refused; without --cacert the listener is not trusted.
    bare = await asyncio.to_thread(_cli, proxy.admin_url, "--cacert", str(server_ca))
    assert bare.returncode == 3 and "cannot reach the admin API" in bare.stderr
    untrusted = await asyncio.to_thread(_cli, proxy.admin_url, *with_cert[2:])
    assert untrusted.returncode == 3 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
    foreign = ("--cacert", str(server_ca), "--cert", str(pki.stranger.cert), "--key", str(pki.stranger.key))
    assert (await asyncio.to_thread(_cli, proxy.admin_url, *foreign)).returncode == 3
    missing = await asyncio.to_thread(_cli, proxy.admin_url, "--cert", str(pki.folder / "nope.crt"))
    assert missing.returncode == 3 and "Traceback" not in missing.stderr


# -- the scope's TLS extension, below the app ------------------------------------------------------------


async def echo_tls(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with the request's TLS extension (or null) and the client's port (which connection)."""
    doc = {"tls": scope.get("extensions", {}).get("tls"), "port": scope["client"][1]}
    body = json.dumps(doc).encode()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def guarded_server(app: Any, tls: ServerTls | None) -> AsyncIterator[str]:
    """The listener's protocol (``ListenerGuard``) on uvicorn with ``tls``: the proxy's own set-up."""
    guard = ListenerGuard(ListenerLimits.from_config(LimitsConfig()), name="data")
    cfg = uvicorn.Config(
        app,
        http=guard.protocol,
        ws="none",
        lifespan="off",
        log_config=None,
        access_log=False,
        ssl_context_factory=(lambda _c, _d: tls.context) if tls is not None else None,
    )
    cfg.load()
    server = uvicorn.Server(cfg)
    server.lifespan = cfg.lifespan_class(cfg)
    sock = bind(Listen(host="127.0.0.1", port=0))
    await server.startup(sockets=[sock])
    try:
        yield f"{'https' if tls else 'http'}://{bound(sock)}"
    finally:
        server.should_exit = True
        await server.shutdown(sockets=[sock])
        sock.close()


def listener_tls(pki: Pki, client_auth: str = "require") -> ListenerTls:
    return ListenerTls(
        at="tls",
        cert=pki.server.cert,
        key=pki.server.key,
        client_ca=pki.client_ca_file,
        client_auth=client_auth,  # type: ignore[arg-type]
    )


async def _identities_reach_the_scope(pki: Pki) -> None:
    async with guarded_server(echo_tls, ServerTls(listener_tls(pki))) as url:
        ctx = client_context(pki.server_ca, pki.client)
        async with httpx.AsyncClient(base_url=url, verify=ctx) as c:
            first, second = (await c.get("/a")).json(), (await c.get("/b")).json()
    assert first["port"] == second["port"]  # one keep-alive connection, both requests carry it
    for doc in (first, second):
        tls = doc["tls"]
        assert tls["client_cert_identities"] == [
            "svc-a",
            "svc-a.internal",
            "spiffe://example.org/ns/prod/svc-a",
        ]
        assert tls["client_cert_name"] == "O=Example,CN=svc-a"
        assert tls["client_cert_error"] is None and tls["server_cert"] is None
        assert tls["tls_version"] in (0x0303, 0x0304)
        assert isinstance(tls["cipher_suite"], int) and tls["cipher_suite"] > 0
        assert tls["client_cert_chain"][0] == ssl.DER_cert_to_PEM_cert(
            ssl.PEM_cert_to_DER_cert(pki.client.cert.read_text())
        )


async def test_verified_client_identities_reach_the_scope(pki: Pki) -> None:
    await _identities_reach_the_scope(pki)


def test_verified_client_identities_reach_the_scope_on_uvloop(pki: Pki) -> None:
    # `rollguard serve` runs on uvloop, whose SSL transport is its own implementation.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_identities_reach_the_scope(pki))


async def test_optional_client_auth_without_a_certificate_and_plain_http(pki: Pki) -> None:
    async with guarded_server(echo_tls, ServerTls(listener_tls(pki, "optional"))) as url:
        async with httpx.AsyncClient(base_url=url, verify=client_context(pki.server_ca)) as c:
            anonymous = (await c.get("/")).json()["tls"]
        async with httpx.AsyncClient(base_url=url, verify=client_context(pki.server_ca, pki.client)) as c:
            named = (await c.get("/")).json()["tls"]
        async with httpx.AsyncClient(base_url=url, verify=client_context(pki.server_ca, pki.stranger)) as c:
            with pytest.raises(httpx.TransportError):  # optional still verifies what is presented
                await c.get("/")
    assert anonymous["client_cert_identities"] == [] and anonymous["client_cert_chain"] == []
    assert anonymous["client_cert_name"] is None and anonymous["tls_version"] in (0x0303, 0x0304)
    assert named["client_cert_identities"][0] == "svc-a"
    async with guarded_server(echo_tls, None) as url, httpx.AsyncClient(base_url=url) as c:
        assert (await c.get("/")).json()["tls"] is None  # plain HTTP: no extension at all


async def test_a_reload_replaces_the_client_ca_rather_than_adding_to_it(pki: Pki, tmp_path: Path) -> None:
    tls = ServerTls(listener_tls(pki))
    async with guarded_server(echo_tls, tls) as url:
        new_ca = trustme.CA()
        newcomer = issue(new_ca, pki.folder, "newcomer", common_name="svc-b")

        async def who(cert: Files) -> str | None:
            async with httpx.AsyncClient(base_url=url, verify=client_context(pki.server_ca, cert)) as c:
                try:
                    return str((await c.get("/")).json()["tls"]["client_cert_identities"][0])
                except httpx.TransportError:
                    return None

        assert await who(pki.client) == "svc-a" and await who(newcomer) is None
        write_ca(new_ca, pki.folder, "clients-ca")  # the rotated bundle: only the new CA
        assert tls.reload()
        assert await who(newcomer) == "svc-b" and await who(pki.client) is None
