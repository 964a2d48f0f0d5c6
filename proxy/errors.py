"""The one error tree of rollguard, and its problem+json rendering (RFC 9457).

    RollguardError                      base; never raised itself. Each class knows its HTTP status and
    │                                   title, so the admin API and the data plane render any of them
    ├── ConfigError                     bad configuration; .path names the key (``canary.steps[2]``)
    ├── ReloadFailed           422      a config reload that changed nothing; names the key path at fault
    ├── TlsError                        a certificate, key or CA file cannot be used; .field names its key
    ├── TraceError                      a backtest trace line that cannot be replayed; .line is its number
    ├── ClientGone             499      the client disconnected first (logged, never sent)
    ├── ApiError               4xx      an admin API request refused; the status is the instance's
    ├── StateConflict          409      a rollout state change lost a race or is illegal in this phase
    │   ├── RevisionMismatch   412      ``If-Match`` named a revision that is no longer current (ETag)
    │   └── IllegalTransition  409      the move is not legal in the current phase
    └── ProxyError                      anything the data plane answers itself, with an HTTP status
        ├── BadRequest         400      unreadable or invalid client request
        ├── Unauthorized       401      missing or invalid client credentials (WWW-Authenticate)
        ├── Forbidden          403      a known client the route's allow list does not name
        ├── RateLimited        429      over a rate limit of the client or route (Retry-After)
        ├── BodyTooLarge       413      client body over ``limits.max_body_bytes``
        ├── NotImplementedProtocol 501  WebSocket upgrades, HTTP/2 (not proxied in this version)
        └── UpstreamError               the upstream failed; .kind is the metric label
            ├── UpstreamConnectError  502  kind=connect   refused, unreachable, DNS
            │   └── UpstreamTlsError  502  kind=connect   TLS handshake or certificate verification failed
            ├── UpstreamResetError    502  kind=reset     connection reset or closed early
            ├── UpstreamProtocolError 502  kind=protocol  not valid HTTP, bad framing
            ├── UpstreamContractError 502  kind=contract  the answer breaks the route's response contract
            ├── UpstreamTimeout       504  kind=timeout   a configured timeout fired
            ├── UpstreamCircuitOpen   503  kind=circuit_open  the upstream's breaker is open (Retry-After)
            └── UpstreamPoolFull      503  kind=pool_full     every pooled connection is busy (Retry-After)

Lower-layer exceptions (aiohttp, OSError, asyncio.TimeoutError) are translated once, at the upstream
boundary (``upstream/pool.py``: ``translate`` and ``TRANSPORT_ERRORS``), with ``raise ... from exc``;
nothing above that layer sees an aiohttp type.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, ClassVar

import orjson

PROBLEM_CONTENT_TYPE = b"application/problem+json"
_TYPE_BASE = "https://rollguard.dev/problems/"


class RollguardError(Exception):
    """Base of every error rollguard raises on purpose. ``status``/``title`` say how an HTTP surface
    answers it, ``problem_detail`` is the sentence it answers with, ``response_headers`` what it adds."""

    status: int = 500
    title: str = "Internal error"

    @property
    def problem_detail(self) -> str:
        return str(self)

    @property
    def response_headers(self) -> Mapping[str, str]:
        return {}


class ConfigError(RollguardError):
    """A configuration file is invalid. ``path`` is the dotted key path, ``""`` for the whole file."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


