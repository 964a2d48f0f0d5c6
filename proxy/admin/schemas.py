"""JSON Schemas (draft 2020-12) of what the admin API answers, for its OpenAPI document.

Where an answer is a dataclass's serialisation (the rollout state, a gate's verdict, the gate thresholds, the
candidate's manifest verdict, a version's figures), its schema is derived from the dataclass's fields and
their types, so a field added, renamed or retyped there changes the document with it. The rest is written
here, next to those, and ``tests/admin/test_openapi.py`` validates live answers against every schema.

Closed or open, chosen per object: ``additionalProperties: false`` where this package or a dataclass
decides every key (``/status`` itself, the state, the derived objects), so a key appearing there without
the document knowing fails a test; open where another part of the proxy writes a summary that may grow
(pool and trip-wire figures, the reports, decision-log entries, which the log keeps from older versions
too): the keys listed are ``required`` and always present, and new ones are not a breaking change.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

from proxy.config.model import GatesConfig
from proxy.reports.staging import FORMAT as STAGING_FORMAT
from proxy.rollout.decide import Action, GateResult
from proxy.rollout.figures import QUANTILES, VersionFigures
from proxy.rollout.manifest import ManifestVerdict
from proxy.rollout.state import RolloutState
from proxy.upstream.breaker import BreakerState

Schema = dict[str, Any]
_SCALARS: Mapping[Any, str] = {int: "integer", float: "number", str: "string", bool: "boolean"}


def of_type(tp: Any) -> Schema:
    """The schema of a value of Python type ``tp`` as orjson writes it (enums as their values)."""
    if tp is type(None):
        return {"type": "null"}
    if tp in _SCALARS:
        return {"type": _SCALARS[tp]}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"enum": [member.value for member in tp]}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return of_dataclass(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (types.UnionType, typing.Union):
        options = [of_type(a) for a in args]
        if all(set(o) == {"type"} for o in options):
            return {"type": [o["type"] for o in options]}
        if all("enum" in o or o == {"type": "null"} for o in options):
            # Literal["a"] | None, an Enum | None: one enum, holding null too
            return {"enum": [v for o in options for v in o.get("enum", [None])]}
        return {"anyOf": options}
    if origin in (tuple, list) and args:
        return {"type": "array", "items": of_type(args[0])}
    if origin in (dict, Mapping):
        return {"type": "object", "additionalProperties": of_type(args[1])}
    raise TypeError(f"no JSON Schema for {tp!r}")


def of_dataclass(
    cls: type, *, required: Literal["all", "undefaulted"] = "all", extra: Mapping[str, Schema] | None = None
) -> Schema:
    """A closed object schema with a property per field of ``cls``, plus ``extra`` (what its ``to_json``
    adds, such as a property's value). ``required``: every key (a serialisation writes them all) or only
    the fields without a default (what a reader of stored records insists on)."""
    hints = typing.get_type_hints(cls)
    props = {f.name: of_type(hints[f.name]) for f in dataclasses.fields(cls)}
    needed = [
        f.name
        for f in dataclasses.fields(cls)
        if required == "all"
        or (f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
    ]
    return {
        "type": "object",
        "additionalProperties": False,
        "required": needed + (list(extra or {}) if required == "all" else []),
        "properties": {**props, **(extra or {})},
    }


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


_NUMBER_OR_NULL: Schema = {"type": ["number", "null"]}
_TEXT_OR_NULL: Schema = {"type": ["string", "null"]}
_COUNT: Schema = {"type": "integer", "minimum": 0}
_LATENCY: Schema = {
    "type": "object",
    "description": "milliseconds; null where nothing was measured",
    "required": [name for name, _ in QUANTILES],
    "properties": {name: _NUMBER_OR_NULL for name, _ in QUANTILES},
}


def _object(
    required: Mapping[str, Schema], optional: Mapping[str, Schema] | None = None, **kw: Any
) -> Schema:
    return {
        "type": "object",
        "required": list(required),
        "properties": {**required, **(optional or {})},
        **kw,
    }


def _per_role(item: Schema) -> Schema:
    return _object({"baseline": item, "candidate": item})


# -- the rollout state ---------------------------------------------------------------------------------------

_WEIGHT = {"type": "number", "minimum": 0, "maximum": 100, "description": "the candidate's share, percent"}
STATE_RECORD = of_dataclass(RolloutState, extra={"weight": _WEIGHT})
STORED_STATE = of_dataclass(RolloutState, required="undefaulted", extra={"weight": _WEIGHT})
ROLLOUT_STATE: Schema = {
    **STATE_RECORD,
    "description": "the rollout state; its revision is the ETag and what If-Match names",
    "required": [*STATE_RECORD["required"], "weights"],
    "properties": {**STATE_RECORD["properties"], "weights": _per_role({"type": "number", "minimum": 0})},
}

# -- what /status is made of ----------------------------------------------------------------------------

VERSION_FIGURES = of_dataclass(VersionFigures, extra={"error_rate": _NUMBER_OR_NULL})
VERSION_FIGURES["properties"]["latency_ms"] = _LATENCY
VERSION_FIGURES["properties"]["source"]["description"] = (
    "mirror: the candidate's answers to mirrored requests (the shadow phase)"
)
GATE_RESULT = of_dataclass(GateResult)
_CIRCUIT = _object(
    {"state": of_type(BreakerState), "consecutive_failures": _COUNT, "opened": _COUNT},
    description="the circuit breaker: state, the current run of failures, times it has opened",
)
UPSTREAM_POOL = _object(
    {
        "url": {"type": "string"},
        "version": {"type": "string"},
        "limit": {"type": "integer", "minimum": 1},
        "in_flight": _COUNT,
        "circuit": _CIRCUIT,
    }
)
_WINDOW = _object(
    {
        "requests": _COUNT,
        "failures": _COUNT,
        "error_rate": _NUMBER_OR_NULL,
        "decided": _COUNT,
        "positives": _COUNT,
        "decision_rate": _NUMBER_OR_NULL,
        "scores": _COUNT,
        "latency_ms": _LATENCY,
        "policy_violations": _COUNT,
        "cost": {"type": "number"},
        "cost_per_1k": _NUMBER_OR_NULL,
    },
    description="one version's evidence since the current step began",
)
_CONTROLLER = _object(
    {
        "window": _object(
            {
                "baseline": _WINDOW,
                "candidate": _WINDOW,
                "paired": _object({"pairs": _COUNT, "candidate_only": _COUNT, "baseline_only": _COUNT}),
                "seconds": {"type": "number", "minimum": 0},
            },
            {"mirror": ref("VersionFigures")},
            description="the window in progress; mirror (shadow phase only): the candidate's figures on "
            "the mirrored requests",
        ),
        "last_decision": {
            "anyOf": [
                {"type": "null"},
                _object({"action": of_type(Action), "reason": {"type": "string"}}),
            ]
        },
        "gates": {"type": "array", "items": ref("GateResult"), "description": "the last window's gates"},
        "tripwire": _object(
            {
                "llr": {"type": "number"},
                "upper": {"type": "number"},
                "lower": {"type": "number"},
                "consecutive": _COUNT,
                "baseline_rate": {"type": "number"},
                "candidate_share": _NUMBER_OR_NULL,
                "sprt_active": {"type": "boolean"},
                "tripped": _TEXT_OR_NULL,
                "armed": {"type": "boolean"},
            }
        ),
        "needs": {
            "description": "what an inconclusive step still needs; null otherwise",
            "anyOf": [
                {"type": "null"},
                _object(
                    {
                        "per_gate": {"type": "object", "additionalProperties": {"type": ["integer", "null"]}},
                        "candidate_requests": _COUNT,
                        "more": {"type": ["integer", "null"]},
                        "eta_s": _NUMBER_OR_NULL,
                        "max_hold_left_s": {"type": "number"},
                    }
                ),
            ],
        },
        "interval_s": {"type": "number"},
        "steps": {"type": "array", "items": {"type": "number"}},
        "shadow_samples": _COUNT,
        "thresholds": of_dataclass(GatesConfig),
    },
    additionalProperties=False,
)
_RELOAD_RECORD = _object(
    {
        "ts": {"type": "string"},
        "actor": {"type": "string"},
        "action": {"const": "config_reload"},
        "outcome": {"enum": ["ok", "error"]},
        "generation": {"type": "integer", "minimum": 1},
        "reason": {"type": "string"},
    },
    {
        "changed": {"type": "array", "items": {"type": "string"}, "description": "the sections that changed"},
        "restart_required": {
            "type": "array",
            "items": {"type": "string"},
            "description": "changed keys only a restart applies",
        },
        "candidate_reset": {"type": "string"},
        "error": {"type": "string"},
    },
)
STATUS = _object(
    {
        "rollguard": {"type": "string", "description": "the proxy's version"},
        "uptime_s": {"type": "number", "minimum": 0},
        "rollout": ref("RolloutState"),
        "versions": _per_role({"type": "string"}),
        "upstreams": _per_role(ref("UpstreamPool")),
        "routes": {"type": "array", "items": {"type": "string"}},
        "candidate": _object(
            {"allowed": {"type": "boolean"}, "manifest": of_dataclass(ManifestVerdict)},
            additionalProperties=False,
        ),
    },
    {
        "shadow": _object(
            {
                "breaker": _CIRCUIT,
                "sample": {"type": "number", "minimum": 0, "maximum": 1},
                "in_flight": _COUNT,
                "max_in_flight": _COUNT,
                "candidate_pool": ref("UpstreamPool"),
            },
            description="the mirror to the candidate",
        ),
        "controller": _CONTROLLER,
        "config": _object(
            {
                "source": _TEXT_OR_NULL,
                "generation": {"type": "integer", "minimum": 1},
                "loaded_at": {"type": "number"},
                "retiring": _COUNT,
                "last_reload": {"anyOf": [{"type": "null"}, ref("ConfigReload")]},
            },
            description="the config in force and its last reload",
        ),
    },
    additionalProperties=False,
)

# -- the decision log ---------------------------------------------------------------------------------------

DECISION = _object(
    {
        "ts": {"type": "string", "description": "UTC, RFC 3339"},
        "actor": {"type": "string", "description": "controller, tripwire, rollguard or a token's name"},
        "action": {"type": "string"},
        "reason": {"type": "string"},
    },
    {
        "before": _object(
            {
                "revision": {"type": "integer"},
                "phase": STATE_RECORD["properties"]["phase"],
                "step": {"type": "integer"},
                "weight": {"type": "number"},
            }
        ),
        "revision": {"type": "integer"},
        "phase": STATE_RECORD["properties"]["phase"],
        "step": {"type": "integer"},
        "weight": {"type": "number"},
        "state": {**ref("StoredState"), "description": "the whole state after the change"},
        "gates": {"type": "array", "items": ref("GateResult")},
        "window": {"type": "object"},
    },
    description="one entry as the state store wrote it: a state change carries before, the new phase, "
    "step, weight and revision, and the whole new state; the controller's also carry gates and window",
)
DECISIONS = _object(
    {"decisions": {"type": "array", "items": ref("Decision"), "description": "oldest first"}},
    additionalProperties=False,
)

# -- the reports ------------------------------------------------------------------------------------------

SHADOW_EVAL = _object(
    {
        "generated_at": {"type": "string"},
        "rollout_id": _TEXT_OR_NULL,
        "versions": _per_role({"type": "string"}),
        "routes": {
            "type": "object",
            "description": "route name -> its paired comparison",
            "additionalProperties": _object(
                {
                    "route": {"type": "string"},
                    "generated_at": {"type": "string"},
                    "decision_threshold": {"type": "number"},
                    "pairs_total": _COUNT,
                    "compared": _COUNT,
                    "noise_pairs": _COUNT,
                    "decision_divergence_pp": _object({"value": _NUMBER_OR_NULL, "ci95": {}}),
                    "decision_rate": _per_role(_NUMBER_OR_NULL),
                    "score_delta": {"type": "object"},
                    "distribution_shift": {"type": "object"},
                    "fields": {},
                    "segments": {},
                    "fairness": {
                        "type": "object",
                        "description": "the per-segment spot-check: decision-rate gaps between segments "
                        "per version, the segment the candidate moves most against the median segment, "
                        "and the segments flagged by simultaneous intervals",
                    },
                    "latency_ms": _per_role({"type": "object"}),
                    "latency_ratio": _object(
                        {
                            "pairs": _COUNT,
                            "geomean": _NUMBER_OR_NULL,
                            "log_mean": _NUMBER_OR_NULL,
                            "log_sd": _NUMBER_OR_NULL,
                        }
                    ),
                    "errors": _per_role({"type": "object", "additionalProperties": _COUNT}),
                    "status_mismatches": _COUNT,
                    "status_mismatch_pairs": {"type": "object", "additionalProperties": _COUNT},
                    "schema_violations": _per_role(_COUNT),
                    "compat": {
                        "type": "object",
                        "description": "routes[].compat_schemas name -> the candidate's mirrored answers "
                        "checked against it and those that broke it (the baseline's are not checked)",
                        "additionalProperties": _object({"checked": _COUNT, "violations": _COUNT}),
                    },
                    "policy_violations": _per_role(_COUNT),
                }
            ),
        },
    }
)
STAGING_REPORT = _object(
    {
        "format": {
            "const": STAGING_FORMAT,
            "description": "bumped when a field changes meaning or goes away",
        },
        "generated_at": {"type": "string"},
        "since": {"type": "string"},
        "rollout": _object(
            {"id": {"type": "string"}, "phase": STATE_RECORD["properties"]["phase"], "weight": _WEIGHT}
        ),
        "versions": _per_role({"type": "string"}),
        "candidate_manifest": {
            **of_dataclass(ManifestVerdict, extra={"enforced": {"type": "boolean"}}),
            "description": "the candidate's signed manifest, and whether one is required",
        },
        "totals": _per_role({"type": "object"}),
        "process": {
            "type": "object",
            "description": "RSS, CPU seconds, descriptors and threads of the proxy",
        },
        "routes": {
            "type": "object",
            "additionalProperties": _object({"versions": _per_role({"type": "object"})}),
        },
        "observer_errors": _COUNT,
    }
)

# -- the small ones ---------------------------------------------------------------------------------------

HEALTH = _object({"status": {"const": "ok"}, "version": {"type": "string"}}, additionalProperties=False)
READY = _object({"status": {"const": "ready"}}, additionalProperties=False)
UI_BOOTSTRAP = _object(
    {"auth": {"enum": ["bearer", "unconfigured"]}, "poll_interval_ms": {"type": "integer", "minimum": 1}},
    additionalProperties=False,
)
OPENAPI = _object(
    {"openapi": {"type": "string"}, "info": {"type": "object"}, "paths": {"type": "object"}},
    description="this document",
)
PROBLEM = _object(
    {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "request_id": {
            "type": "string",
            "description": "the caller's x-request-id when well-formed, else new",
        },
    },
    description="RFC 9457 problem details",
)
HISTORY = _object(
    {
        "capacity": {"type": "integer", "description": "windows the in-memory ring keeps"},
        "windows": {
            "type": "array",
            "description": "the windows the controller judged, oldest first; each version's figures cover "
            "every sample since the step began, as the gates judged them",
            "items": _object(
                {
                    "ts": {"type": "string", "format": "date-time"},
                    "rollout_id": {"type": "string"},
                    "phase": {"enum": ["shadow", "canary"]},
                    "step": {"type": "integer", "minimum": -1},
                    "weight": {"type": "number"},
                    "action": of_type(Action),
                    "baseline": ref("VersionFigures"),
                    "candidate": ref("VersionFigures"),
                }
            ),
        },
        "timeline": {
            "type": "array",
            "description": "the decision log, newest last, consecutive HOLDs of one kind folded into one row",
            "items": _object(
                {
                    "ts": {"type": "string"},
                    "first_ts": {"type": "string"},
                    "action": {"type": "string"},
                    "actor": {"type": "string"},
                    "count": {"type": "integer", "minimum": 1},
                    "reason": {"type": "string"},
                },
                {
                    "phase": _TEXT_OR_NULL,
                    "step": {"type": ["integer", "null"]},
                    "weight": _NUMBER_OR_NULL,
                    "revision": {"type": ["integer", "null"]},
                },
            ),
        },
        "rollout": _object(
            {
                "started_at": _TEXT_OR_NULL,
                "windows": {"type": "integer", "minimum": 0, "description": "windows judged since the start"},
            },
            {
                "ended_at": _TEXT_OR_NULL,
                "ended_by": {"enum": ["PROMOTE", "ROLLBACK", None]},
                "actor": _TEXT_OR_NULL,
            },
            description="the latest rollout as the decision log tells it",
        ),
    }
)

# Named in the document's components and referred to by name.
COMPONENTS: Mapping[str, Schema] = {
    "Problem": PROBLEM,
    "RolloutState": ROLLOUT_STATE,
    "StoredState": STORED_STATE,
    "VersionFigures": VERSION_FIGURES,
    "GateResult": GATE_RESULT,
    "UpstreamPool": UPSTREAM_POOL,
    "ConfigReload": _RELOAD_RECORD,
    "Status": STATUS,
    "Decision": DECISION,
    "Decisions": DECISIONS,
    "History": HISTORY,
    "ShadowEval": SHADOW_EVAL,
    "StagingReport": STAGING_REPORT,
}
