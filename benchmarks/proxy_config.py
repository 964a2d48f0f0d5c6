"""The config document of a throwaway ``rollguard serve`` that a standalone benchmark starts.

The test suite's shape (tests/helpers/config.py), kept here because benchmarks import no tests: the
sample model's route with its contracts, sticky key and segment, weight 0, no access log. No admin tokens:
nothing here calls the admin API, and a proxy without tokens refuses every authenticated call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import procs

SCHEMAS = Path(__file__).resolve().parent.parent / "config" / "schemas"


def proxy_config_doc(state_dir: Path, baseline: str, candidate: str, **overrides: Any) -> dict[str, Any]:
    """A complete config on free loopback ports; the state file under ``state_dir``; ``overrides``
    replace top-level keys."""
    doc: dict[str, Any] = {
        "listen": f"{procs.HOST}:0",
        "admin": {"listen": f"{procs.HOST}:0"},
        "state": {"url": f"file:{state_dir / 'rollguard-state.json'}"},
        "upstreams": {
            "baseline": {"url": baseline, "version": "v1", "timeout": "2s"},
            "candidate": {"url": candidate, "version": "v2", "timeout": "2s"},
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
        "logging": {"access_log": "off"},
    }
    doc.update(overrides)
    return doc
