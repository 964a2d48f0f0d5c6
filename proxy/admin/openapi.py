"""The admin API described as OpenAPI 3.1 (served at ``GET /openapi.json``)."""

from __future__ import annotations

from typing import Any

from proxy._version import __version__
from proxy.admin.status_page import MEDIA_TYPES
from proxy.reports.artifacts import ARTIFACTS

_PROBLEM = {
    "description": "problem+json (RFC 9457)",
    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
}
_STATE = {
    "description": "the new rollout state; its revision is also the ETag",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RolloutState"}}},
}
_NUMBER_OR_NULL = {"type": ["number", "null"]}
_TEXT_OR_NULL = {"type": ["string", "null"]}
_VERSION_FIGURES = {
    "type": "object",
    "required": ["requests", "failures", "error_rate", "latency_ms", "source"],
    "properties": {
        "requests": {"type": "integer", "minimum": 0},
        "failures": {"type": "integer", "minimum": 0},
        "error_rate": _NUMBER_OR_NULL,
        "latency_ms": {
            "type": "object",
            "properties": {"p50": _NUMBER_OR_NULL, "p95": _NUMBER_OR_NULL, "p99": _NUMBER_OR_NULL},
        },
        "decision_rate": _NUMBER_OR_NULL,
        "source": {
            "enum": ["live", "mirror"],
            "description": "mirror: the candidate's answers to mirrored requests (the shadow phase)",
        },
    },
}
_HISTORY = {
    "type": "object",
    "required": ["capacity", "windows", "timeline", "rollout"],
    "properties": {
        "capacity": {"type": "integer", "description": "windows the in-memory ring keeps"},
        "windows": {
            "type": "array",
            "description": "the windows the controller judged, oldest first; each version's figures cover "
            "every sample since the step began, as the gates judged them",
            "items": {
                "type": "object",
                "required": [
                    "ts",
                    "rollout_id",
                    "phase",
                    "step",
                    "weight",
                    "action",
                    "baseline",
                    "candidate",
                ],
                "properties": {
                    "ts": {"type": "string", "format": "date-time"},
                    "rollout_id": {"type": "string"},
                    "phase": {"enum": ["shadow", "canary"]},
                    "step": {"type": "integer", "minimum": -1},
                    "weight": {"type": "number"},
                    "action": {"enum": ["PROCEED", "HOLD", "PROMOTE", "ROLLBACK", "WAIT"]},
                    "baseline": {"$ref": "#/components/schemas/VersionFigures"},
                    "candidate": {"$ref": "#/components/schemas/VersionFigures"},
                },
            },
        },
        "timeline": {
            "type": "array",
            "description": "the decision log, newest last, consecutive HOLDs of one kind folded into one row",
            "items": {
                "type": "object",
                "required": ["ts", "first_ts", "action", "actor", "count", "reason"],
                "properties": {
                    "ts": {"type": "string"},
                    "first_ts": {"type": "string"},
                    "action": {"type": "string"},
                    "actor": {"type": "string"},
                    "count": {"type": "integer", "minimum": 1},
                    "phase": _TEXT_OR_NULL,
                    "step": {"type": ["integer", "null"]},
                    "weight": _NUMBER_OR_NULL,
                    "revision": {"type": ["integer", "null"]},
                    "reason": {"type": "string"},
                },
            },
        },
        "rollout": {
            "type": "object",
            "description": "the latest rollout as the decision log tells it",
            "required": ["started_at", "windows"],
            "properties": {
                "started_at": _TEXT_OR_NULL,
                "windows": {"type": "integer", "minimum": 0, "description": "windows judged since the start"},
                "ended_at": _TEXT_OR_NULL,
                "ended_by": {"enum": ["PROMOTE", "ROLLBACK", None]},
                "actor": _TEXT_OR_NULL,
            },
        },
    },
}
_REASON = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"reason": {"type": "string", "maxLength": 500}},
}


def _mutation(summary: str, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "summary": summary,
        "security": [{"bearer": []}],
        "parameters": [
            {
                "name": "If-Match",
                "in": "header",
                "required": False,
                "schema": {"type": "string"},
                "description": "the revision (ETag) this change is based on; 412 if it is stale",
            }
        ],
        "requestBody": {"required": False, "content": {"application/json": {"schema": body}}},
        "responses": {
            "200": _STATE,
            "400": _PROBLEM,
            "401": _PROBLEM,
            "403": _PROBLEM,
            "409": _PROBLEM,
            "412": _PROBLEM,
            "422": _PROBLEM,
            "429": _PROBLEM,
        },
    }


