"""The data plane's edge policy: authenticate, authorize per route, rate-limit; before any body is read.

``EdgePolicy.admit(exchange)`` runs once per request, right after route matching. It raises
:class:`Unauthorized` (401), :class:`Forbidden` (403) or :class:`RateLimited` (429), which the
forwarder answers as problem+json and counts as local-origin responses (never against a model version).
On success it puts the client's *name* in the access-log record; the credential never goes anywhere.

Which policy applies: a route's own ``auth`` block, else ``auth.required`` (any authenticated client),
else the route is open. Unmatched paths follow ``auth.required``. Credentials, when presented, are
checked on open routes too: a bad one is a 401 (RFC 6750), a good one names the client for logs and
rate limits. Rate limits key on the client's name, or on the peer address for anonymous requests
(``per: client``), on the address always (``per: address``), or on nothing (``per: route``, one
shared limit).

``from_config`` returns ``None`` when nothing is configured, so the forwarder's cost is then one
attribute check.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from proxy.config.model import Config, RateLimit, RouteAuth
from proxy.edge.clientauth import Client, ClientAuthenticator
from proxy.edge.ratelimit import MONOTONIC, Clock, Gcra, acquire_all, retry_after
from proxy.errors import Forbidden, ProxyError, RateLimited, Unauthorized
from proxy.observe.exchange import Exchange
from proxy.upstream.body import DRAIN_ALLOWANCE

OnAuthFailure = Callable[[str, str], None]  # (route, reason)
OnRateLimited = Callable[[str], None]  # (route)

_ANY_CLIENT = RouteAuth(required=True)


class _Rule:
    __slots__ = ("limit", "gcra")

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self.gcra = Gcra(limit.rate, limit.burst, max_keys=limit.max_keys)

    def key(self, route: str, client: Client | None, address: str) -> str:
        per = self.limit.per
        if per == "route":
            return route  # with route "*": each route its own shared limit
        if per == "client" and client is not None:
            return "c:" + client.name
        return "a:" + address


class EdgePolicy:
    def __init__(
        self,
        config: Config,
        *,
        on_auth_failure: OnAuthFailure | None = None,
        on_rate_limited: OnRateLimited | None = None,
        clock: Clock = MONOTONIC,
        wall_clock: Clock = time.time,
    ) -> None:
        """``clock`` paces the rate limits; ``wall_clock`` (epoch seconds) judges JWT time claims."""
        auth = config.auth
        self.authenticator = ClientAuthenticator(auth, wall_clock=wall_clock) if auth.enabled else None
        self._key_header = auth.api_key_header.encode()
        self._strip = auth.strip_credentials
        default = _ANY_CLIENT if auth.required else None
        self._policy: dict[str, RouteAuth | None] = {"unmatched": default}
        for r in config.routes:
            self._policy[r.name] = r.auth if r.auth is not None else default
        self._rules: dict[str, list[_Rule]] = {name: [] for name in self._policy}
        for limit in config.rate_limits:
            rule = _Rule(limit)
            for name in self._rules if limit.route == "*" else (limit.route,):
                self._rules[name].append(rule)
        self.on_auth_failure = on_auth_failure or (lambda route, reason: None)
        self.on_rate_limited = on_rate_limited or (lambda route: None)
        self.clock = clock

    @classmethod
    def from_config(cls, config: Config, **kw: Any) -> EdgePolicy | None:
        """``None`` when neither authentication nor a rate limit is configured."""
        if not (config.auth.enabled or config.rate_limits):
            return None
        return cls(config, **kw)

    def admit(self, ex: Exchange) -> Client | None:
        """The client, or None (anonymous on an open route); raises 401, 403 or 429 problems. A known
        client's name goes on the exchange, for the access log, even when it is then refused."""
        scope = ex.scope
        route = ex.route_name
        client = None
        try:
            if self.authenticator is not None:
                client = self.authenticator.identify(scope)
            policy = self._policy.get(route)
            if policy is not None and policy.required:
                if client is None:
                    raise Unauthorized(
                        "this route needs client credentials (an API key, a bearer token or a client "
                        "certificate)",
                        reason="missing",
                        error=None,
                    )
                if not policy.allows(client.name, client.roles):
                    raise Forbidden(f"client {client.name!r} is not allowed on route {route!r}")
        except Unauthorized as exc:
            self.on_auth_failure(route, exc.reason)
            _close_if_large(exc, scope)
            raise
        except Forbidden as exc:
            self.on_auth_failure(route, "forbidden")
            _close_if_large(exc, scope)
            raise
        finally:
            if client is not None:
                ex.client_name = client.name
                if self._strip and client.via != "peer":
                    # The header identify() read the credential from: the API key header wins over
                    # Authorization, exactly as there.
                    has_key = any(k == self._key_header for k, _ in scope["headers"])
                    ex.credential_header = self._key_header if has_key else b"authorization"
        rules = self._rules.get(route)
        if rules:
            peer = scope.get("client")
            address = peer[0] if peer else ""
            wait = acquire_all([(r.gcra, r.key(route, client, address)) for r in rules], self.clock())
            if wait > 0.0:
                self.on_rate_limited(route)
                limited = RateLimited(
                    f"over the rate limit of route {route!r}; retry after the Retry-After seconds",
                    retry_after=retry_after(wait),
                )
                _close_if_large(limited, scope)
                raise limited
        return client


def _close_if_large(exc: ProxyError, scope: dict[str, Any]) -> None:
    """``connection: close`` on a refusal whose body is large or of unknown size.

    The body is never read for a refused request; without this the server would still receive and
    discard it to keep the connection, so a refused client could make us take in any amount of data.
    Small declared bodies are drained, so ordinary clients keep their connection.
    """
    for k, v in scope["headers"]:
        if (k == b"content-length" and (not v.isdigit() or int(v) > DRAIN_ALLOWANCE)) or (
            k == b"transfer-encoding"
        ):
            exc.headers = (*exc.headers, (b"connection", b"close"))
            return
