"""Client-auth test material shared by the edge and config tests: secrets, API keys, config documents."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from proxy.config.load import build_config
from proxy.config.model import Config
from tests.helpers.config import config_doc

HS_SECRET = "hs256-secret-for-tests-0123456789abcdef"
KEY_A = "rg_key-for-client-a-0123456789abcdefghij"
KEY_B = "rg_key-for-client-b-0123456789abcdefghij"


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def auth_doc(tmp_path: Path, **over: Any) -> dict[str, Any]:
    """A complete config document whose upstreams are never contacted; ``over`` replace top-level keys."""
    return config_doc(tmp_path, "http://127.0.0.1:9001", "http://127.0.0.1:9002", **over)


def mixed_config(tmp_path: Path, **auth_over: Any) -> Config:
    """API keys, a peer and four routes with different allow lists; ``auth_over`` replace ``auth`` keys."""
    routes = [
        {"name": "infer", "path": "/v1/infer", "auth": {"roles": ["scorer"]}},
        {"name": "batch", "path": "/v1/batch", "auth": {"clients": ["batch"]}},
        {"name": "public", "path": "/v1/public", "auth": {"required": False}},
        {"name": "plain", "path": "/v1/plain"},
    ]
    auth: dict[str, Any] = {
        "api_keys": [
            {"name": "checkout", "roles": ["scorer"], "key_sha256": sha(KEY_A)},
            {"name": "reporting", "roles": ["reader"], "key_sha256": sha(KEY_B)},
        ],
        "peers": [{"name": "batch", "roles": ["scorer"], "peer": "batch.internal"}],
    }
    auth.update(auth_over)
    return build_config(auth_doc(tmp_path, routes=routes, auth=auth), tmp_path)
