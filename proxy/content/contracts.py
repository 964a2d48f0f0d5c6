"""Strict JSON and compiled JSON Schema contracts (pure; no I/O beyond reading a schema once).

``orjson`` parses: it refuses ``NaN``/``Infinity`` literals and numbers that overflow a double, and
bounds nesting, which is what a model contract wants. Schemas are compiled once with ``jsonschema-rs``
(draft 2020-12); checking a small document costs well under a microsecond.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import jsonschema_rs
import orjson

from proxy.config.model import RouteConfig, StickyKey


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()


class InvalidJSON(ValueError):
    """The bytes are not strict JSON."""


def parse_json(data: bytes) -> Any:
    """Parse strict JSON; raise :class:`InvalidJSON` with orjson's position-bearing message."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidJSON(str(exc)) from exc


def resolve_pointer(doc: Any, pointer: str) -> Any:
    """RFC 6901 lookup; :data:`MISSING` when any step is absent."""
    if pointer == "":
        return doc
    node = doc
    for raw in pointer[1:].split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict):
            if part not in node:
                return MISSING
            node = node[part]
        elif isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                return MISSING
            node = node[int(part)]
        else:
            return MISSING
    return node


def json_path(parts: list[str | int]) -> str:
    """An instance path as a JSON pointer (``/features/amount``), ``/`` for the root."""
    return "/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in parts) if parts else "/"


@dataclass(frozen=True, slots=True)
class Violation:
    path: str  # JSON pointer to the failing value
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class Contract:
    """A compiled JSON Schema. ``check`` is the hot path; ``explain`` runs only on failure."""

    def __init__(self, schema: dict[str, Any], *, source: str = "") -> None:
        self.source = source
        self._validator = jsonschema_rs.Draft202012Validator(schema)

    @classmethod
    def from_file(cls, path: Path) -> Contract:
        return cls(orjson.loads(path.read_bytes()), source=str(path))

    def check(self, doc: Any) -> Violation | None:
        try:
            if self._validator.is_valid(doc):
                return None
        except ValueError as exc:
            return _unchecked(exc)
        return self.explain(doc)

    def accepts(self, doc: Any) -> bool:
        """Whether ``doc`` meets the schema: ``check`` without the explanation (a count needs no message)."""
        try:
            return bool(self._validator.is_valid(doc))
        except ValueError:
            return False  # too deep to check: what cannot be checked does not meet the contract

    def explain(self, doc: Any) -> Violation:
        try:
            for err in self._validator.iter_errors(doc):
                return Violation(path=json_path(list(err.instance_path)), message=err.message)
        except ValueError as exc:
            return _unchecked(exc)
        return Violation(path="/", message="invalid")


def _unchecked(exc: ValueError) -> Violation:
    # The validator refuses documents nested deeper than it recurses (a few hundred levels) that orjson
    # parses (up to 1024): what cannot be checked does not meet the contract.
    return Violation(path="/", message=f"cannot be checked against the schema ({exc})")


def score_of(doc: Any, pointer: str) -> float | None:
    """The model's numeric output at ``pointer``; None when absent or not a number."""
    # The usual pointer is one top-level key ("/score"): a dict lookup, not a pointer walk.
    if isinstance(doc, dict) and pointer.count("/") == 1 and "~" not in pointer:
        value = doc.get(pointer[1:], MISSING)
    else:
        value = resolve_pointer(doc, pointer)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def needs_body(key: StickyKey | None) -> bool:
    return key is not None and key.source == "json"


@dataclass(frozen=True, slots=True)
class CompatContract:
    """One of the route's ``compat_schemas``, compiled: an older response schema consumers still read."""

    name: str  # the ``schema`` label of rollguard_compat_violations_total
    contract: Contract


def compat_breaches(compat: tuple[CompatContract, ...], doc: Any) -> tuple[str, ...]:
    """The names of the compat schemas that ``doc`` does not meet, in configured order."""
    return tuple(c.name for c in compat if not c.contract.accepts(doc))


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    route: RouteConfig
    request_contract: Contract | None
    response_contract: Contract | None
    inspect_bytes: int
    # Checked against the candidate's inspected answers only; empty for a route without compat_schemas.
    compat: tuple[CompatContract, ...] = ()

    @classmethod
    def build(cls, route: RouteConfig, inspect_bytes: int) -> CompiledRoute:
        return cls(
            route=route,
            request_contract=Contract.from_file(route.request_schema) if route.request_schema else None,
            response_contract=Contract.from_file(route.response_schema) if route.response_schema else None,
            inspect_bytes=inspect_bytes,
            compat=tuple(
                CompatContract(name=s.name, contract=Contract.from_file(s.path)) for s in route.compat_schemas
            ),
        )

    @property
    def needs_json(self) -> bool:
        return (
            self.request_contract is not None
            or needs_body(self.route.sticky_key)
            or self.route.segment is not None
        )

    @property
    def inspects_response(self) -> bool:
        return self.response_contract is not None or self.route.score is not None


def scalar_at(doc: Any, pointer: str) -> str | None:
    """The string, number or boolean at ``pointer`` in ``doc``, as text; None when it is absent, null, an
    object or a list (no identity or label can be made of those)."""
    value = resolve_pointer(doc, pointer)
    if value is MISSING or value is None or isinstance(value, dict | list):
        return None
    return str(value)
