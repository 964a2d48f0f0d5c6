"""The admin API described as OpenAPI 3.1 (served at ``GET /openapi.json``)."""

from __future__ import annotations

from typing import Any

from proxy._version import __version__
from proxy.reports.artifacts import ARTIFACTS

_PROBLEM = {
    "description": "problem+json (RFC 9457)",
    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
}
_STATE = {
    "description": "the new rollout state; its revision is also the ETag",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RolloutState"}}},
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
                    "schema": {"enum": ["app.css", "app.js", "format.js", "favicon.svg"]},
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
