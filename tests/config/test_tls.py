"""The ``tls`` keys of a config: what loads, and every refusal naming its key path."""

from __future__ import annotations

import copy
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from proxy.config.load import load_config
from proxy.config.tls_contexts import ServerTls, client_context
from proxy.errors import ConfigError
from tests.helpers.config import config_doc, write_config
from tests.helpers.pki import write_ca, write_leaf


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    ca = trustme.CA()
    folder = tmp_path / "pki"
    server = write_leaf(ca.issue_cert("127.0.0.1"), folder, "server")
    other = write_leaf(trustme.CA().issue_cert("127.0.0.1"), folder, "other")
    key = serialization.load_pem_private_key(server.key.read_bytes(), password=None)
    encrypted = folder / "server.enc.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"s3cret-pass"),
        )
    )
    return {
        "cert": server.cert,
        "key": server.key,
        "other_key": other.key,
        "encrypted_key": encrypted,
        "ca": write_ca(ca, folder, "ca"),
    }


def _doc(tmp_path: Path, https: bool = False) -> dict[str, Any]:
    scheme = "https" if https else "http"
    return config_doc(tmp_path, f"{scheme}://127.0.0.1:9001", f"{scheme}://127.0.0.1:9002")


def _load(tmp_path: Path, doc: dict[str, Any]) -> Any:
    return load_config(write_config(tmp_path, doc))


def test_listener_and_upstream_tls_load(
    tmp_path: Path, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RG_TEST_KEY_PASSWORD", "s3cret-pass")
    doc = _doc(tmp_path, https=True)
    doc["tls"] = {
        "cert": "pki/server.crt",  # relative to the config file's folder
        "key": "pki/server.enc.key",
        "key_password": "env:RG_TEST_KEY_PASSWORD",
        "client_ca": "pki/ca.pem",
        "min_version": 1.3,  # a YAML number is accepted too
    }
    doc["admin"]["tls"] = {"cert": str(files["cert"]), "key": str(files["key"])}
    doc["upstreams"]["baseline"]["tls"] = {
        "ca": str(files["ca"]),
        "cert": str(files["cert"]),
        "key": str(files["key"]),
        "server_name": "model.internal",
    }
    config = _load(tmp_path, doc)
    assert config.tls.cert == files["cert"] and config.tls.key == files["encrypted_key"]
    assert config.tls.client_auth == "require"  # the default once a client CA is given
    assert config.tls.min_version == "1.3" and config.tls.key_password == "s3cret-pass"
    assert "s3cret-pass" not in repr(config.tls)
    assert config.admin.tls.client_auth == "none" and config.admin.tls.client_ca is None
    assert config.baseline.tls.server_name == "model.internal" and config.candidate.tls is None
    ctx = ServerTls(config.tls).context
    assert ctx.minimum_version is ssl.TLSVersion.TLSv1_3 and ctx.verify_mode is ssl.CERT_REQUIRED
    assert client_context(config.baseline.tls).verify_mode is ssl.CERT_REQUIRED


def _set(path: str, value: Any) -> Callable[[dict[str, Any], dict[str, Path]], None]:
    """A mutation of the document: ``value`` may name a fixture file as ``"@name"``."""

    def apply(doc: dict[str, Any], f: dict[str, Path]) -> None:
        node = doc
        *parents, leaf = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = (
            {k: (str(f[v[1:]]) if isinstance(v, str) and v.startswith("@") else v) for k, v in value.items()}
            if isinstance(value, dict)
            else value
        )

    return apply


BAD: list[tuple[str, bool, Callable[[dict[str, Any], dict[str, Path]], None], str]] = [
    (
        "missing cert file",
        False,
        _set("tls", {"cert": "pki/nope.crt", "key": "@key"}),
        "tls.cert: cannot read",
    ),
    (
        "cert file holds no certificate",
        False,
        _set("tls", {"cert": "@key"}),
        "tls.cert: ",
    ),
    (
        "key without cert",
        False,
        _set("tls", {"key": "@key"}),
        "tls: 'cert' is a required property",
    ),
    (
        "key of another cert",
        False,
        _set("tls", {"cert": "@cert", "key": "@other_key"}),
        "tls.key: cannot load",
    ),
    (
        "wrong key password",
        False,
        _set("tls", {"cert": "@cert", "key": "@encrypted_key", "key_password": "file:pki/ca.pem"}),
        "tls.key: cannot load",
    ),
    (
        "require without client_ca",
        False,
        _set("tls", {"cert": "@cert", "key": "@key", "client_auth": "require"}),
        "tls.client_ca: required by tls.client_auth: require",
    ),
    (
        "client_ca with client_auth none",
        False,
        _set("tls", {"cert": "@cert", "client_ca": "@ca", "client_auth": "none"}),
        "tls.client_auth: is none",
    ),
    (
        "bad min_version",
        False,
        _set("tls", {"cert": "@cert", "min_version": "1.1"}),
        "tls.min_version: '1.1'",
    ),
    (
        "inline key password",
        False,
        _set("tls", {"cert": "@cert", "key_password": "hunter2"}),
        "tls.key_password",
    ),
    (
        "admin missing cert",
        False,
        _set("admin.tls", {"cert": "pki/gone.pem"}),
        "admin.tls.cert: cannot read",
    ),
    (
        "admin unknown key",
        False,
        _set("admin.tls", {"cert": "@cert", "verify": False}),
        "admin.tls: unknown key",
    ),
    (
        "tls on http://",
        False,
        _set("upstreams.candidate.tls", {"ca": "@ca"}),
        "upstreams.candidate.tls: needs an https://",
    ),
    (
        "upstream key without cert",
        True,
        _set("upstreams.baseline.tls", {"key": "@key"}),
        "upstreams.baseline.tls.key: set",
    ),
    (
        "upstream ca unreadable",
        True,
        _set("upstreams.baseline.tls", {"ca": "pki/missing-ca.pem"}),
        "upstreams.baseline.tls.ca: cannot load the CA bundle",
    ),
    (
        "no switch to disable verification",
        True,
        _set("upstreams.baseline.tls", {"verify": False}),
        "upstreams.baseline.tls: unknown key",
    ),
    (
        "upstream url scheme",
        False,
        _set("upstreams.baseline.url", "ftp://127.0.0.1:1"),
        "upstreams.baseline.url",
    ),
]


@pytest.mark.parametrize(("name", "https", "mutate", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_tls_config_names_the_key_path(
    tmp_path: Path,
    files: dict[str, Path],
    name: str,
    https: bool,
    mutate: Callable[[dict[str, Any], dict[str, Path]], None],
    message: str,
) -> None:
    doc = copy.deepcopy(_doc(tmp_path, https))
    mutate(doc, files)
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, doc)
    assert str(err.value).startswith(message), str(err.value)


def test_https_upstream_without_a_tls_block_uses_the_system_store(tmp_path: Path) -> None:
    config = _load(tmp_path, _doc(tmp_path, https=True))
    assert config.baseline.url.startswith("https://") and config.baseline.tls is None
    assert client_context(None).verify_mode is ssl.CERT_REQUIRED and client_context(None).check_hostname
