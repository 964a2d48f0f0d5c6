"""Schemas derived from Python types: each type as orjson writes its values, dataclasses as closed objects."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any, Literal

import jsonschema_rs
import orjson
import pytest

from proxy.admin.schemas import STATE_RECORD, STORED_STATE, of_dataclass, of_type
from proxy.rollout.state import Phase, initial, set_shadow_sample


class Colour(enum.StrEnum):
    RED = "red"
    BLUE = "blue"


@pytest.mark.parametrize(
    ("tp", "schema"),
    [
        (int, {"type": "integer"}),
        (float | None, {"type": ["number", "null"]}),
        (Literal["a", "b"], {"enum": ["a", "b"]}),
        (Colour | None, {"enum": ["red", "blue", None]}),
        (Literal["a"] | int, {"anyOf": [{"enum": ["a"]}, {"type": "integer"}]}),
        (tuple[float, ...], {"type": "array", "items": {"type": "number"}}),
        (Mapping[str, int | None], {"type": "object", "additionalProperties": {"type": ["integer", "null"]}}),
    ],
)
def test_a_type_and_its_schema(tp: Any, schema: dict[str, Any]) -> None:
    assert of_type(tp) == schema


def test_a_type_without_a_json_form_is_refused() -> None:
    with pytest.raises(TypeError):
        of_type(set[int])


@dataclasses.dataclass
class Record:
    name: str
    colour: Colour = Colour.RED


def test_a_dataclass_is_a_closed_object_requiring_what_its_reader_needs() -> None:
    assert of_dataclass(Record)["required"] == ["name", "colour"]
    assert of_dataclass(Record, required="undefaulted")["required"] == ["name"]
    validator = jsonschema_rs.validator_for(of_dataclass(Record))
    assert validator.is_valid({"name": "x", "colour": "blue"})
    assert not validator.is_valid({"name": "x", "colour": "blue", "more": 1})


def test_the_rollout_state_record_is_what_to_json_writes() -> None:
    state = set_shadow_sample(initial("v2", 250, "2026-01-01T00:00:00Z"), 0.5, "2026-01-01T00:00:01Z")
    record = orjson.loads(orjson.dumps(state.to_json()))
    assert record["phase"] == Phase.PAUSED.value
    assert jsonschema_rs.validator_for(STATE_RECORD).is_valid(record)
    # A record an older version stored, without the fields added since, is still a state it can read.
    old = {k: record[k] for k in ("revision", "rollout_id", "phase", "weight_bp", "candidate_version")}
    assert jsonschema_rs.validator_for(STORED_STATE).is_valid(old)
    assert not jsonschema_rs.validator_for(STATE_RECORD).is_valid(old)
