"""TLS towards the upstreams: CA pinning, server name, client certificates, and no fall-back to plain HTTP."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from proxy.demo.sample_model import ModelBehavior, RunningModel, start_sample_model
from tests.helpers.faulty_upstream import Fault, FaultyUpstream
from tests.helpers.metrics import metric_samples, sample
from tests.helpers.models import Models
from tests.helpers.pki import Files, issue, write_ca
from tests.helpers.traffic import VALID_BODY


@dataclass
class UpstreamPki:
    folder: Path
    model_ca: trustme.CA  # signs the model servers' certificates
    model_ca_file: Path
    proxy_ca: trustme.CA  # signs rollguard's client certificate
    proxy_client: Files


@pytest.fixture
def upki(tmp_path: Path) -> UpstreamPki:
    folder = tmp_path / "pki"
    model_ca, proxy_ca = trustme.CA(), trustme.CA()
    return UpstreamPki(
        folder=folder,
        model_ca=model_ca,
        model_ca_file=write_ca(model_ca, folder, "models-ca"),
        proxy_ca=proxy_ca,
        proxy_client=issue(
            proxy_ca, folder, "rollguard", common_name="rollguard", dns=("rollguard.internal",)
        ),
    )


def server_ctx(ca: trustme.CA, *names: str, client_ca: trustme.CA | None = None) -> ssl.SSLContext:
    """A model server's context; with ``client_ca`` it requires a client certificate from that CA."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*(names or ("127.0.0.1",))).configure_cert(ctx)
    if client_ca is not None:
        client_ca.configure_trust(ctx)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


@pytest.fixture
async def tls_model(upki: UpstreamPki) -> AsyncIterator[RunningModel]:
    """The baseline model over HTTPS with a certificate from the models' CA."""
    model = await start_sample_model(ModelBehavior(version="v1"), ssl_context=server_ctx(upki.model_ca))
    try:
        yield model
    finally:
        await model.close()


def upstreams(baseline: str, candidate: str, baseline_tls: dict[str, Any] | None = None) -> dict[str, Any]:
    b: dict[str, Any] = {"url": baseline, "version": "v1", "timeout": "2s"}
    if baseline_tls is not None:
        b["tls"] = baseline_tls
    return {"baseline": b, "candidate": {"url": candidate, "version": "v2", "timeout": "2s"}}


async def infer(proxy: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=proxy.data_url, timeout=10) as c:
        return await c.post("/v1/infer", json=VALID_BODY, headers={"x-user-id": "u-1"})


def assert_tls_failure(r: httpx.Response, words: str) -> None:
    assert r.status_code == 502, r.text
    doc = r.json()
    assert doc["type"].endswith("/upstream-tls"), doc
    assert words in doc["detail"], doc["detail"]


async def test_an_upstream_verified_against_the_pinned_ca(
    proxy_factory: Any, models: Models, upki: UpstreamPki, tls_model: RunningModel
) -> None:
    assert tls_model.url.startswith("https://")
    tls = {"ca": str(upki.model_ca_file)}
    proxy = await proxy_factory(upstreams=upstreams(tls_model.url, models.candidate.url, tls))
    r = await infer(proxy)
    assert r.status_code == 200 and r.headers["x-rollguard-version"] == "v1"
    assert r.json()["model_version"] == "v1"


async def test_an_upstream_with_a_certificate_from_another_ca_is_502_and_never_sent_plain(
    proxy_factory: Any, models: Models, upki: UpstreamPki
) -> None:
    # The certificate is valid for 127.0.0.1, but from a CA the config does not pin.
    async with FaultyUpstream(Fault.OK, ssl_context=server_ctx(trustme.CA())) as impostor:
        tls = {"ca": str(upki.model_ca_file)}
        proxy = await proxy_factory(upstreams=upstreams(impostor.url, models.candidate.url, tls))
        r = await infer(proxy)
        assert_tls_failure(r, "TLS verification failed")
        assert "certificate" in r.json()["detail"]
        assert impostor.requests_seen == 0  # no request reached it, over TLS or otherwise
    samples = await metric_samples(proxy.admin_url)
    assert sample(samples, "rollguard_upstream_errors_total", role="baseline", kind="connect") >= 1


