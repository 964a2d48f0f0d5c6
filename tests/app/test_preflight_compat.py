"""Preflight's ``schemas`` line compiles ``routes[].compat_schemas`` as the data plane does."""

from __future__ import annotations

import json
from pathlib import Path

from proxy.app.preflight_checks import check_schemas
from proxy.config.load import load_config
from tests.helpers.config import config_doc, write_config


def test_the_schemas_check_names_each_compat_schema_it_compiled(tmp_path: Path) -> None:
    (tmp_path / "infer_response_v1.json").write_text(json.dumps({"required": ["decision"]}), encoding="utf-8")
    doc = config_doc(tmp_path, "http://127.0.0.1:9001", "http://127.0.0.1:9002")
    doc["routes"][0]["compat_schemas"] = ["infer_response_v1.json"]
    result = check_schemas(load_config(write_config(tmp_path, doc)))
    assert result.status == "PASS", result
    assert result.detail == "3 compile (infer request, infer response, infer compat infer_response_v1)"
