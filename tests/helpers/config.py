"""Config documents for tests: a complete one on free ports, written to a file the real loader reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.helpers.paths import SCHEMAS
from tests.helpers.tokens import OPERATOR_TOKEN_ENV, VIEWER_TOKEN_ENV


def config_doc(tmp_path: Path, baseline_url: str, candidate_url: str, **overrides: Any) -> dict[str, Any]:
    """A complete config document on free ports; ``overrides`` replace top-level keys."""
    doc: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "admin": {
            "listen": "127.0.0.1:0",
            "tokens": [
                {"name": "ops", "role": "operator", "token": f"env:{OPERATOR_TOKEN_ENV}"},
                {"name": "grafana", "role": "viewer", "token": f"env:{VIEWER_TOKEN_ENV}"},
            ],
        },
        "state": {"url": f"file:{tmp_path / 'state' / 'rollguard-state.json'}"},
        "upstreams": {
            "baseline": {"url": baseline_url, "version": "v1", "timeout": "2s"},
            "candidate": {"url": candidate_url, "version": "v2", "timeout": "2s"},
        },
        "routes": [
            {
                "name": "infer",
                "path": "/v1/infer",
                "methods": ["POST"],
                "request_schema": str(SCHEMAS / "infer_request.json"),
                "response_schema": str(SCHEMAS / "infer_response.json"),
                "score": "/score",
                "sticky_key": "header:x-user-id",
                "segment": "/features/region",
            }
        ],
        "canary": {"weight": 0},
        "logging": {"access_log": str(tmp_path / "access.log")},
    }
    doc.update(overrides)
    return doc


def write_config(tmp_path: Path, doc: dict[str, Any], name: str = "rollguard.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path
