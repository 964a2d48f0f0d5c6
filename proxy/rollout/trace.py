"""Backtest traces: one request per JSONL line, with what *each* version answered.

    {"t": 12.345, "key": "u-42", "route": "infer",
     "baseline":  {"status": 200, "latency_ms": 31.2, "score": 0.71, "contract_ok": true},
     "candidate": {"status": 200, "latency_ms": 35.0, "score": 0.69, "contract_ok": true}}

Pure: parsing and writing lines, nothing else. ``t`` is seconds from the trace's start and never goes
back; ``key`` (the sticky key) and ``route`` are optional; per outcome ``score``, ``contract_ok``
(default true), ``cost`` and ``violations`` (default 0) are optional. ``status`` 0 is a failure with no
answer (connect, timeout); 5xx is an upstream failure; an answer that breaks the contract is a failure
too. That is the evidence's own reading of an attempt, so a replay counts what the proxy would have.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, TypeGuard

import orjson

from proxy.errors import TraceError


class Outcome(NamedTuple):
    """One version's answer to one traced request."""

    status: int
    latency_ms: float
    score: float | None = None
    contract_ok: bool = True
    cost: float | None = None
    violations: int = 0

    @property
    def failure_kind(self) -> str | None:
        """The evidence's failure kind (the controller's upstream error kinds), None for a good answer."""
        if self.status == 0:
            return "connect"
        if self.status >= 500:
            return "http_5xx"
        if not self.contract_ok:
            return "contract"
        return None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"status": self.status, "latency_ms": self.latency_ms}
        if self.score is not None:
            doc["score"] = self.score
        if not self.contract_ok:
            doc["contract_ok"] = False
        if self.cost is not None:
            doc["cost"] = self.cost
        if self.violations:
            doc["violations"] = self.violations
        return doc


class TracedRequest(NamedTuple):
    t: float
    key: str | None
    route: str | None
    baseline: Outcome
    candidate: Outcome

    def to_line(self) -> bytes:
        doc: dict[str, Any] = {"t": self.t}
        if self.key is not None:
            doc["key"] = self.key
        if self.route is not None:
            doc["route"] = self.route
        doc["baseline"] = self.baseline.to_json()
        doc["candidate"] = self.candidate.to_json()
        return orjson.dumps(doc) + b"\n"


def _finite(value: Any) -> TypeGuard[float]:
    # A JSON number, not a boolean (bool is an int). orjson already refuses NaN and 1e999; the check keeps
    # finiteness this function's promise rather than the parser's.
    kind = type(value)
    return (kind is float or kind is int) and math.isfinite(value)


def _outcome(doc: Any, role: str, line: int) -> Outcome:
    # The hot loop of a backtest: a few type checks per field, the optional ones only when present.
    if type(doc) is not dict:
        raise TraceError(line, f"{role} must be an object with status and latency_ms")
    status, latency = doc.get("status"), doc.get("latency_ms")
    if type(status) is not int or not (status == 0 or 100 <= status <= 599):
        raise TraceError(line, f"{role}.status must be 0 or an HTTP status, got {status!r}")
    if not _finite(latency) or latency < 0:
        raise TraceError(line, f"{role}.latency_ms must be a finite number >= 0, got {latency!r}")
    if len(doc) == 2:
        return Outcome(status, float(latency))
    score = doc.get("score")
    if score is not None and not _finite(score):
        raise TraceError(line, f"{role}.score must be a finite number, got {score!r}")
    contract_ok = doc.get("contract_ok", True)
    if type(contract_ok) is not bool:
        raise TraceError(line, f"{role}.contract_ok must be true or false, got {contract_ok!r}")
    cost = doc.get("cost")
    if cost is not None and (not _finite(cost) or cost < 0):
        raise TraceError(line, f"{role}.cost must be a finite number >= 0, got {cost!r}")
    violations = doc.get("violations", 0)
    if type(violations) is not int or violations < 0:
        raise TraceError(line, f"{role}.violations must be a count, got {violations!r}")
    return Outcome(
        status,
        float(latency),
        None if score is None else float(score),
        contract_ok,
        None if cost is None else float(cost),
        violations,
    )


def parse_line(raw: bytes | str, line: int) -> TracedRequest:
    """One trace line; :class:`TraceError` naming ``line`` when it is not a traced request."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise TraceError(line, f"not JSON ({exc})") from None
    if type(doc) is not dict:
        raise TraceError(line, "must be a JSON object")
    t = doc.get("t")
    if not _finite(t):
        raise TraceError(line, f"t must be a finite number of seconds, got {t!r}")
    key, route = doc.get("key"), doc.get("route")
    if key is not None and type(key) is not str:
        if type(key) is not int:
            raise TraceError(line, f"key must be a string, got {key!r}")
        key = str(key)
    if route is not None and type(route) is not str:
        raise TraceError(line, f"route must be a route name, got {route!r}")
    return TracedRequest(
        float(t),
        key,
        route,
        _outcome(doc.get("baseline"), "baseline", line),
        _outcome(doc.get("candidate"), "candidate", line),
    )


_INF = math.inf
_new = tuple.__new__  # a NamedTuple without its Python-level __new__: these are hot


def _lean_outcome(doc: Any, role: str, line: int) -> Outcome:
    # The shapes trace writers emit, checked in a few comparisons; anything else goes to _outcome, whose
    # reading (and error) it then is.
    if type(doc) is dict:
        n = len(doc)
        if n == 2 or n == 3:
            status, latency = doc.get("status"), doc.get("latency_ms")
            if (
                type(status) is int
                and (status == 0 or 100 <= status <= 599)
                and type(latency) is float
                and 0.0 <= latency < _INF
            ):
                if n == 2:
                    return _new(Outcome, (status, latency, None, True, None, 0))
                score = doc.get("score")
                if type(score) is float and -_INF < score < _INF:
                    return _new(Outcome, (status, latency, score, True, None, 0))
    return _outcome(doc, role, line)


def read_line(raw: bytes | str, line: int) -> TracedRequest:
    """:func:`parse_line`, faster: the same request, or the same :class:`TraceError`, for every line.
    The common shapes are checked inline; any other goes through ``parse_line``'s own checks."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return parse_line(raw, line)  # raises, with its message
    if type(doc) is not dict:
        return parse_line(raw, line)
    t, key, route = doc.get("t"), doc.get("key"), doc.get("route")
    if (
        type(t) is not float
        or not -_INF < t < _INF
        or (key is not None and type(key) is not str)
        or (route is not None and type(route) is not str)
    ):
        return parse_line(raw, line)
    return _new(
        TracedRequest,
        (
            t,
            key,
            route,
            _lean_outcome(doc.get("baseline"), "baseline", line),
            _lean_outcome(doc.get("candidate"), "candidate", line),
        ),
    )
