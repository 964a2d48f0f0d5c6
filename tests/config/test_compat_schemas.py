"""``routes[].compat_schemas`` in the config: paths resolved like ``response_schema``, every file checked and
compiled at load, each named by its file name, and every mistake named by its key path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from proxy.config.load import load_config
from proxy.config.model import CompatSchema
from proxy.errors import ConfigError
from tests.helpers.config import config_doc, write_config

OLD = {"type": "object", "required": ["score", "decision"]}


def _load(folder: Path, compat: Any) -> Any:
    doc = config_doc(folder, "http://127.0.0.1:9001", "http://127.0.0.1:9002")
    doc["routes"][0]["compat_schemas"] = compat
    return load_config(write_config(folder, doc))


def _write(folder: Path, name: str, content: Any) -> None:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")


def test_relative_paths_resolve_from_the_config_folder_and_the_label_is_the_file_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "etc"
    _write(folder, "schemas/infer_response_v1.json", OLD)
    _write(folder, "legacy/score.schema.json", {"required": ["score"]})
    monkeypatch.chdir(tmp_path)  # not the config's folder
    config = _load(folder, ["schemas/infer_response_v1.json", "./legacy/score.schema.json"])
    assert config.routes[0].compat_schemas == (
        CompatSchema(name="infer_response_v1", path=folder / "schemas" / "infer_response_v1.json"),
        CompatSchema(name="score.schema", path=folder / "legacy" / "score.schema.json"),
    )


def test_no_compat_schemas_is_an_empty_tuple(tmp_path: Path) -> None:
    doc = config_doc(tmp_path, "http://127.0.0.1:9001", "http://127.0.0.1:9002")
    assert load_config(write_config(tmp_path, doc)).routes[0].compat_schemas == ()


@pytest.mark.parametrize(
    ("files", "compat", "at", "words"),
    [
        pytest.param(
            {"v1.json": OLD},
            ["v1.json", "missing.json"],
            "routes[0].compat_schemas[1]",
            ["missing.json", "cannot read"],
            id="missing",
        ),
        pytest.param(
            {"v1.json": OLD, "v0.json": "{not json"},
            ["v1.json", "v0.json"],
            "routes[0].compat_schemas[1]",
            ["v0.json", "is not valid JSON"],
            id="not-json",
        ),
        pytest.param(
            {"v1.json": OLD, "v0.json": {"type": 12}},
            ["v1.json", "v0.json"],
            "routes[0].compat_schemas[1]",
            ["is not a valid JSON Schema"],
            id="invalid-schema",
        ),
        pytest.param(
            {"v1.json": OLD, "v0.json": {"$ref": "#/$defs/gone"}},
            ["v1.json", "v0.json"],
            "routes[0].compat_schemas[1]",
            ["does not compile", "/$defs/gone"],
            id="dangling-ref",
        ),
        pytest.param(
            {"v1.json": OLD},
            ["v1.json", "./v1.json"],
            "routes[0].compat_schemas[1]",
            ["is already routes[0].compat_schemas[0]"],
            id="same-file-twice",
        ),
        pytest.param(
            {"v1.json": OLD, "old/v1.json": OLD},
            ["v1.json", "old/v1.json"],
            "routes[0].compat_schemas[1]",
            ["schema label 'v1'", "routes[0].compat_schemas[0]", "rename"],
            id="same-label-twice",
        ),
        pytest.param({}, "v1.json", "routes[0].compat_schemas", ["a list of paths"], id="not-a-list"),
        pytest.param({}, [""], "routes[0].compat_schemas[0]", ["should be non-empty"], id="empty-path"),
        pytest.param(
            {}, [f"v{i}.json" for i in range(17)], "routes[0].compat_schemas", ["too long"], id="over-16"
        ),
    ],
)
def test_a_mistake_names_its_key_path(
    tmp_path: Path, files: dict[str, Any], compat: Any, at: str, words: list[str]
) -> None:
    for name, content in files.items():
        _write(tmp_path, name, content)
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, compat)
    message = str(caught.value)
    assert message.startswith(f"{at}: "), message
    for word in words:
        assert word in message, message
