"""Breaking changes between two versions of a request or response JSON Schema, in the consumer's terms (pure).

Every change is first classified by what it does to the set of documents the schema accepts: it
*narrows* it (the new schema refuses something the old accepted), *widens* it (the new accepts something
the old refused), or *changes* it both ways (a type swapped for another, a pattern rewritten). Which of
those breaks depends on who reads: a request schema is read by the model, so a narrowing breaks the
clients that send what used to be accepted; a response schema is read by consumers, so a widening breaks
them (they may receive what they could not before), and so does a property that disappears, because a
consumer may read it whatever the validation says.

The walk follows ``properties``, ``additionalProperties``, ``items`` and local ``$ref`` references (into
``$defs`` or anywhere in the document), and names each change by its JSON pointer in the instance's terms
(``/properties/features/properties/amount``), whatever ``$ref`` led there. Combinators and conditionals
(``anyOf``, ``oneOf``, ``allOf``, ``not``, ``if``/``then``/``else``), ``patternProperties`` and the other
keywords that make one subschema's meaning depend on another cannot be compared soundly by keyword; when
they differ the finding says "cannot be compared, review by hand" and counts as breaking, so CI fails
safe. Annotations (``title``, ``description``, ``examples``...) change nothing a validator sees and are not
reported.

Two judgements go beyond set inclusion. A property newly described on an open object (no
``additionalProperties: false``) is compatible for both readers, as schema authors mean it, although the
key took any value before. ``format`` is compared like ``pattern`` even though the proxy's validator treats
it as an annotation: a model or a consumer may enforce it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from fractions import Fraction
from typing import Any, Final, Literal
from urllib.parse import unquote

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

Kind = Literal["request", "response"]
KINDS: Final[tuple[Kind, ...]] = ("request", "response")


class Effect(Enum):
    """What a change does to the set of documents the schema accepts."""

    NARROWS = "narrows"  # the new schema refuses something the old accepted
    WIDENS = "widens"  # the new schema accepts something the old refused
    CHANGES = "changes"  # both at once
    REMOVES = "removes"  # a property is gone: consumers reading it lose it, whatever validation says
    ADDS = "adds"  # a property of an open object is now described: compatible by convention
    UNKNOWN = "unknown"  # too complex to compare keyword by keyword


_BREAKS: Final[Mapping[Kind, frozenset[Effect]]] = {
    "request": frozenset({Effect.NARROWS, Effect.CHANGES, Effect.UNKNOWN}),
    "response": frozenset({Effect.WIDENS, Effect.CHANGES, Effect.REMOVES, Effect.UNKNOWN}),
}

_CONSEQUENCE: Final[Mapping[tuple[Kind, Effect], str]] = {
    ("request", Effect.NARROWS): "a request the old schema accepted is refused",
    ("request", Effect.CHANGES): "a request the old schema accepted is refused",
    ("request", Effect.WIDENS): "the new schema accepts requests the old one refused",
    ("request", Effect.REMOVES): "the new schema no longer describes it",
    ("response", Effect.WIDENS): "consumers may receive what the old schema ruled out",
    ("response", Effect.CHANGES): "consumers may receive what the old schema ruled out",
    ("response", Effect.NARROWS): "consumers receive nothing the old schema ruled out",
    ("response", Effect.REMOVES): "consumers reading it lose it",
    ("request", Effect.ADDS): "clients may send it",
    ("response", Effect.ADDS): "consumers may read it",
    ("request", Effect.UNKNOWN): "cannot be compared, review by hand",
    ("response", Effect.UNKNOWN): "cannot be compared, review by hand",
}


@dataclass(frozen=True)
class Finding:
    """One change between the two schemas, judged for one kind of reader."""

    pointer: str
    """JSON pointer of the changed subschema in the instance's terms ("" for the root)."""
    change: str
    """What changed, e.g. ``minimum raised 0 -> 1``."""
    effect: Effect
    breaking: bool
    consequence: str
    """What it means for the reader, e.g. ``a request the old schema accepted is refused``."""

    @property
    def message(self) -> str:
        return f"{self.change} ({self.consequence})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "pointer": self.pointer,
            "breaking": self.breaking,
            "effect": self.effect.value,
            "change": self.change,
            "consequence": self.consequence,
        }


