"""Admin authentication: bearer tokens with roles, compared in constant time, and a throttle on
failed attempts so a token cannot be guessed at line rate.

A peer address with ``max_failures`` failed authentications within ``window`` seconds gets 429 (with
``Retry-After``) instead of 401 for every further *failed* attempt until the window has passed. Only failures
are throttled: a valid token is always accepted, from any address, so a flood of bad tokens from a shared
address (a NAT, a CI runner) can never lock an operator out of a rollback. Guessing stays hopeless
because tokens are long random secrets; the throttle keeps a scanner's answers slow and visible. Tokens
are never logged: errors name the token's *name* only.
"""

from __future__ import annotations

import hmac
import time

from starlette.requests import Request

from proxy.config.model import AdminToken
from proxy.edge.throttle import FailureThrottle
from proxy.errors import ApiError

_ROLE_RANK = {"viewer": 1, "operator": 2}


class Authenticator:
    """Bearer token -> the configured token it matches, in constant time over every token."""

    def __init__(self, tokens: tuple[AdminToken, ...], *, throttle: FailureThrottle | None = None) -> None:
        self._tokens = [(t.token.encode(), t) for t in tokens]
        self.throttle = throttle or FailureThrottle()

    def identify(self, request: Request) -> AdminToken | None:
        """The token presented as ``Authorization: Bearer``; None when absent or unknown. Two
        Authorization headers are refused (400), never one of them picked."""
        values = request.headers.getlist("authorization")
        if len(values) > 1:
            raise ApiError(400, "more than one Authorization header")
        scheme, _, presented = (values[0] if values else "").partition(" ")
        if scheme.lower() != "bearer" or not presented:
            return None
        given = presented.strip().encode()
        found: AdminToken | None = None
        for secret, token in self._tokens:
            if hmac.compare_digest(secret, given):
                found = token
        return found

    def require(self, request: Request, role: str) -> AdminToken:
        token = self.identify(request)
        if token is None:
            peer = request.client.host if request.client else ""
            now = time.monotonic()
            wait = self.throttle.blocked_for(peer, now)
            if wait:
                raise ApiError(
                    429,
                    "too many failed authentications from this address; try again later",
                    {"Retry-After": str(wait)},
                )
            self.throttle.failed(peer, now)
            raise ApiError(
                401, "a valid bearer token is required", {"WWW-Authenticate": 'Bearer realm="rollguard"'}
            )
        if _ROLE_RANK[token.role] < _ROLE_RANK[role]:
            raise ApiError(403, f"this action needs the {role} role; token {token.name!r} is a {token.role}")
        return token