def _read(summary: str, role: str | None, content: str = "application/json") -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {"200": {"description": "ok", "content": {content: {"schema": {}}}}},
    }
    if role is not None:
        op["security"] = [{"bearer": []}]
        op["description"] = f"needs the {role} role"
        op["responses"].update({"401": _PROBLEM, "403": _PROBLEM, "429": _PROBLEM})
    return op


def document(*, metrics_auth: bool) -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/healthz": {"get": _read("liveness", None)},
        "/readyz": {
            "get": {
                **_read("readiness: baseline reachable, state loaded", None),
                "responses": {"200": {"description": "ready"}, "503": _PROBLEM},
            }
        },
        "/metrics": {"get": _read("Prometheus metrics", "viewer" if metrics_auth else None, "text/plain")},
        "/status": {"get": _read("phase, weights, versions, upstreams, controller, candidate", "viewer")},
        "/decisions": {
            "get": {
                **_read("the decision log, newest last", "viewer"),
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 10000},
                    }
                ],
            }
        },
        "/history": {
            "get": {
                **_read("recent judged windows, the folded decision timeline, the latest rollout", "viewer"),
                "responses": {
                    "200": {
                        "description": "ok",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/History"}}},
                    },
                    **{code: _PROBLEM for code in ("401", "403", "429")},
                },
            }
        },
        "/weights": {
            "put": _mutation(
                "set the canary weight by hand (pauses the controller)",
                {
                    "type": "object",
                    "required": ["canary"],
                    "additionalProperties": False,
                    "properties": {
                        "canary": {"type": "number", "minimum": 0, "maximum": 100, "multipleOf": 0.01},
                        "reason": {"type": "string", "maxLength": 500},
                    },
                },
            )
        },
        "/shadow": {
            "put": _mutation(
                "change the shadow sample",
                {
                    "type": "object",
                    "required": ["sample"],
                    "additionalProperties": False,
                    "properties": {
                        "sample": {"type": "number", "minimum": 0, "maximum": 1},
                        "reason": {"type": "string", "maxLength": 500},
                    },
                },
            )
        },
        "/reports/{name}": {
            "get": {
                **_read("a rollout artifact, live", "viewer"),
                "parameters": [
                    {
                        "name": "name",
                        "in": "path",
                        "required": True,
                        "schema": {"enum": list(ARTIFACTS)},
                    }
                ],
            }
        },
    }
    # The status page (no token: the shell and its assets carry no data; the page calls the routes above).
    paths["/ui"] = {"get": _read("the status page (HTML shell)", None, "text/html")}
    paths["/ui/bootstrap.json"] = {
        "get": _read("what the status page needs before its first call: whether tokens are configured", None)
    }
    paths["/ui/assets/{name}"] = {
        "get": {
            **_read("a status page asset (CSS, JavaScript, icon) shipped in the package", None, "*/*"),
            "parameters": [
                {
                    "name": "name",
                    "in": "path",
                    "required": True,
                    "schema": {"enum": [name for name in MEDIA_TYPES if name != "index.html"]},
                }
            ],
        }
    }
    paths["/config/reload"] = {
        "post": {
            "summary": "re-read the config file, as SIGHUP does (operator); a file that does not validate "
            "changes nothing and is 422 naming the key path",
            "security": [{"bearer": []}],
            "requestBody": {
                "required": False,
                "content": {
                    "application/json": {"schema": {"type": "object", "additionalProperties": False}}
                },
            },
            "responses": {
                "200": {
                    "description": "applied: the sections that changed and the keys that need a restart",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                **{code: _PROBLEM for code in ("400", "401", "403", "409", "422", "429")},
            },
        }
    }
    for action in ("start", "pause", "resume", "promote", "rollback", "rearm"):
        paths[f"/rollout/{action}"] = {"post": _mutation(f"{action} the rollout (operator)", _REASON)}
    return {
        "openapi": "3.1.0",
        "info": {"title": "rollguard admin API", "version": __version__},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Problem": {
                    "type": "object",
                    "required": ["type", "title", "status"],
                    "properties": {
                        "type": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                        "request_id": {"type": "string"},
                    },
                },
                "VersionFigures": _VERSION_FIGURES,
                "History": _HISTORY,
                "RolloutState": {
                    "type": "object",
                    "required": ["revision", "phase", "weight"],
                    "properties": {
                        "revision": {"type": "integer"},
                        "phase": {"enum": ["idle", "shadow", "canary", "paused", "promoted", "rolled_back"]},
                        "weight": {"type": "number"},
                        "step": {"type": "integer"},
                        "rollout_id": {"type": "string"},
                        "reason": {"type": "string"},
                    },
                },
            },
        },
    }