class UnusableSchema(ValueError):
    """A schema that is valid JSON Schema but cannot be read as one document: a local ``$ref`` that
    resolves to nothing. ``side`` is ``"old"`` or ``"new"``."""

    def __init__(self, side: str, problem: str) -> None:
        super().__init__(problem)
        self.side = side
        self.problem = problem


# Keywords whose subschemas interact (a union, an intersection, a condition, keys matched by pattern, or
# what other keywords evaluated): comparing them keyword by keyword is unsound, so a difference is
# reported for review.
COMPLEX: Final = (
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
    "patternProperties",
    "dependentSchemas",
    "dependentRequired",
    "propertyNames",
    "prefixItems",
    "contains",
    "minContains",
    "maxContains",
    "unevaluatedProperties",
    "unevaluatedItems",
    "$dynamicRef",
)
# Keywords that hold one subschema, several, or a map of them: where ``$ref``\ s can sit.
_ONE_SCHEMA: Final = frozenset(
    {
        "items",
        "additionalProperties",
        "not",
        "if",
        "then",
        "else",
        "contains",
        "propertyNames",
        "unevaluatedItems",
        "unevaluatedProperties",
        "contentSchema",
    }
)
_SCHEMA_LIST: Final = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
_SCHEMA_MAP: Final = frozenset(
    {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
)
_ANNOTATIONS: Final = frozenset(
    {
        "$schema",
        "$id",
        "$anchor",
        "$comment",
        "$defs",
        "definitions",
        "title",
        "description",
        "default",
        "examples",
        "deprecated",
        "readOnly",
        "writeOnly",
    }
)
_TYPES: Final = ("null", "boolean", "object", "array", "number", "string")  # integer: a part of number
_RANGES: Final = (("lower", "minimum", "exclusiveMinimum"), ("upper", "maximum", "exclusiveMaximum"))
_LENGTHS: Final = (
    ("minLength", "maxLength"),
    ("minItems", "maxItems"),
    ("minProperties", "maxProperties"),
)


def schema_problem(document: Any) -> str | None:
    """Why ``document`` is not a usable draft 2020-12 JSON Schema, or None when it is."""
    try:
        Draft202012Validator.check_schema(document)
    except SchemaError as exc:
        where = _pointer(exc.absolute_path)
        return f"not a valid JSON Schema (draft 2020-12): {exc.message}" + (f" at {where}" if where else "")
    for where, ref in _refs(document, ""):
        if _is_local(ref) and _target(document, ref) is _NOWHERE:
            return f"$ref {ref!r} at {where or '(root)'} resolves to nothing in this document"
    return None


def diff_schemas(old: Any, new: Any, kind: Kind) -> list[Finding]:
    """Every change from ``old`` to ``new`` that a validator sees, in walk order, each judged for a
    ``kind`` schema. Both must be valid schemas (see :func:`schema_problem`)."""
    walk = _Walk(old, new, kind)
    walk.compare(old, new, "")
    return walk.findings


def is_breaking(findings: Sequence[Finding]) -> bool:
    return any(f.breaking for f in findings)


class _Nowhere:
    __slots__ = ()


_NOWHERE: Final = _Nowhere()
_FALSE: Final = "false"  # a schema that accepts nothing (``false``), as distinct from a dict


class _External(Exception):
    """A ``$ref`` outside the document: its target is not here to compare."""


def _is_local(ref: str) -> bool:
    return ref.startswith("#")


def _pointer(parts: Iterable[Any]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _target(root: Any, ref: str) -> Any:
    """The subschema a local ``$ref`` names (a JSON pointer or a ``$anchor``), or ``_NOWHERE``."""
    fragment = unquote(ref[1:])
    if fragment and not fragment.startswith("/"):
        return next((node for node in _schemas(root) if node.get("$anchor") == fragment), _NOWHERE)
    node = root
    for raw in fragment.split("/")[1:]:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _NOWHERE
    return node


def _subschemas(node: dict[str, Any], where: str) -> Iterator[tuple[str, Any]]:
    for key, value in node.items():
        if key in _ONE_SCHEMA:
            yield f"{where}/{key}", value
        elif key in _SCHEMA_LIST and isinstance(value, list):
            yield from ((f"{where}/{key}/{i}", v) for i, v in enumerate(value))
        elif key in _SCHEMA_MAP and isinstance(value, dict):
            yield from ((f"{where}/{key}{_pointer([k])}", v) for k, v in value.items())


def _schemas(node: Any, where: str = "") -> Iterator[dict[str, Any]]:
    """Every subschema of ``node`` that is an object, ``node`` first (data under ``const``, ``enum``,
    ``default`` and ``examples`` is not a schema and is not entered)."""
    if isinstance(node, dict):
        yield node
        for at, sub in _subschemas(node, where):
            yield from _schemas(sub, at)


def _refs(node: Any, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield where, node["$ref"]
        for at, sub in _subschemas(node, where):
            yield from _refs(sub, at)


def _canon(value: Any) -> str:
    """A JSON value's identity as JSON Schema sees it: 1 and 1.0 are equal, 1 and true are not."""

    def norm(v: Any) -> Any:
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items()}
        if isinstance(v, list):
            return [norm(x) for x in v]
        return v

    return json.dumps(norm(value), sort_keys=True, ensure_ascii=False)


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


class _Walk:
    def __init__(self, old_root: Any, new_root: Any, kind: Kind) -> None:
        self.roots = {"old": old_root, "new": new_root}
        self.kind = kind
        self.findings: list[Finding] = []
        self._open: set[tuple[int, int]] = set()  # pairs being compared further up: a recursive schema

    def add(self, pointer: str, effect: Effect, change: str, consequence: str | None = None) -> None:
        self.findings.append(
            Finding(
                pointer=pointer,
                change=change,
                effect=effect,
                breaking=effect in _BREAKS[self.kind],
                consequence=consequence or _CONSEQUENCE[(self.kind, effect)],
            )
        )

    def resolve(self, side: str, node: Any, where: str) -> Any:
        """``node`` with its ``$ref`` chain followed: a dict, or ``_FALSE``."""
        seen: list[str] = []
        while isinstance(node, dict) and isinstance(node.get("$ref"), str):
            ref = node["$ref"]
            if not _is_local(ref):
                raise _External(ref)
            if ref in seen:
                raise UnusableSchema(side, f"$ref {ref!r} at {where or '(root)'} refers to itself")
            seen.append(ref)
            target = _target(self.roots[side], ref)
            if target is _NOWHERE:
                raise UnusableSchema(side, f"$ref {ref!r} at {where or '(root)'} resolves to nothing")
            siblings = {k: v for k, v in node.items() if k != "$ref" and k not in _ANNOTATIONS}
            if not siblings:
                node = target
            elif target is True:
                node = siblings
            elif isinstance(target, dict) and not (siblings.keys() & target.keys() - _ANNOTATIONS):
                node = {**target, **siblings}  # both apply, and no keyword is set twice
            else:
                # The same keyword on both sides of a $ref is an intersection this walk cannot express.
                node = {"allOf": [target, siblings]}
        if node is True:
            return {}
        if node is False:
            return _FALSE
        return node

    def inline(self, side: str, node: Any, stack: tuple[str, ...] = ()) -> Any:
        """``node`` with its local ``$ref`` references replaced by their targets (a recursive one is kept
        as the reference), so that two constructs compare equal only when they mean the same."""
        if isinstance(node, list):
            return [self.inline(side, v, stack) for v in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and _is_local(ref) and ref not in stack:
            target = _target(self.roots[side], ref)
            rest = {k: self.inline(side, v, stack) for k, v in node.items() if k != "$ref"}
            return {**rest, "$ref": self.inline(side, target, (*stack, ref))}
        return {k: self.inline(side, v, stack) for k, v in node.items() if k not in _ANNOTATIONS}

    def compare(self, old_raw: Any, new_raw: Any, where: str) -> None:
        try:
            old = self.resolve("old", old_raw, where)
            new = self.resolve("new", new_raw, where)
        except _External as exc:
            if _canon(old_raw) != _canon(new_raw):
                self.add(where, Effect.UNKNOWN, f"$ref to another document ({exc}) differs")
            return
        # A recursive schema comes back to a pair of nodes already being compared further up (the same
        # $ref objects, or the same targets): what it holds is reported there, once.
        keys = {(id(old_raw), id(new_raw)), (id(old), id(new))}
        if keys & self._open:
            return
        self._open |= keys
        try:
            self._compare(old, new, where)
        finally:
            self._open -= keys

    def _compare(self, old: Any, new: Any, where: str) -> None:
        if old is _FALSE or new is _FALSE:
            if old is _FALSE and new is not _FALSE:
                self.add(where, Effect.WIDENS, "was false (nothing allowed), now allowed")
            elif new is _FALSE and old is not _FALSE:
                self.add(where, Effect.NARROWS, "now false (nothing allowed)")
            return
        for keyword in COMPLEX:
            if keyword in old or keyword in new:
                before, after = self.inline("old", old.get(keyword)), self.inline("new", new.get(keyword))
                if _canon(before) != _canon(after):
                    self.add(f"{where}/{keyword}", Effect.UNKNOWN, f"{keyword} differs")
        self.types(old, new, where)
        self.values(old, new, where)
        self.bounds(old, new, where)
        self.multiple(old, new, where)
        self.lengths(old, new, where)
        for keyword in ("pattern", "format"):
            self.text_rule(old, new, where, keyword)
        if old.get("uniqueItems", False) != new.get("uniqueItems", False):
            if new.get("uniqueItems", False):
                self.add(where, Effect.NARROWS, "uniqueItems turned true")
            else:
                self.add(where, Effect.WIDENS, "uniqueItems no longer true")
        self.objects(old, new, where)
        if "items" in old or "items" in new:
            self.compare(old.get("items", True), new.get("items", True), f"{where}/items")

    def types(self, old: dict[str, Any], new: dict[str, Any], where: str) -> None:
        before, after = _type_set(old), _type_set(new)
        if before == after:
            return
        shown = f"{_show_types(old)} -> {_show_types(new)}"
        narrower, wider = _covers(before, after), _covers(after, before)
        if narrower:
            self.add(where, Effect.NARROWS, f"type narrowed {shown}")
        elif wider:
            self.add(where, Effect.WIDENS, f"type widened {shown}")
        else:
            self.add(where, Effect.CHANGES, f"type changed {shown}")

    def values(self, old: dict[str, Any], new: dict[str, Any], where: str) -> None:
        before, after = _allowed_values(old), _allowed_values(new)
        word = "enum" if "enum" in old or "enum" in new else "const"
        if before is None and after is None:
            return
        if before is None:
            assert after is not None
            self.add(where, Effect.NARROWS, f"{word} added {_show(list(after.values()))}")
        elif after is None:
            self.add(where, Effect.WIDENS, f"{word} removed (was {_show(list(before.values()))})")
        else:
            removed = [v for k, v in before.items() if k not in after]
            added = [v for k, v in after.items() if k not in before]
            if removed:
                plural = "s" if len(removed) > 1 else ""
                self.add(where, Effect.NARROWS, f"{word} value{plural} removed {_show_list(removed)}")
            if added:
                plural = "s" if len(added) > 1 else ""
                self.add(where, Effect.WIDENS, f"{word} value{plural} added {_show_list(added)}")

    def bounds(self, old: dict[str, Any], new: dict[str, Any], where: str) -> None:
        for side, inclusive, exclusive in _RANGES:
            before = _bound(old, inclusive, exclusive, side)
            after = _bound(new, inclusive, exclusive, side)
            if before == after:
                continue
            moved = ("raised", "lowered") if side == "lower" else ("lowered", "raised")
            if after is None:
                assert before is not None
                self.add(where, Effect.WIDENS, f"{before.keyword} removed (was {_show(before.value)})")
            elif before is None:
                self.add(where, Effect.NARROWS, f"{after.keyword} added {_show(after.value)}")
            else:
                tighter = after.tighter_than(before)
                verb = moved[0] if tighter else moved[1]
                if before.keyword == after.keyword:
                    change = f"{after.keyword} {verb} {_show(before.value)} -> {_show(after.value)}"
                elif before.value == after.value:
                    change = f"{side} bound made {'exclusive' if after.exclusive else 'inclusive'}: "
                    change += (
                        f"{before.keyword} {_show(before.value)} -> {after.keyword} {_show(after.value)}"
                    )
                else:
                    change = f"{side} bound {verb}: {before.keyword} {_show(before.value)} -> "
                    change += f"{after.keyword} {_show(after.value)}"
                self.add(where, Effect.NARROWS if tighter else Effect.WIDENS, change)

    def multiple(self, old: dict[str, Any], new: dict[str, Any], where: str) -> None:
        before, after = old.get("multipleOf"), new.get("multipleOf")
        if before is None and after is None:
            return
        if before is None:
            self.add(where, Effect.NARROWS, f"multipleOf added {_show(after)}")
        elif after is None:
            self.add(where, Effect.WIDENS, f"multipleOf removed (was {_show(before)})")
        else:
            ratio = Fraction(str(after)) / Fraction(str(before))
            if ratio == 1:
                return
            shown = f"multipleOf changed {_show(before)} -> {_show(after)}"
            if ratio.denominator == 1:
                self.add(where, Effect.NARROWS, shown)
            elif ratio.numerator == 1:
                self.add(where, Effect.WIDENS, shown)
            else:
                self.add(where, Effect.CHANGES, shown)

    def lengths(self, old: dict[str, Any], new: dict[str, Any], where: str) -> None:
        for low, high in _LENGTHS:
            before, after = old.get(low, 0), new.get(low, 0)
            if before != after:
                verb = "raised" if after > before else "lowered"
                effect = Effect.NARROWS if after > before else Effect.WIDENS
                self.add(where, effect, f"{low} {verb} {before} -> {after}")
            before, after = old.get(high), new.get(high)
            if before == after:
                continue
            if after is None:
                self.add(where, Effect.WIDENS, f"{high} removed (was {before})")
            elif before is None:
                self.add(where, Effect.NARROWS, f"{high} added {after}")
            else:
                verb = "lowered" if after < before else "raised"
                effect = Effect.NARROWS if after < before else Effect.WIDENS
                self.add(where, effect, f"{high} {verb} {before} -> {after}")

    def text_rule(self, old: dict[str, Any], new: dict[str, Any], where: str, keyword: str) -> None:
        before, after = old.get(keyword), new.get(keyword)
        if before == after:
            return
        if before is None:
            self.add(where, Effect.NARROWS, f"{keyword} added {_show(after)}")
        elif after is None:
            self.add(where, Effect.WIDENS, f"{keyword} removed (was {_show(before)})")
        else:
            self.add(where, Effect.CHANGES, f"{keyword} changed {_show(before)} -> {_show(after)}")

    def objects(self, old: dict[str, Any], new: dict[str, Any], where: str) -> None:
        old_props: dict[str, Any] = old.get("properties", {})
        new_props: dict[str, Any] = new.get("properties", {})
        old_required, new_required = set(old.get("required", [])), set(new.get("required", []))
        old_extra, new_extra = _extra(old), _extra(new)
        patterns = "patternProperties" in old or "patternProperties" in new
        for name in _union(old_props, new_props, old.get("required", []), new.get("required", [])):
            at = f"{where}/properties{_pointer([name])}"
            was_required, now_required = name in old_required, name in new_required
            if name in old_props and name not in new_props and self.kind == "response":
                required = " (it was required)" if was_required else ""
                self.add(at, Effect.REMOVES, f"property removed{required}")
                continue
            if now_required and not was_required:
                self.add(at, Effect.NARROWS, "newly required")
            elif was_required and not now_required:
                change = "made optional" if name in new_props else "no longer required"
                why = "consumers relying on it may find it missing" if self.kind == "response" else None
                self.add(at, Effect.WIDENS, change, why)
            if name in old_props and name in new_props:
                self.compare(old_props[name], new_props[name], at)
            elif name in old_props:
                self.removed_from_request(old_props[name], new_extra, at, patterns)
            elif name in new_props:
                self.added(old_extra, new_props[name], at, patterns)
        if old_extra is not new_extra and (isinstance(old_extra, dict) or isinstance(new_extra, dict)):
            self.compare(old_extra, new_extra, f"{where}/additionalProperties")
        elif old_extra is True and new_extra is False:
            self.add(f"{where}/additionalProperties", Effect.NARROWS, "additionalProperties turned false")
        elif old_extra is False and new_extra is True:
            self.add(f"{where}/additionalProperties", Effect.WIDENS, "additionalProperties no longer false")

    def removed_from_request(self, old_prop: Any, new_extra: Any, at: str, patterns: bool) -> None:
        # The key is no longer described; what the new schema does with it is additionalProperties' say.
        if patterns:
            self.add(at, Effect.UNKNOWN, "property removed where patternProperties may match it")
        elif new_extra is False:
            self.add(at, Effect.NARROWS, "property removed while additionalProperties is false")
        elif new_extra is True:
            self.add(at, Effect.WIDENS, "property removed; any value is now accepted under its name")
        else:
            self.compare(old_prop, new_extra, at)

    def added(self, old_extra: Any, new_prop: Any, at: str, patterns: bool) -> None:
        described = _describe(new_prop)
        if patterns:
            self.add(at, Effect.UNKNOWN, "property added where patternProperties may match it")
        elif old_extra is False:
            self.add(at, Effect.WIDENS, f"property added{described} where additionalProperties was false")
        elif old_extra is True:
            # Strictly a narrowing (the key took any value before), but describing a new property of an
            # open object is the compatible change by convention, and what schema authors mean by it.
            self.add(at, Effect.ADDS, f"property added{described}")
        else:
            self.compare(old_extra, new_prop, at)


@dataclass(frozen=True)
class _Bound:
    keyword: str
    value: float
    exclusive: bool
    side: str

    def tighter_than(self, other: _Bound) -> bool:
        if self.value != other.value:
            return self.value > other.value if self.side == "lower" else self.value < other.value
        return self.exclusive and not other.exclusive


def _bound(node: dict[str, Any], inclusive: str, exclusive: str, side: str) -> _Bound | None:
    """The tighter of the inclusive and exclusive bound on one side, or None."""
    found = [
        _Bound(keyword, node[keyword], keyword == exclusive, side)
        for keyword in (inclusive, exclusive)
        if isinstance(node.get(keyword), int | float) and not isinstance(node.get(keyword), bool)
    ]
    if not found:
        return None
    if len(found) == 2 and found[0].tighter_than(found[1]):
        return found[0]
    return found[-1]


def _extra(node: dict[str, Any]) -> Any:
    """``additionalProperties`` as True (any value), False (none) or a schema that constrains."""
    extra = node.get("additionalProperties", True)
    if isinstance(extra, dict) and not extra.keys() - _ANNOTATIONS:
        return True
    return extra


def _type_set(node: dict[str, Any]) -> frozenset[str]:
    declared = node.get("type")
    if declared is None:
        return frozenset(_TYPES)
    named = {declared} if isinstance(declared, str) else set(declared)
    if "number" in named:
        named.discard("integer")  # a number already takes every integer
    return frozenset(named)


def _covers(wide: frozenset[str], narrow: frozenset[str]) -> bool:
    """Whether every value of a type in ``narrow`` has a type in ``wide``."""
    return all(t in wide or (t == "integer" and "number" in wide) for t in narrow)


def _show_types(node: dict[str, Any]) -> str:
    declared = node.get("type")
    if declared is None:
        return "any"
    return declared if isinstance(declared, str) else _show(declared)


def _show_list(values: list[Any]) -> str:
    return ", ".join(_show(v) for v in values)


def _allowed_values(node: dict[str, Any]) -> dict[str, Any] | None:
    """The values ``enum`` and ``const`` leave, by canonical form, or None when they leave any."""
    allowed: dict[str, Any] | None = None
    if "enum" in node:
        allowed = {_canon(v): v for v in node["enum"]}
    if "const" in node:
        key = _canon(node["const"])
        allowed = {key: node["const"]} if allowed is None or key in allowed else {}
    return allowed


def _union(*names: Any) -> list[str]:
    """Names in first-seen order."""
    seen: dict[str, None] = {}
    for group in names:
        seen.update((n, None) for n in group)
    return list(seen)


def _describe(node: Any) -> str:
    if isinstance(node, dict) and "type" in node:
        return f" (type {_show_types(node)})"
    return ""
