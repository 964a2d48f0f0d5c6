"""SIGHUP reloads the listeners' certificates in a running ``rollguard serve`` (uvloop), dropping nothing."""

from __future__ import annotations

import asyncio
import http.client
import os
import signal
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import trustme

from tests.helpers.config import config_doc, write_config
from tests.helpers.models import Models
from tests.helpers.pki import Files, client_context, fingerprint_der, fingerprint_pem, write_leaf
from tests.helpers.proxy_runner import ProxyProcess, wait_for_log


def rotate(leaf: trustme.LeafCert, files: Files) -> None:
    """Replace cert and key in place the way certificate managers do: write aside, then rename over."""
    staged = write_leaf(leaf, files.cert.parent / "staged", files.cert.stem)
    os.replace(staged.key, files.key)
    os.replace(staged.cert, files.cert)


def connect(url: str, trust: ssl.SSLContext) -> http.client.HTTPSConnection:
    parts = urlsplit(url)
    conn = http.client.HTTPSConnection(parts.hostname or "", parts.port, context=trust, timeout=10)
    conn.connect()
    return conn


def get(conn: http.client.HTTPSConnection, path: str) -> int:
    conn.request("GET", path)
    resp = conn.getresponse()
    resp.read()
    assert not resp.will_close  # keep-alive: the next request reuses this connection
    return resp.status


def presented(conn: http.client.HTTPSConnection) -> str:
    assert isinstance(conn.sock, ssl.SSLSocket)
    return fingerprint_der(conn.sock.getpeercert(binary_form=True))


async def test_sighup_reloads_certificates_without_dropping_connections(
    tmp_path: Path, models: Models, proxy_process: Any
) -> None:
    ca = trustme.CA()
    folder = tmp_path / "pki"
    data = write_leaf(ca.issue_cert("127.0.0.1"), folder, "data")
    admin = write_leaf(ca.issue_cert("127.0.0.1"), folder, "admin")
    doc = config_doc(
        tmp_path,
        models.baseline.url,
        models.candidate.url,
        tls={"cert": str(data.cert), "key": str(data.key)},
        logging={"access_log": "off"},
    )
    doc["admin"]["tls"] = {"cert": "pki/admin.crt", "key": "pki/admin.key"}  # relative to the config file
    proc: ProxyProcess = await asyncio.to_thread(proxy_process, write_config(tmp_path, doc))
    assert proc.data_url.startswith("https://") and proc.admin_url.startswith("https://")
    trust = client_context(ca)
    old_data, old_admin = fingerprint_pem(data.cert), fingerprint_pem(admin.cert)

    held = await asyncio.to_thread(connect, proc.data_url, trust)
    held_admin = await asyncio.to_thread(connect, proc.admin_url, trust)
    try:
        assert await asyncio.to_thread(get, held, "/anything") == 200
        assert await asyncio.to_thread(get, held_admin, "/healthz") == 200
        assert presented(held) == old_data and presented(held_admin) == old_admin
        held_sock = held.sock

        rotate(ca.issue_cert("127.0.0.1"), data)
        rotate(ca.issue_cert("127.0.0.1"), admin)
        new_data, new_admin = fingerprint_pem(data.cert), fingerprint_pem(admin.cert)
        assert new_data != old_data and new_admin != old_admin
        seen = len(proc.stderr_lines)
        proc.signal(signal.SIGHUP)
        await wait_for_log(proc, " tls: TLS certificate, key and client CA reloaded", seen)
        await wait_for_log(proc, " admin.tls: TLS certificate, key and client CA reloaded", seen)
        await wait_for_log(proc, "config reloaded (generation 2): no changes", seen)

        # New handshakes present the new certificates...
        fresh = await asyncio.to_thread(connect, proc.data_url, trust)
        fresh_admin = await asyncio.to_thread(connect, proc.admin_url, trust)
        assert presented(fresh) == new_data and presented(fresh_admin) == new_admin
        assert await asyncio.to_thread(get, fresh, "/anything") == 200
        fresh.close()
        fresh_admin.close()
        # ...and the connections opened before keep working, on the same socket and certificate.
        assert await asyncio.to_thread(get, held, "/anything") == 200
        assert await asyncio.to_thread(get, held_admin, "/healthz") == 200
        assert held.sock is held_sock and presented(held) == old_data

        # A reload that cannot load the files logs an error and keeps the current certificate.
        data.cert.write_text("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n")
        seen = len(proc.stderr_lines)
        proc.signal(signal.SIGHUP)
        await wait_for_log(
            proc, "tls: TLS reload failed, the previous certificate stays in use: tls.cert", seen
        )
        again = await asyncio.to_thread(connect, proc.data_url, trust)
        assert presented(again) == new_data and await asyncio.to_thread(get, again, "/anything") == 200
        again.close()
        assert await asyncio.to_thread(get, held, "/anything") == 200
    finally:
        held.close()
        held_admin.close()
    assert proc.proc is not None and proc.proc.poll() is None  # still serving
