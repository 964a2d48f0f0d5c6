"""What the admin API accepts from a request: JSON bodies, rollout actions, ``If-Match``, the decisions limit.

Each rule is written once, here, and gives both the check a handler runs and the JSON Schema the OpenAPI
document shows for it: a field the document allows is a field the handler reads, a range the handler
enforces is the range the document states, and a value one accepts the other accepts too.

Errors follow the product's contract: a body that is not JSON (or not strict JSON: NaN, Infinity, invalid
UTF-8, a key given twice) or a malformed ``If-Match`` is 400; well-formed JSON with a bad value is 422
naming the field.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from proxy.content.text import printable
from proxy.errors import ApiError

REASON_MAX_LENGTH = 500


@dataclass(frozen=True, slots=True, kw_only=True)
class Number:
    """A finite JSON number (never a boolean) from 0 to ``high``, with at most ``decimals`` places."""

    high: float
    decimals: int | None = None
    description: str = ""

    def read(self, name: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ApiError(422, f"{name}: must be a number from 0 to {self.high:g}")
        if not 0 <= value <= self.high:
            raise ApiError(422, f"{name}: {value} is outside [0, {self.high:g}]")
        if self.decimals is not None:
            scaled = value * 10**self.decimals
            # A tolerance, not equality: 0.57 * 100 is 56.99999999999999 in binary floating point.
            if abs(scaled - round(scaled)) > 1e-6:
                step = 10**-self.decimals
                raise ApiError(
                    422, f"{name}: {value} has more than {self.decimals} decimals (resolution {step:g})"
                )
        return float(value)

    def schema(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"type": "number", "minimum": 0, "maximum": self.high}
        if self.decimals is not None:
            doc["multipleOf"] = 10**-self.decimals
        if self.description:
            doc["description"] = self.description
        return doc


@dataclass(frozen=True, slots=True, kw_only=True)
class Text:
    """A JSON string of at most ``max_length`` characters."""

    max_length: int
    description: str = ""

    def read(self, name: str, value: Any) -> str:
        if not isinstance(value, str) or len(value) > self.max_length:
            raise ApiError(422, f"{name}: must be a string of at most {self.max_length} characters")
        return value

    def schema(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"type": "string", "maxLength": self.max_length}
        if self.description:
            doc["description"] = self.description
        return doc


@dataclass(frozen=True, slots=True, kw_only=True)
class Body:
    """A JSON object with these fields and no others; ``required`` ones must be present. An empty request
    body reads as ``{}``, so a body without required fields may be left out altogether."""

    fields: Mapping[str, Number | Text] = field(default_factory=dict)
    required: tuple[str, ...] = ()

    @property
    def needed(self) -> bool:
        """Whether a request must carry a body (the OpenAPI ``requestBody.required``)."""
        return bool(self.required)

    def read(self, doc: dict[str, Any]) -> dict[str, Any]:
        """The fields of ``doc``, each checked; 422 naming the first field at fault."""
        for name in self.required:
            if name not in doc:
                raise ApiError(422, f"{name}: required")
        unknown = sorted(set(doc) - set(self.fields))
        if unknown:
            raise ApiError(422, f"{printable(unknown[0], 64)}: unknown field")
        return {name: self.fields[name].read(name, value) for name, value in doc.items()}

    def schema(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "type": "object",
            "additionalProperties": False,
            "properties": {name: rule.schema() for name, rule in self.fields.items()},
        }
        if self.required:
            doc["required"] = list(self.required)
        return doc


REASON = Text(
    max_length=REASON_MAX_LENGTH,
    description="why, in the operator's words; masked for PII, then kept in the state and the decision log",
)
WEIGHTS = Body(
    fields={
        "canary": Number(high=100, decimals=2, description="the candidate's share of traffic in percent"),
        "reason": REASON,
    },
    required=("canary",),
)
SHADOW = Body(
    fields={
        "sample": Number(high=1, description="the share of baseline traffic mirrored to the candidate"),
        "reason": REASON,
    },
    required=("sample",),
)
ROLLOUT_ACTION = Body(fields={"reason": REASON})
# POST /rollout/<name>: every move an operator can ask for, with what it does.
ROLLOUT_ACTIONS = {
    "start": "start a rollout from idle: the shadow phase first when canary.shadow_samples > 0, else the "
    "first step",
    "pause": "stop judging; the weight stays",
    "resume": "back to the paused phase at its step's weight; the step's evidence starts afresh",
    "promote": "send the candidate 100% now",
    "rollback": "weight 0 at once; the phase latches until re-armed",
    "rearm": "release a rolled-back latch: back to idle at weight 0",
}
CONFIG_RELOAD = Body()


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for key, value in pairs:
        if key in doc:
            raise ApiError(400, f"{printable(key, 64)}: given more than once in the body")
        doc[key] = value
    return doc


def json_object(raw: bytes) -> dict[str, Any]:
    """A request body as a JSON object: ``{}`` when empty, 400 when not strict JSON, 422 when no object."""
    if not raw.strip():
        return {}
    try:
        orjson.loads(raw)  # strict JSON first: no NaN or Infinity, valid UTF-8
        # ...then once more for its keys: {"canary": 1, "canary": 99} is refused, not read as 99.
        doc = json.loads(raw, object_pairs_hook=_unique_keys)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"body is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ApiError(422, "body must be a JSON object")
    return doc


# If-Match: a revision as ETag gives it ("7"), weak or bare for convenience, or "*" (any revision). At most
# 18 digits: any revision fits, and a longer run is refused before it is ever converted to an int.
IF_MATCH_PATTERN = r'^(\*|(W/)?"[0-9]{1,18}"|[0-9]{1,18})$'
_IF_MATCH = re.compile(IF_MATCH_PATTERN)


def if_match(raw: str | None) -> int | None:
    """The revision an ``If-Match`` header names; None when absent or ``*``; 400 when malformed."""
    if raw is None or raw == "*":
        return None
    if _IF_MATCH.fullmatch(raw) is None:
        raise ApiError(400, f"If-Match must be a revision as given in ETag, not {printable(raw, 64)!r}")
    return int(raw.removeprefix("W/").strip('"'))


@dataclass(frozen=True, slots=True, kw_only=True)
class Count:
    """A whole number from ``low`` to ``high`` in a query string, written in ASCII digits only."""

    low: int
    high: int
    default: int
    description: str = ""

    def read(self, name: str, raw: str | None) -> int:
        if raw is None:
            return self.default
        if not re.fullmatch(r"[0-9]{1,12}", raw):  # not int(): it also takes " 5", "+5", "1_0" and "٥"
            raise ApiError(422, f"{name}: must be an integer")
        value = int(raw)
        if not self.low <= value <= self.high:
            raise ApiError(422, f"{name}: must be from {self.low} to {self.high}")
        return value

    def schema(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "type": "integer",
            "minimum": self.low,
            "maximum": self.high,
            "default": self.default,
        }
        if self.description:
            doc["description"] = self.description
        return doc


DECISIONS_LIMIT = Count(low=1, high=10_000, default=1000, description="the newest entries to return")
