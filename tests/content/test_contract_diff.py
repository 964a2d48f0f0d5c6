"""Schema pairs and what each change means to its reader: a request schema breaks when it refuses what the
old one accepted, a response schema when consumers may receive what they could not, or lose a field; a
construct too complex to compare counts as breaking. Every pair is checked for both kinds of reader."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.content.contract_diff import Effect, Kind, diff_schemas, is_breaking, schema_problem

N, W, C, R, A, U = Effect.NARROWS, Effect.WIDENS, Effect.CHANGES, Effect.REMOVES, Effect.ADDS, Effect.UNKNOWN
BREAKS = {"request": {N, C, U}, "response": {W, C, R, U}}


def obj(props: dict[str, Any], required: tuple[str, ...] = (), **more: Any) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(required), **more}


def at(name: str, schema: dict[str, Any], **more: Any) -> dict[str, Any]:
    """A top-level object whose one property ``name`` is ``schema``."""
    return obj({name: schema}, **more)


NUM = {"type": "number"}
INT = {"type": "integer"}
STR = {"type": "string"}
P = "/properties/x"

# (id, old, new, kind or None for both, [(pointer, effect, words in the change)]); the kind is given when
# a rule exists for one reader only, and then the expected findings are that reader's.
CASES: list[tuple[str, Any, Any, Kind | None, list[tuple[str, Effect, str]]]] = [
    ("identical", at("x", NUM), at("x", NUM), None, []),
    ("annotations only", at("x", NUM), at("x", {**NUM, "description": "now documented"}), None, []),
    ("newly required", at("x", NUM), at("x", NUM, required=("x",)), None, [(P, N, "newly required")]),
    ("made optional", at("x", NUM, required=("x",)), at("x", NUM), None, [(P, W, "made optional")]),
    (
        "request: property removed while additionalProperties is false",
        at("x", NUM, additionalProperties=False),
        obj({}, additionalProperties=False),
        "request",
        [(P, N, "property removed while additionalProperties is false")],
    ),
    (
        "request: property removed from an open object",
        at("x", NUM),
        obj({}),
        "request",
        [(P, W, "property removed; any value is now accepted")],
    ),
    (
        "request: property removed, its name now checked by additionalProperties",
        at("x", NUM, additionalProperties=STR),
        obj({}, additionalProperties=STR),
        "request",
        [(P, C, "type changed number -> string")],
    ),
    ("response: property removed", at("x", NUM), obj({}), "response", [(P, R, "property removed")]),
    (
        "response: required property removed",
        at("x", NUM, required=("x",)),
        obj({}),
        "response",
        [(P, R, "property removed (it was required)")],
    ),
    (
        "property added to an open object",
        obj({}),
        at("x", NUM),
        None,
        [(P, A, "property added (type number)")],
    ),
    (
        "property added where additionalProperties was false",
        obj({}, additionalProperties=False),
        at("x", NUM, additionalProperties=False),
        None,
        [(P, W, "property added (type number) where additionalProperties was false")],
    ),
    (
        "additionalProperties turned false",
        at("x", NUM),
        at("x", NUM, additionalProperties=False),
        None,
        [("/additionalProperties", N, "additionalProperties turned false")],
    ),
    (
        "additionalProperties no longer false",
        at("x", NUM, additionalProperties=False),
        at("x", NUM),
        None,
        [("/additionalProperties", W, "additionalProperties no longer false")],
    ),
    (
        "additionalProperties given a schema",
        obj({}),
        obj({}, additionalProperties=INT),
        None,
        [("/additionalProperties", N, "type narrowed any -> integer")],
    ),
    ("number -> integer", at("x", NUM), at("x", INT), None, [(P, N, "type narrowed number -> integer")]),
    ("integer -> number", at("x", INT), at("x", NUM), None, [(P, W, "type widened integer -> number")]),
    (
        "null dropped",
        at("x", {"type": ["string", "null"]}),
        at("x", STR),
        None,
        [(P, N, 'type narrowed ["string", "null"] -> string')],
    ),
    (
        "null added",
        at("x", STR),
        at("x", {"type": ["string", "null"]}),
        None,
        [(P, W, 'type widened string -> ["string", "null"]')],
    ),
    ("type swapped", at("x", STR), at("x", INT), None, [(P, C, "type changed string -> integer")]),
    (
        "integer beside number is no change",
        at("x", {"type": ["number", "integer"]}),
        at("x", NUM),
        None,
        [],
    ),
    (
        "enum value removed",
        at("x", {"enum": ["a", "b"]}),
        at("x", {"enum": ["a"]}),
        None,
        [(P, N, 'enum value removed "b"')],
    ),
    (
        "enum value added",
        at("x", {"enum": ["a"]}),
        at("x", {"enum": ["a", "b", "c"]}),
        None,
        [(P, W, 'enum values added "b", "c"')],
    ),
    ("enum added", at("x", STR), at("x", {**STR, "enum": ["a"]}), None, [(P, N, 'enum added ["a"]')]),
    (
        "enum dropped",
        at("x", {**STR, "enum": ["a"]}),
        at("x", STR),
        None,
        [(P, W, 'enum removed (was ["a"])')],
    ),
    ("enum 1 and 1.0 are one value", at("x", {"enum": [1, 2]}), at("x", {"enum": [1.0, 2]}), None, []),
    (
        "enum true is not 1",
        at("x", {"enum": [1]}),
        at("x", {"enum": [True]}),
        None,
        [(P, N, "removed 1"), (P, W, "added true")],
    ),
    (
        "const changed",
        at("x", {"const": "a"}),
        at("x", {"const": "b"}),
        None,
        [(P, N, 'const value removed "a"'), (P, W, 'const value added "b"')],
    ),
    (
        "minimum raised",
        at("x", {**NUM, "minimum": 0}),
        at("x", {**NUM, "minimum": 1}),
        None,
        [(P, N, "minimum raised 0 -> 1")],
    ),
    (
        "minimum lowered",
        at("x", {**NUM, "minimum": 1}),
        at("x", {**NUM, "minimum": 0}),
        None,
        [(P, W, "minimum lowered 1 -> 0")],
    ),
    (
        "maximum lowered",
        at("x", {**NUM, "maximum": 10}),
        at("x", {**NUM, "maximum": 5}),
        None,
        [(P, N, "maximum lowered 10 -> 5")],
    ),
    (
        "maximum removed",
        at("x", {**NUM, "maximum": 10}),
        at("x", NUM),
        None,
        [(P, W, "maximum removed (was 10)")],
    ),
    ("minimum added", at("x", NUM), at("x", {**NUM, "minimum": 0}), None, [(P, N, "minimum added 0")]),
    (
        "lower bound made exclusive",
        at("x", {**NUM, "minimum": 0}),
        at("x", {**NUM, "exclusiveMinimum": 0}),
        None,
        [(P, N, "lower bound made exclusive: minimum 0 -> exclusiveMinimum 0")],
    ),
    (
        "upper bound made inclusive",
        at("x", {**NUM, "exclusiveMaximum": 1}),
        at("x", {**NUM, "maximum": 1}),
        None,
        [(P, W, "upper bound made inclusive: exclusiveMaximum 1 -> maximum 1")],
    ),
    (
        "the tighter of two bounds is the bound",
        at("x", {**NUM, "minimum": 0, "exclusiveMinimum": 5}),
        at("x", {**NUM, "exclusiveMinimum": 5}),
        None,
        [],
    ),
    (
        "multipleOf made coarser",
        at("x", {**NUM, "multipleOf": 0.5}),
        at("x", {**NUM, "multipleOf": 1}),
        None,
        [(P, N, "multipleOf changed 0.5 -> 1")],
    ),
    (
        "multipleOf made finer",
        at("x", {**NUM, "multipleOf": 0.1}),
        at("x", {**NUM, "multipleOf": 0.05}),
        None,
        [(P, W, "multipleOf changed 0.1 -> 0.05")],
    ),
    (
        "multipleOf skewed",
        at("x", {**NUM, "multipleOf": 2}),
        at("x", {**NUM, "multipleOf": 3}),
        None,
        [(P, C, "multipleOf changed 2 -> 3")],
    ),
    (
        "minLength raised",
        at("x", STR),
        at("x", {**STR, "minLength": 1}),
        None,
        [(P, N, "minLength raised 0 -> 1")],
    ),
    (
        "maxLength lowered",
        at("x", {**STR, "maxLength": 128}),
        at("x", {**STR, "maxLength": 64}),
        None,
        [(P, N, "maxLength lowered 128 -> 64")],
    ),
    (
        "maxLength raised",
        at("x", {**STR, "maxLength": 64}),
        at("x", {**STR, "maxLength": 128}),
        None,
        [(P, W, "maxLength raised 64 -> 128")],
    ),
    (
        "minItems raised",
        at("x", {"type": "array", "minItems": 1}),
        at("x", {"type": "array", "minItems": 2}),
        None,
        [(P, N, "minItems raised 1 -> 2")],
    ),
    (
        "maxItems added",
        at("x", {"type": "array"}),
        at("x", {"type": "array", "maxItems": 10}),
        None,
        [(P, N, "maxItems added 10")],
    ),
    (
        "maxProperties removed",
        at("x", {"type": "object", "maxProperties": 3}),
        at("x", {"type": "object"}),
        None,
        [(P, W, "maxProperties removed (was 3)")],
    ),
    ("pattern added", at("x", STR), at("x", {**STR, "pattern": "^a"}), None, [(P, N, 'pattern added "^a"')]),
    (
        "pattern changed",
        at("x", {**STR, "pattern": "^a"}),
        at("x", {**STR, "pattern": "^b"}),
        None,
        [(P, C, 'pattern changed "^a" -> "^b"')],
    ),
    (
        "pattern removed",
        at("x", {**STR, "pattern": "^a"}),
        at("x", STR),
        None,
        [(P, W, 'pattern removed (was "^a")')],
    ),
    ("format added", at("x", STR), at("x", {**STR, "format": "uuid"}), None, [(P, N, 'format added "uuid"')]),
    (
        "uniqueItems turned true",
        at("x", {"type": "array"}),
        at("x", {"type": "array", "uniqueItems": True}),
        None,
        [(P, N, "uniqueItems turned true")],
    ),
    (
        "items narrowed",
        at("x", {"type": "array", "items": NUM}),
        at("x", {"type": "array", "items": INT}),
        None,
        [(f"{P}/items", N, "type narrowed number -> integer")],
    ),
    (
        "items given a schema",
        at("x", {"type": "array"}),
        at("x", {"type": "array", "items": STR}),
        None,
        [(f"{P}/items", N, "type narrowed any -> string")],
    ),
    (
        "nested: a property of an array's objects",
        at("x", {"type": "array", "items": at("y", {**NUM, "maximum": 9})}),
        at("x", {"type": "array", "items": at("y", {**NUM, "maximum": 5})}),
        None,
        [(f"{P}/items/properties/y", N, "maximum lowered 9 -> 5")],
    ),
    (
        "nested: a newly required inner field",
        at("x", at("y", NUM)),
        at("x", at("y", NUM, required=("y",))),
        None,
        [(f"{P}/properties/y", N, "newly required")],
    ),
    (
        "$ref into $defs, named by where it is used",
        {"$defs": {"amount": NUM}, **at("x", {"$ref": "#/$defs/amount"})},
        {"$defs": {"amount": INT}, **at("x", {"$ref": "#/$defs/amount"})},
        None,
        [(P, N, "type narrowed number -> integer")],
    ),
    (
        "inlined on one side, a $ref on the other: the same schema",
        at("x", {**NUM, "minimum": 0}),
        {"$defs": {"n": {**NUM, "minimum": 0}}, **at("x", {"$ref": "#/$defs/n"})},
        None,
        [],
    ),
    (
        "$ref with sibling keywords",
        {"$defs": {"n": NUM}, **at("x", {"$ref": "#/$defs/n"})},
        {"$defs": {"n": NUM}, **at("x", {"$ref": "#/$defs/n", "maximum": 5})},
        None,
        [(P, N, "maximum added 5")],
    ),
    (
        "$ref by $anchor",
        {"$defs": {"n": {"$anchor": "amount", **NUM}}, **at("x", {"$ref": "#amount"})},
        {"$defs": {"n": {"$anchor": "amount", **INT}}, **at("x", {"$ref": "#amount"})},
        None,
        [(P, N, "type narrowed number -> integer")],
    ),
    (
        "recursive schema: compared once, where it is first entered",
        {
            "$defs": {"node": at("next", {"$ref": "#/$defs/node"}, additionalProperties=False)},
            "$ref": "#/$defs/node",
        },
        {"$defs": {"node": at("next", {"$ref": "#/$defs/node"})}, "$ref": "#/$defs/node"},
        None,
        [("/additionalProperties", W, "additionalProperties no longer false")],
    ),
    ("false schema", at("x", NUM), at("x", False), None, [(P, N, "now false")]),
    ("true schema is an empty one", at("x", True), at("x", {}), None, []),
    (
        "anyOf changed: cannot be compared",
        at("x", {"anyOf": [NUM, STR]}),
        at("x", {"anyOf": [NUM]}),
        None,
        [(f"{P}/anyOf", U, "anyOf differs")],
    ),
    (
        "oneOf whose $ref target changed: cannot be compared",
        {"$defs": {"a": NUM}, **at("x", {"oneOf": [{"$ref": "#/$defs/a"}, STR]})},
        {"$defs": {"a": INT}, **at("x", {"oneOf": [{"$ref": "#/$defs/a"}, STR]})},
        None,
        [(f"{P}/oneOf", U, "oneOf differs")],
    ),
    ("allOf unchanged is no change", at("x", {"allOf": [NUM]}), at("x", {"allOf": [NUM]}), None, []),
    (
        "if/then added: cannot be compared",
        at("x", NUM),
        at("x", {**NUM, "if": {"minimum": 5}, "then": {"multipleOf": 5}}),
        None,
        [(f"{P}/if", U, "if differs"), (f"{P}/then", U, "then differs")],
    ),
    (
        "patternProperties changed: cannot be compared",
        obj({}, patternProperties={"^s_": STR}),
        obj({}, patternProperties={"^s_": INT}),
        None,
        [("/patternProperties", U, "patternProperties differs")],
    ),
    (
        "a $ref to another document that changed: cannot be compared",
        at("x", {"$ref": "https://example.com/a.json"}),
        at("x", {"$ref": "https://example.com/b.json"}),
        None,
        [(P, U, "$ref to another document")],
    ),
    (
        "a property name that needs escaping in a pointer",
        at("a/b~c", NUM),
        at("a/b~c", INT),
        None,
        [("/properties/a~1b~0c", N, "type narrowed number -> integer")],
    ),
]


def _expand() -> list[Any]:
    params = []
    for name, old, new, only, expected in CASES:
        for kind in ("request", "response") if only is None else (only,):
            params.append(pytest.param(old, new, kind, expected, id=f"{kind}: {name}"))
    return params


@pytest.mark.parametrize(("old", "new", "kind", "expected"), _expand())
def test_each_change_is_found_and_judged_for_its_reader(
    old: Any, new: Any, kind: Kind, expected: list[tuple[str, Effect, str]]
) -> None:
    assert schema_problem(old) is None and schema_problem(new) is None
    findings = diff_schemas(old, new, kind)
    got = [(f.pointer, f.effect) for f in findings]
    assert got == [(pointer, effect) for pointer, effect, _ in expected], [f.message for f in findings]
    for finding, (_, effect, words) in zip(findings, expected, strict=True):
        assert words in finding.change, finding.change
        assert finding.breaking == (effect in BREAKS[kind]), finding
    assert is_breaking(findings) == any(effect in BREAKS[kind] for _, effect, _ in expected)


def test_the_consequence_is_said_in_the_readers_terms() -> None:
    old, new = at("x", {**NUM, "minimum": 0}), at("x", {**NUM, "minimum": 1})
    (request,) = diff_schemas(old, new, "request")
    assert request.message == "minimum raised 0 -> 1 (a request the old schema accepted is refused)"
    (response,) = diff_schemas(new, old, "response")
    assert response.message == "minimum lowered 1 -> 0 (consumers may receive what the old schema ruled out)"
    (dropped,) = diff_schemas(at("x", NUM), obj({}), "response")
    assert dropped.breaking and dropped.consequence == "consumers reading it lose it"
    (unknown,) = diff_schemas(at("x", {"anyOf": [NUM]}), at("x", {"anyOf": [STR]}), "response")
    assert unknown.breaking and "cannot be compared, review by hand" in unknown.message
    assert unknown.as_dict()["effect"] == "unknown"


@pytest.mark.parametrize(
    ("document", "words"),
    [
        ({"type": "strin"}, "not a valid JSON Schema (draft 2020-12)"),
        ({"properties": {"x": {"minimum": "0"}}}, "at /properties/x/minimum"),
        ({"$ref": "#/$defs/missing"}, "$ref '#/$defs/missing' at (root) resolves to nothing"),
        (at("x", {"$ref": "#nowhere"}), "at /properties/x resolves to nothing"),
    ],
)
def test_an_unusable_schema_is_named_with_its_problem(document: Any, words: str) -> None:
    problem = schema_problem(document)
    assert problem is not None and words in problem, problem