class TraceError(RollguardError):
    """A line of a backtest trace that is not a request outcome; ``line`` counts from 1."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"trace line {line}: {message}")
        self.line = line


class StateConflict(RollguardError):
    """A rollout state change that cannot be applied."""

    status: int = 409
    title: str = "Conflict"


class RevisionMismatch(StateConflict):
    status = 412
    title = "Precondition failed"

    def __init__(self, expected: int, current: int) -> None:
        self.expected = expected
        self.current = current
        super().__init__(f"revision {expected} is no longer current (now {current})")

    @property
    def response_headers(self) -> Mapping[str, str]:
        return {"ETag": f'"{self.current}"'}


class IllegalTransition(StateConflict):
    status = 409


class ProxyError(RollguardError):
    """An error the data plane answers itself. Subclasses fix ``status``, ``title`` and ``slug``."""

    status: int = 500
    title: str = "Internal proxy error"
    slug: ClassVar[str] = "internal"
    retry_after: int | None = None
    headers: tuple[tuple[bytes, bytes], ...] = ()  # extra response headers (WWW-Authenticate)

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


class BadRequest(ProxyError):
    status = 400
    title = "Bad request"
    slug = "bad-request"


class Unauthorized(ProxyError):
    """No credentials, or credentials that do not verify. ``reason`` is the bounded metric label;
    ``detail`` says what was wrong and never carries the credential itself."""

    status = 401
    title = "Unauthorized"
    slug = "unauthorized"

    def __init__(self, detail: str, *, reason: str, error: str | None = "invalid_token") -> None:
        super().__init__(detail)
        self.reason = reason
        # RFC 6750 §3: no error code when no credentials were presented; invalid_token otherwise.
        challenge = 'Bearer realm="rollguard"'
        if error is not None:
            challenge += f', error="{error}", error_description="{_quotable(detail)}"'
        self.headers = ((b"www-authenticate", challenge.encode()),)


class Forbidden(ProxyError):
    status = 403
    title = "Forbidden"
    slug = "forbidden"
    headers = ((b"www-authenticate", b'Bearer realm="rollguard", error="insufficient_scope"'),)


class RateLimited(ProxyError):
    status = 429
    title = "Too many requests"
    slug = "rate-limited"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


def _quotable(text: str) -> str:
    """RFC 6750 error_description: printable ASCII without quote or backslash."""
    return "".join(c for c in text if 0x20 <= ord(c) <= 0x7E and c not in '"\\')


class BodyTooLarge(ProxyError):
    status = 413
    title = "Request body too large"
    slug = "body-too-large"

    def __init__(self, detail: str, *, unread: int = 0) -> None:
        self.unread = unread  # body bytes the client has yet to send, when it declared them
        super().__init__(detail)


class NotImplementedProtocol(ProxyError):
    status = 501
    title = "Protocol not supported"
    slug = "not-implemented"


class UpstreamError(ProxyError):
    """The upstream (``role`` = baseline or candidate) failed; ``kind`` is the metric label."""

    kind: ClassVar[str] = "protocol"

    def __init__(self, detail: str, *, role: str = "") -> None:
        self.role = role
        super().__init__(detail)


class UpstreamConnectError(UpstreamError):
    status = 502
    title = "Upstream unreachable"
    slug = "upstream-connect"
    kind = "connect"


class UpstreamTlsError(UpstreamConnectError):
    """The TLS handshake with the upstream failed; never retried over plain HTTP."""

    title = "Upstream TLS failure"
    slug = "upstream-tls"


class UpstreamResetError(UpstreamError):
    status = 502
    title = "Upstream connection reset"
    slug = "upstream-reset"
    kind = "reset"


class UpstreamProtocolError(UpstreamError):
    status = 502
    title = "Invalid upstream response"
    slug = "upstream-protocol"
    kind = "protocol"


class UpstreamContractError(UpstreamError):
    status = 502
    title = "Upstream answer breaks the contract"
    slug = "upstream-contract"
    kind = "contract"


class UpstreamCircuitOpen(UpstreamError):
    status = 503
    title = "Upstream circuit open"
    slug = "upstream-circuit-open"
    kind = "circuit_open"

    def __init__(self, detail: str, *, role: str = "", retry_after: int = 1) -> None:
        super().__init__(detail, role=role)
        self.retry_after = retry_after


class UpstreamPoolFull(UpstreamError):
    status = 503
    title = "Upstream busy"
    slug = "upstream-pool-full"
    kind = "pool_full"
    retry_after = 1


class UpstreamTimeout(UpstreamError):
    status = 504
    title = "Upstream timeout"
    slug = "upstream-timeout"
    kind = "timeout"


def problem(
    status: int, title: str, detail: str, *, request_id: str = "", slug: str = "", **extra: Any
) -> bytes:
    """Render an ``application/problem+json`` body (RFC 9457) with our ``request_id`` member."""
    doc: dict[str, Any] = {
        "type": _TYPE_BASE + (slug or str(status)),
        "title": title,
        "status": status,
        "detail": detail,
    }
    if request_id:
        doc["request_id"] = request_id
    doc.update(extra)
    return orjson.dumps(doc)


def problem_for(exc: ProxyError, request_id: str) -> bytes:
    return problem(exc.status, exc.title, exc.detail, request_id=request_id, slug=exc.slug)


class ReloadFailed(RollguardError):
    """A reload that changed nothing; the message names the key path at fault."""

    status = 422
    title = "Config not reloaded"

    @property
    def problem_detail(self) -> str:
        return f"config not reloaded, the running config stays in force: {self}"


class ApiError(RollguardError):
    """An admin API request refused with ``status`` (400, 401, 403, 404, 409, 422, 428, 429, 503)."""

    def __init__(self, status: int, detail: str, headers: Mapping[str, str] | None = None) -> None:
        self.status = status  # per instance: the admin API's statuses are many
        self.title = HTTPStatus(status).phrase
        self.detail = detail
        self.headers = dict(headers or {})
        super().__init__(detail)

    @property
    def problem_detail(self) -> str:
        return self.detail

    @property
    def response_headers(self) -> Mapping[str, str]:
        return self.headers


class TlsError(RollguardError):
    """A certificate, key or CA file cannot be used; ``field`` is the key it came from (``cert``...)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


class ClientGone(RollguardError):
    """The client disconnected before the exchange finished."""

    status = 499  # nginx's "client closed request": logged, never sent
    title = "Client closed request"
