"""``rollguard contract diff`` as CI runs it, on the sample model's schemas and edited copies of them: exit 0
when compatible, 1 on a breaking change (one line per change, the verdict last), 2 for a file that cannot
be used, with the file and the problem named."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.helpers.paths import ROOT, SCHEMAS

BOUND_S = 30
REQUEST = SCHEMAS / "infer_request.json"
RESPONSE = SCHEMAS / "infer_response.json"


def _diff(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", "contract", "diff", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=BOUND_S,
        cwd=ROOT,
        check=False,
    )


def _edited(tmp_path: Path, source: Path, name: str, edit: Any) -> Path:
    schema = json.loads(source.read_text(encoding="utf-8"))
    edit(schema)
    path = tmp_path / name
    path.write_text(json.dumps(schema), encoding="utf-8")
    return path


def test_the_same_schema_is_compatible() -> None:
    run = _diff(REQUEST, REQUEST)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["verdict: compatible (request schema: no change a validator sees)"]


def test_a_tightened_request_breaks_and_each_change_has_its_line(tmp_path: Path) -> None:
    def edit(schema: dict[str, Any]) -> None:
        features = schema["properties"]["features"]["properties"]
        features["amount"]["minimum"] = 1
        features["region"]["enum"].append("ap-south")
        schema["required"].append("user_id")

    new = _edited(tmp_path, REQUEST, "infer_request_v2.json", edit)
    run = _diff(REQUEST, new)
    assert run.returncode == 1, run.stderr
    assert run.stdout.splitlines() == [
        "BREAKING /properties/features/properties/amount: minimum raised 0 -> 1 "
        "(a request the old schema accepted is refused)",
        'note     /properties/features/properties/region: enum value added "ap-south" '
        "(the new schema accepts requests the old one refused)",
        "BREAKING /properties/user_id: newly required (a request the old schema accepted is refused)",
        "verdict: BREAKING (request schema: 2 breaking, 1 note)",
    ]


def test_a_response_that_only_narrows_is_compatible(tmp_path: Path) -> None:
    def edit(schema: dict[str, Any]) -> None:
        schema["properties"]["prediction_id"]["maxLength"] = 64
        schema["properties"]["explanation"] = {"type": "string"}

    new = _edited(tmp_path, RESPONSE, "infer_response_v2.json", edit)
    run = _diff(RESPONSE, new)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == "verdict: compatible (response schema: 0 breaking, 2 notes)"
    assert all(line.startswith("note") for line in run.stdout.splitlines()[:-1])


def test_a_response_losing_a_field_breaks_in_json_too(tmp_path: Path) -> None:
    def edit(schema: dict[str, Any]) -> None:
        del schema["properties"]["decision"]
        schema["required"].remove("decision")
        schema["properties"]["score"]["type"] = ["number", "null"]

    new = _edited(tmp_path, RESPONSE, "v2.json", edit)
    run = _diff(RESPONSE, new, "--kind", "response", "-o", "json")
    assert run.returncode == 1, run.stderr
    doc = json.loads(run.stdout)
    assert (doc["kind"], doc["compatible"], doc["breaking"], doc["notes"]) == ("response", False, 2, 0)
    assert [(f["pointer"], f["effect"], f["change"]) for f in doc["findings"]] == [
        ("/properties/score", "widens", 'type widened number -> ["number", "null"]'),
        ("/properties/decision", "removes", "property removed (it was required)"),
    ]


def test_kind_decides_who_is_broken(tmp_path: Path) -> None:
    new = _edited(tmp_path, REQUEST, "v2.json", lambda s: s["properties"]["user_id"].pop("maxLength"))
    assert _diff(REQUEST, new, "--kind", "request").returncode == 0
    assert _diff(REQUEST, new, "--kind", "response").returncode == 1


def test_a_construct_it_cannot_compare_fails_safe(tmp_path: Path) -> None:
    def edit(schema: dict[str, Any]) -> None:
        schema["properties"]["user_id"] = {"anyOf": [{"type": "string"}, {"type": "integer"}]}

    new = _edited(tmp_path, REQUEST, "infer_request_v2.json", edit)
    run = _diff(REQUEST, new)
    assert run.returncode == 1
    assert (
        "BREAKING /properties/user_id/anyOf: anyOf differs (cannot be compared, review by hand)" in run.stdout
    )


def test_unusable_inputs_exit_2_naming_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken_request.json"
    broken.write_text('{"type": "object",', encoding="utf-8")
    invalid = tmp_path / "invalid_request.json"
    invalid.write_text('{"type": "objekt"}', encoding="utf-8")
    dangling = tmp_path / "dangling_request.json"
    dangling.write_text('{"$ref": "#/$defs/gone"}', encoding="utf-8")
    cases = {
        (REQUEST, tmp_path / "missing.json"): "missing.json: cannot read",
        (broken, REQUEST): "broken_request.json: not JSON",
        (REQUEST, invalid): "invalid_request.json: not a valid JSON Schema (draft 2020-12)",
        (dangling, REQUEST): "dangling_request.json: $ref '#/$defs/gone' at (root) resolves to nothing",
        (REQUEST, tmp_path / "v2.json"): "v2.json: cannot read",
    }
    for (old, new), words in cases.items():
        run = _diff(old, new)
        assert run.returncode == 2, (words, run.stdout, run.stderr)
        assert words in run.stderr and run.stdout == "", run.stderr
    unnamed = _edited(tmp_path, REQUEST, "v2.json", lambda s: None)
    run = _diff(REQUEST, unnamed)
    assert run.returncode == 2 and "v2.json: say --kind request or --kind response" in run.stderr
    assert _diff(REQUEST, REQUEST, "--kind", "both").returncode == 2
