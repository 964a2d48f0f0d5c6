"""The admin API's OpenAPI 3.1 document, served at ``GET /openapi.json``.

It is assembled from what the handlers themselves use: request bodies, ``If-Match`` and the decisions
limit from :mod:`proxy.admin.inputs` (the rules the handlers run), answers from :mod:`proxy.admin.schemas`
(derived from the dataclasses that serialise them where there are any), the report names and media types
from :mod:`proxy.reports.artifacts`, the status page's assets from :mod:`proxy.admin.status_page`. Each
operation lists exactly the error answers its handler can give; ``tests/admin/test_openapi.py`` checks live
answers against it, and the schemathesis run fuzzes the API from it.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from proxy._version import __version__
from proxy.admin import inputs, schemas
from proxy.admin.schemas import ref
from proxy.admin.status_page import MEDIA_TYPES
from proxy.reports.artifacts import ARTIFACT_MEDIA_TYPES, ARTIFACTS, SHADOW_EVAL, STAGING_REPORT

_REPORT_SCHEMAS = {SHADOW_EVAL: ref("ShadowEval"), STAGING_REPORT: ref("StagingReport")}

# What each error status means on this API; an operation names the ones its handler can give.
_ERRORS = {
    "400": "malformed: the body is not strict JSON (NaN, a key given twice, invalid UTF-8), If-Match is not "
    "a revision, or the request carries two Authorization headers",
    "401": "no bearer token, or one that is not configured",
    "403": "the token is valid but its role is too weak (this needs the operator role)",
    "404": "no such resource",
    "409": "the move is illegal in the current phase (promote while idle, weights while rolled back), or "
    "it would send traffic to a candidate whose signed manifest was refused",
    "412": "If-Match names a revision that is no longer current; the ETag header gives the current one",
    "422": "well-formed, but a value is wrong (out of range, wrong type, unknown or missing field); the "
    "detail names the field",
    "429": "too many failed authentications from this address; only failed attempts are refused, a valid "
    "token is always accepted",
    "503": "not ready: the state is not loaded or the baseline is unreachable",
}


def _header(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"required": True, "schema": schema or {"type": "string"}, "description": description}


_ETAG_SCHEMA = {"type": "string", "pattern": '^"[0-9]+"$'}
_ERROR_HEADERS: dict[str, dict[str, Any]] = {
    "401": {"WWW-Authenticate": _header('the challenge: Bearer realm="rollguard"')},
    "412": {"ETag": _header("the current revision, quoted", _ETAG_SCHEMA)},
    "429": {
        "Retry-After": _header(
            "seconds until a failed attempt is heard again", {"type": "integer", "minimum": 1}
        )
    },
}
_REQUEST_ID = {
    "x-request-id": _header("the caller's, when well-formed, else a new one; also the body's request_id")
}
_ETAG = {"ETag": _header("the state's revision, quoted", _ETAG_SCHEMA)}


def _problem(code: str) -> dict[str, Any]:
    return {
        "description": _ERRORS[code],
        "headers": {**_ERROR_HEADERS.get(code, {}), **_REQUEST_ID},
        "content": {"application/problem+json": {"schema": ref("Problem")}},
    }


def _ok(description: str, schema: dict[str, Any], media: str = "application/json", **headers: Any) -> Any:
    answer: dict[str, Any] = {"description": description, "content": {media: {"schema": schema}}}
    if headers:
        answer["headers"] = headers
    return answer


def _operation(
    operation_id: str,
    summary: str,
    ok: dict[str, Any] | None,
    *,
    role: str | None = None,
    errors: tuple[str, ...] = (),
    **more: Any,
) -> dict[str, Any]:
    """One operation; ``role`` adds bearer security and the answers authentication can give (a viewer
    operation has no 403: every valid token is at least a viewer)."""
    codes = set(errors)
    op: dict[str, Any] = {"operationId": operation_id, "summary": summary, **more}
    if role is not None:
        op["security"] = [{"bearer": []}]
        op["description"] = (op.get("description", "") + f" Needs the {role} role.").strip()
        codes |= {"400", "401", "429"} | ({"403"} if role == "operator" else set())
    op["responses"] = {**({"200": ok} if ok else {}), **{code: _problem(code) for code in sorted(codes)}}
    return op


def _body(rule: inputs.Body) -> dict[str, Any]:
    return {"required": rule.needed, "content": {"application/json": {"schema": rule.schema()}}}


_IF_MATCH = {
    "name": "If-Match",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "pattern": inputs.IF_MATCH_PATTERN},
    "description": 'the revision (ETag) this change is based on, e.g. "7"; 412 if it is no longer current; '
    "* or no header: whatever is current",
}
_IF_NONE_MATCH = {
    "name": "If-None-Match",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "an ETag from an earlier answer: 304 while it is still current",
}
_ASSET_ETAG = {"ETag": _header("the file's content hash, for If-None-Match")}
_NOT_MODIFIED = {
    "description": "the copy the client holds (If-None-Match) is current",
    "headers": _ASSET_ETAG,
}


def _mutation(operation_id: str, summary: str, rule: inputs.Body, errors: tuple[str, ...]) -> dict[str, Any]:
    state = _ok("the new rollout state", ref("RolloutState"), ETag=_ETAG["ETag"])
    return _operation(
        operation_id,
        summary,
        state,
        role="operator",
        errors=("412", "422", *errors),
        parameters=[_IF_MATCH],
        requestBody=_body(rule),
    )


def _text(description: str) -> dict[str, Any]:
    return {"type": "string", "description": description}


def document(*, metrics_auth: bool) -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/healthz": {"get": _operation("healthz", "liveness", _ok("alive", ref("Health")))},
        "/readyz": {
            "get": _operation(
                "readyz",
                "readiness: the state is loaded and the baseline accepts connections (not the candidate)",
                _ok("ready", ref("Ready")),
                errors=("503",),
            )
        },
        "/metrics": {
            "get": _operation(
                "metrics",
                "Prometheus metrics",
                _ok("the exposition", _text("Prometheus text format"), CONTENT_TYPE_LATEST),
                role="viewer" if metrics_auth else None,
            )
        },
        "/openapi.json": {"get": _operation("openapi", "this document", _ok("OpenAPI 3.1", ref("OpenApi")))},
        "/status": {
            "get": _operation(
                "status",
                "phase, step, weights, versions, upstreams, the window per version, gates against thresholds",
                _ok("the proxy and its rollout", ref("Status"), ETag=_ETAG["ETag"]),
                role="viewer",
            )
        },
        "/decisions": {
            "get": _operation(
                "decisions",
                "the decision log, newest last",
                _ok("the newest entries", ref("Decisions")),
                role="viewer",
                errors=("422",),
                parameters=[
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": inputs.DECISIONS_LIMIT.schema(),
                    }
                ],
            )
        },
        "/history": {
            "get": _operation(
                "history",
                "recent judged windows, the folded decision timeline, the latest rollout",
                _ok("the picture of the last hours", ref("History")),
                role="viewer",
            )
        },
        "/weights": {
            "put": _mutation(
                "setWeights",
                "set the candidate's weight by hand (pauses the controller)",
                inputs.WEIGHTS,
                ("409",),
            )
        },
        "/shadow": {
            "put": _mutation(
                "setShadowSample",
                "change the share of baseline traffic mirrored to the candidate",
                inputs.SHADOW,
                ("409",),
            )
        },
    }
    for action, summary in inputs.ROLLOUT_ACTIONS.items():
        paths[f"/rollout/{action}"] = {
            "post": _mutation(f"rollout_{action}", summary, inputs.ROLLOUT_ACTION, ("409",))
        }
    for name in ARTIFACTS:
        media = ARTIFACT_MEDIA_TYPES[name]
        schema = _REPORT_SCHEMAS.get(name, _text(f"{name}, as the file of that name in a report folder"))
        paths[f"/reports/{name}"] = {
            "get": _operation(
                f"report_{name.replace('.', '_')}", f"{name}, live", _ok(name, schema, media), role="viewer"
            )
        }
    paths["/reports/{name}"] = {
        "get": _operation(
            "report_unknown",
            "any other report name: there are only the four above",
            None,
            role="viewer",
            errors=("404",),
            parameters=[
                {
                    "name": "name",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "not": {"enum": list(ARTIFACTS)}},
                }
            ],
        )
    }
    paths["/config/reload"] = {
        "post": _operation(
            "reloadConfig",
            "re-read the config file, as SIGHUP does; a file that does not validate changes nothing and is "
            "422 naming the key path; 409 when the proxy was not started from a file",
            _ok("applied: the sections that changed and the keys that need a restart", ref("ConfigReload")),
            role="operator",
            errors=("409", "422"),
            requestBody=_body(inputs.CONFIG_RELOAD),
        )
    }
    # The status page: its shell and assets carry no data and need no token; the page calls the routes above.
    page = MEDIA_TYPES["index.html"]
    for path in ("/ui", "/ui/"):
        shell = _operation(
            "ui" if path == "/ui" else "ui_slash",
            "the status page (HTML shell)",
            _ok("the page", _text("HTML"), page, **_ASSET_ETAG),
            parameters=[_IF_NONE_MATCH],
        )
        shell["responses"]["304"] = _NOT_MODIFIED
        paths[path] = {"get": shell}
    paths["/ui/bootstrap.json"] = {
        "get": _operation(
            "uiBootstrap",
            "what the status page needs before its first call: whether tokens are configured",
            _ok("bootstrap", ref("UiBootstrap")),
        )
    }
    assets = [name for name in MEDIA_TYPES if name != "index.html"]
    asset_answer = {
        "description": "the asset",
        "headers": _ASSET_ETAG,
        "content": {
            media: {"schema": _text("the file")} for media in sorted({MEDIA_TYPES[a] for a in assets})
        },
    }
    paths["/ui/assets/{name}"] = {
        "get": _operation(
            "uiAsset",
            "a status page asset (CSS, JavaScript, icon) shipped in the package",
            asset_answer,
            errors=("404",),
            parameters=[
                {"name": "name", "in": "path", "required": True, "schema": {"enum": assets}},
                _IF_NONE_MATCH,
            ],
        )
    }
    paths["/ui/assets/{name}"]["get"]["responses"]["304"] = _NOT_MODIFIED
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "rollguard admin API",
            "version": __version__,
            "description": "Every error is application/problem+json (RFC 9457). A path not listed here is "
            "404, a method not listed for a path is 405 with Allow; GET paths answer HEAD too.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                **schemas.COMPONENTS,
                "Health": schemas.HEALTH,
                "Ready": schemas.READY,
                "UiBootstrap": schemas.UI_BOOTSTRAP,
                "OpenApi": schemas.OPENAPI,
            },
        },
    }
