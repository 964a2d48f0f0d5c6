"""The admin listener: health, metrics, status and the rollout API (Starlette).

Tokens are bearer tokens with a role (viewer < operator), compared in constant time against every
configured token. Mutations answer with the new state and its ``revision`` (also the ``ETag``); a
request whose ``If-Match`` names an older revision gets 412. Every mutation is appended to the decision
log with its actor (the token's name, never the token), the state before and after, and the reason.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy._types import Reloader, Role
from proxy._version import __version__
from proxy.admin import inputs
from proxy.admin.auth import Authenticator
from proxy.admin.openapi import document as openapi_document
from proxy.admin.status_page import StatusPage
from proxy.clock import utc_now
from proxy.config.model import AdminToken, Config
from proxy.content.pii import Masker
from proxy.content.text import printable
from proxy.errors import ApiError, ReloadFailed, RollguardError, StateConflict, problem
from proxy.reports.artifacts import ARTIFACT_MEDIA_TYPES
from proxy.rollout import state as rollout
from proxy.rollout.controller import Controller
from proxy.rollout.history import HISTORY_WINDOWS
from proxy.rollout.manifest import ManifestVerdict
from proxy.rollout.state import RolloutState, set_shadow_sample, set_weight, weight_to_bp
from proxy.rollout.store import StateStore
from proxy.rollout.timeline import fold, latest_rollout
from proxy.upstream.headers import request_id
from proxy.upstream.pool import UpstreamPool

# /history reads this many decision-log entries: enough that a rollout's start is among them (its window
# count and how it ended are read from the start on) and a folded timeline still fills TIMELINE_ROWS.
HISTORY_DECISIONS = 2000
TIMELINE_ROWS = 200  # folded rows /history serves, newest last: what a person scrolls through


def json_response(doc: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def problem_response(exc: RollguardError, request: Request) -> Response:
    """Any error of the tree as problem+json: its class (or, for ApiError, the instance) gives status,
    title and headers; ``request_id`` is the caller's ``x-request-id`` when well-formed, else a new one,
    and is echoed in the header too."""
    status = exc.status
    rid = request_id(request.headers.raw)
    body = problem(status, exc.title, exc.problem_detail, request_id=rid, slug=f"admin-{status}")
    headers = {**exc.response_headers, "x-request-id": rid}
    return Response(body, status_code=status, media_type="application/problem+json", headers=headers)


def _brief(state: RolloutState) -> dict[str, Any]:
    return {
        "revision": state.revision,
        "phase": state.phase.value,
        "weight": state.weight,
        "step": state.step,
        "shadow_sample": state.shadow_sample,
    }


def _state_doc(state: RolloutState) -> dict[str, Any]:
    """The rollout state as the admin API answers it: the stored record, and the weights of both roles."""
    return {**state.to_json(), "weights": {"baseline": 100 - state.weight, "candidate": state.weight}}


async def _body(request: Request, rule: inputs.Body) -> dict[str, Any]:
    return rule.read(inputs.json_object(await request.body()))


class AdminApi:
    """The admin endpoints over injected parts; ``app()`` builds the Starlette application."""

    def __init__(
        self,
        *,
        config: Config,
        store: StateStore,
        pools: Mapping[Role, UpstreamPool],
        registry: CollectorRegistry,
        reports: Mapping[str, Callable[[], Any]] | None = None,
        shadow_stats: Callable[[], dict[str, Any]] | None = None,
        audit: Callable[[dict[str, Any]], None] | None = None,
        masker: Masker | None = None,
        controller: Controller | None = None,
        on_rollback: Callable[[str], None] | None = None,
        candidate: ManifestVerdict | None = None,
        started_at: float | None = None,
        config_reload: Reloader | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.pools = pools
        self.registry = registry
        self.reports = dict(reports or {})  # artifact file name -> renderer (dict for .json, str otherwise)
        self.shadow_stats = shadow_stats
        self.audit = audit
        self.masker = masker
        self.controller = controller
        self.on_rollback = on_rollback
        self.candidate = candidate or ManifestVerdict(ok=True, reason="no manifest configured")
        self.auth = Authenticator(config.admin.tokens)
        self.started_at = started_at or time.time()
        self._ready_cache: tuple[float, bool, str] = (0.0, False, "not checked yet")
        self.config_reload = config_reload

    def reconfigure(
        self, config: Config, *, pools: Mapping[Role, UpstreamPool], candidate: ManifestVerdict
    ) -> None:
        """A reloaded config: tokens, steps, pools and the candidate's verdict; the failure throttle stays."""
        self.config = config
        self.pools = pools
        self.candidate = candidate
        self.auth = Authenticator(config.admin.tokens, throttle=self.auth.throttle)

    def app(self) -> Starlette:
        def guard(fn: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
            async def wrapped(request: Request) -> Response:
                try:
                    return await fn(request)
                except (ApiError, StateConflict, ReloadFailed) as exc:
                    return problem_response(exc, request)

            return wrapped

        # The status page's shell and assets hold no data and need no token; its data calls do.
        page = StatusPage(tokens_configured=bool(self.config.admin.tokens))
        routes = [
            Route("/ui", guard(page.index), methods=["GET"]),
            Route("/ui/", guard(page.index), methods=["GET"]),
            Route("/ui/bootstrap.json", guard(page.bootstrap), methods=["GET"]),
            Route("/ui/assets/{name}", guard(page.asset), methods=["GET"]),
            Route("/healthz", guard(self.healthz), methods=["GET", "HEAD"]),
            Route("/readyz", guard(self.readyz), methods=["GET", "HEAD"]),
            Route("/metrics", guard(self.metrics), methods=["GET"]),
            Route("/openapi.json", guard(self.openapi), methods=["GET"]),
            Route("/status", guard(self.status), methods=["GET"]),
            Route("/weights", guard(self.put_weights), methods=["PUT"]),
            Route("/decisions", guard(self.decisions), methods=["GET"]),
            Route("/history", guard(self.history), methods=["GET"]),
            Route("/shadow", guard(self.put_shadow), methods=["PUT"]),
            Route("/reports/{name}", guard(self.report), methods=["GET"]),
            Route("/rollout/{action}", guard(self.rollout_action), methods=["POST"]),
            Route("/config/reload", guard(self.reload_config), methods=["POST"]),
        ]

        async def http_error(request: Request, exc: Exception) -> Response:
            assert isinstance(exc, HTTPException)
            detail = exc.detail if exc.status_code != 404 else f"no admin endpoint at {request.url.path}"
            return problem_response(ApiError(exc.status_code, str(detail), exc.headers), request)

        app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
        # No trailing-slash redirects: Starlette builds their Location from the client's Host header (an
        # open-redirect shape); an unknown path is a 404 problem like any other.
        app.router.redirect_slashes = False
        return app

    async def healthz(self, request: Request) -> Response:
        return json_response({"status": "ok", "version": __version__})

    async def readyz(self, request: Request) -> Response:
        """Ready when the state is loaded and the baseline accepts connections (checked at most 1/s)."""
        checked_at, ok, why = self._ready_cache
        now = time.monotonic()
        if now - checked_at > 1.0:
            loaded = getattr(self.store, "loaded", True)
            baseline_ok = await self.pools["baseline"].reachable()
            ok = loaded and baseline_ok
            why = "ready" if ok else ("state not loaded" if not loaded else "baseline unreachable")
            self._ready_cache = (now, ok, why)
        if not ok:
            return problem_response(ApiError(503, why), request)
        return json_response({"status": why})

    async def metrics(self, request: Request) -> Response:
        if self.config.admin.metrics_auth:
            self.auth.require(request, "viewer")
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    async def openapi(self, request: Request) -> Response:
        return json_response(openapi_document(metrics_auth=self.config.admin.metrics_auth))

    async def status(self, request: Request) -> Response:
        self.auth.require(request, "viewer")
        state = self.store.current
        doc = {
            "rollguard": __version__,
            "uptime_s": round(time.time() - self.started_at, 1),
            "rollout": _state_doc(state),
            "versions": {role: pool.version for role, pool in self.pools.items()},
            "upstreams": {role: pool.stats() for role, pool in self.pools.items()},
            "routes": [r.name for r in self.config.routes],
        }
        if self.shadow_stats is not None:
            doc["shadow"] = self.shadow_stats()
        if self.controller is not None:
            doc["controller"] = self.controller.status()
        doc["candidate"] = {"allowed": self.candidate.ok, "manifest": self.candidate.to_json()}
        if self.config_reload is not None:
            doc["config"] = self.config_reload.status()
        return json_response(doc, headers={"ETag": f'"{state.revision}"'})

    async def rollout_action(self, request: Request) -> Response:
        """``POST /rollout/{start,pause,resume,promote,rollback,rearm}``; an illegal move is 409."""
        action = request.path_params["action"]
        if action not in inputs.ROLLOUT_ACTIONS:
            known = ", ".join(inputs.ROLLOUT_ACTIONS)
            raise ApiError(404, f"no rollout action {printable(action, 64)!r}; one of {known}")
        actor = self.auth.require(request, "operator")
        expected = inputs.if_match(request.headers.get("if-match"))
        doc = await _body(request, inputs.ROLLOUT_ACTION)
        reason = self._safe(doc.get("reason", ""))
        canary = self.config.canary
        steps = canary.steps
        now, ts = utc_now(), time.time()
        moves: dict[str, Callable[[RolloutState], RolloutState]] = {
            "start": lambda s: rollout.start(
                s, steps, shadow_first=canary.shadow_samples > 0, now=now, ts=ts, reason=reason
            ),
            "pause": lambda s: rollout.pause(s, now=now, reason=reason),
            "resume": lambda s: rollout.resume(s, steps, now=now, ts=ts, reason=reason),
            "promote": lambda s: rollout.promote(
                s, steps, now=now, ts=ts, reason=reason or "promoted by an operator"
            ),
            "rollback": lambda s: rollout.rollback(
                s, now=now, ts=ts, reason=reason or "rolled back by an operator"
            ),
            "rearm": lambda s: rollout.rearm(s, now=now, reason=reason),
        }
        if action in ("start", "resume", "promote"):
            self._require_candidate(action)
        label = action.upper() if action in ("promote", "rollback") else action
        response = await self._mutate(actor, label, reason, expected, moves[action])
        if action == "rollback" and self.on_rollback is not None:
            self.on_rollback("operator")
        return response

    async def reload_config(self, request: Request) -> Response:
        """``POST /config/reload``: what SIGHUP does, answered with the outcome; a bad file is 422."""
        actor = self.auth.require(request, "operator")
        await _body(request, inputs.CONFIG_RELOAD)
        if self.config_reload is None:
            raise ApiError(409, "this proxy was not started from a config file it can reload")
        # A ReloadFailed (nothing changed; it names the key path) is answered 422 from its class.
        return json_response(await self.config_reload.reload(actor.name))

    async def put_weights(self, request: Request) -> Response:
        actor = self.auth.require(request, "operator")
        expected = inputs.if_match(request.headers.get("if-match"))
        doc = await _body(request, inputs.WEIGHTS)
        canary: float = doc["canary"]
        reason = self._safe(doc.get("reason", ""))
        if canary > 0:
            self._require_candidate("a candidate weight")
        return await self._mutate(
            actor,
            "set_weight",
            reason,
            expected,
            lambda s: set_weight(s, weight_to_bp(canary), utc_now(), reason),
        )

    async def put_shadow(self, request: Request) -> Response:
        actor = self.auth.require(request, "operator")
        expected = inputs.if_match(request.headers.get("if-match"))
        doc = await _body(request, inputs.SHADOW)
        sample: float = doc["sample"]
        reason = self._safe(doc.get("reason", ""))
        if sample > 0:
            self._require_candidate("shadowing")
        return await self._mutate(
            actor,
            "set_shadow_sample",
            reason,
            expected,
            lambda s: set_shadow_sample(s, float(sample), utc_now(), reason),
        )

    async def report(self, request: Request) -> Response:
        self.auth.require(request, "viewer")
        name = request.path_params["name"]
        render = self.reports.get(name)
        if render is None:
            known = ", ".join(sorted(self.reports)) or "none yet"
            raise ApiError(404, f"no report {name!r}; available: {known}")
        body = render()
        if inspect.isawaitable(body):
            body = await body
        if isinstance(body, str):
            return Response(body, media_type=ARTIFACT_MEDIA_TYPES.get(name, "text/plain; charset=utf-8"))
        return json_response(body)

    async def decisions(self, request: Request) -> Response:
        self.auth.require(request, "viewer")
        limit = inputs.DECISIONS_LIMIT.read("limit", request.query_params.get("limit"))
        return json_response({"decisions": await self.store.decisions(limit)})

    async def history(self, request: Request) -> Response:
        """``GET /history``: the recent windows for charts, the folded timeline, the latest rollout's span."""
        self.auth.require(request, "viewer")
        entries = await self.store.decisions(HISTORY_DECISIONS)
        ring = self.controller.history if self.controller is not None else None
        return json_response(
            {
                "capacity": HISTORY_WINDOWS if ring is None else ring.capacity,
                "windows": [] if ring is None else ring.to_json(),
                "timeline": [row.to_json() for row in fold(entries)[-TIMELINE_ROWS:]],
                "rollout": latest_rollout(entries).to_json(),
            }
        )

    async def _mutate(
        self,
        actor: AdminToken,
        action: str,
        reason: str,
        expected: int | None,
        change: Callable[[RolloutState], RolloutState],
    ) -> Response:
        entry = {"ts": utc_now(), "actor": actor.name, "action": action, "reason": reason}
        before = self.store.current
        try:
            after = await self.store.update(change, entry, expected_revision=expected)
        except StateConflict as exc:  # answered 412 (with the current ETag) or 409, from its class
            self._audit(entry, before, None, f"refused: {exc}")
            raise
        self._audit(entry, before, after, None)
        return json_response(_state_doc(after), headers={"ETag": f'"{after.revision}"'})

    def _require_candidate(self, what: str) -> None:
        """409 for any move that would send the candidate traffic when its manifest was refused."""
        if not self.candidate.ok:
            raise ApiError(409, f"{what} refused: the candidate is not verified: {self.candidate.reason}")

    def _safe(self, reason: str) -> str:
        """Operators type reasons; state and decision log are logs too, so the masker sees them first."""
        return self.masker.mask_text(reason) if self.masker is not None and reason else reason

    def _audit(
        self, entry: dict[str, Any], before: RolloutState, after: RolloutState | None, error: str | None
    ) -> None:
        """One audit line per admin mutation, accepted or refused: actor, before, after, reason."""
        if self.audit is None:
            return
        line = {**entry, "before": _brief(before), "after": _brief(after) if after else None}
        if error is not None:
            line["error"] = error
        self.audit(line)