async def test_a_plain_http_server_behind_an_https_url_is_never_spoken_to_in_plain(
    proxy_factory: Any, models: Models
) -> None:
    url = models.baseline.url.replace("http://", "https://")  # a plain aiohttp server
    proxy = await proxy_factory(upstreams=upstreams(url, models.candidate.url))  # system trust store
    assert_tls_failure(await infer(proxy), "TLS handshake failed")


async def test_server_name_is_sent_and_verified(
    proxy_factory: Any, models: Models, upki: UpstreamPki
) -> None:
    model = await start_sample_model(
        ModelBehavior(version="v1"), ssl_context=server_ctx(upki.model_ca, "model.internal")
    )
    try:
        pinned = {"ca": str(upki.model_ca_file)}
        proxy = await proxy_factory(upstreams=upstreams(model.url, models.candidate.url, pinned))
        assert_tls_failure(await infer(proxy), "TLS verification failed")  # 127.0.0.1 is not in it
        named = {**pinned, "server_name": "model.internal"}
        proxy = await proxy_factory(upstreams=upstreams(model.url, models.candidate.url, named))
        r = await infer(proxy)
        assert r.status_code == 200 and r.headers["x-rollguard-version"] == "v1"
    finally:
        await model.close()


@pytest.mark.parametrize("max_version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.MAXIMUM_SUPPORTED])
async def test_an_upstream_requiring_a_client_certificate(
    proxy_factory: Any, models: Models, upki: UpstreamPki, max_version: ssl.TLSVersion
) -> None:
    ctx = server_ctx(upki.model_ca, client_ca=upki.proxy_ca)
    ctx.maximum_version = max_version
    model = await start_sample_model(ModelBehavior(version="v1"), ssl_context=ctx)
    try:
        pinned = {"ca": str(upki.model_ca_file)}
        proxy = await proxy_factory(upstreams=upstreams(model.url, models.candidate.url, pinned))
        r = await infer(proxy)
        assert r.status_code == 502, r.text
        # TLS 1.2 refuses inside the handshake; under TLS 1.3 the server judges the certificate after the
        # client's side is done, and an asyncio server then drops the connection without an alert.
        detail = r.json()["detail"]
        if max_version is ssl.TLSVersion.TLSv1_2:
            assert "TLS handshake failed" in detail, detail
        else:
            assert "TLS handshake failed" in detail or "tls.cert is not set" in detail, detail
        mtls = {**pinned, "cert": str(upki.proxy_client.cert), "key": str(upki.proxy_client.key)}
        proxy = await proxy_factory(upstreams=upstreams(model.url, models.candidate.url, mtls))
        r = await infer(proxy)
        assert r.status_code == 200 and r.headers["x-rollguard-version"] == "v1"
        # A client certificate from a CA the upstream does not trust is refused too.
        stranger = issue(trustme.CA(), upki.folder, "stranger", common_name="rollguard")
        foreign = {**pinned, "cert": str(stranger.cert), "key": str(stranger.key)}
        proxy = await proxy_factory(upstreams=upstreams(model.url, models.candidate.url, foreign))
        r = await infer(proxy)
        assert r.status_code == 502 and "TLS" in r.json()["detail"], r.text
    finally:
        await model.close()


async def test_the_shadow_reaches_the_candidate_with_the_candidates_tls(
    proxy_factory: Any, models: Models, upki: UpstreamPki
) -> None:
    ctx = server_ctx(upki.model_ca, client_ca=upki.proxy_ca)
    async with FaultyUpstream(Fault.OK, ssl_context=ctx) as candidate:
        tls = {
            "ca": str(upki.model_ca_file),
            "cert": str(upki.proxy_client.cert),
            "key": str(upki.proxy_client.key),
        }
        proxy = await proxy_factory(
            upstreams={
                "baseline": {"url": models.baseline.url, "version": "v1"},
                "candidate": {"url": candidate.url, "version": "v2", "tls": tls},
            },
            shadow={"sample": 1.0, "timeout": "2s", "noise_sample": 0.0},
        )
        r = await infer(proxy)
        assert r.status_code == 200 and r.headers["x-rollguard-version"] == "v1"
        async with asyncio.timeout(5):
            await candidate.wait_for_requests(1)
        assert candidate.requests[-1].header("x-rollguard-shadow") == "1"
