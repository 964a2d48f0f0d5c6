"""Upstream connection pools (aiohttp) and the translation of their failures into our error tree.

One ``ClientSession`` + ``TCPConnector`` per upstream: explicit pool limit and timeouts, no
decompression (bytes pass through as the model sent them), no cookie jar, no proxies from the
environment, and no headers of aiohttp's own (the client's headers are forwarded, not ours).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterable, Sequence
from typing import Any

import aiohttp
from yarl import URL

from proxy.config.model import UpstreamConfig
from proxy.config.tls_contexts import client_context
from proxy.errors import (
    UpstreamCircuitOpen,
    UpstreamConnectError,
    UpstreamError,
    UpstreamPoolFull,
    UpstreamProtocolError,
    UpstreamResetError,
    UpstreamTimeout,
    UpstreamTlsError,
)
from proxy.upstream.breaker import BreakerPolicy, CircuitBreaker

_NO_AUTO_HEADERS = ("User-Agent", "Accept-Encoding", "Accept", "Content-Type")
# What reading an upstream's answer can raise below our tree; callers catch exactly these and raise
# ``translate(...)`` from them, so no aiohttp type travels further up.
TRANSPORT_ERRORS = (TimeoutError, aiohttp.ClientError, OSError)


def translate(exc: BaseException, role: str, cfg: UpstreamConfig) -> UpstreamError:
    """Map an aiohttp/OS/timeout failure to the error class (and metric kind) it stands for."""
    # The client reads this detail: it names the upstream by role, never by its internal address.
    name = f"{role} upstream"
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return UpstreamTimeout(f"{name}: connect timeout ({cfg.connect_timeout:g}s) fired", role=role)
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return UpstreamTimeout(f"{name}: read timeout ({cfg.read_timeout:g}s without data) fired", role=role)
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return UpstreamTimeout(f"{name}: request timeout ({cfg.timeout:g}s) fired", role=role)
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cert_error = exc.certificate_error
        why = getattr(cert_error, "verify_message", None) or cert_error
        return UpstreamTlsError(f"{name}: TLS verification failed: {why}", role=role)
    if isinstance(exc, aiohttp.ClientSSLError):
        return UpstreamTlsError(f"{name}: TLS handshake failed: {_ssl_reason(exc.os_error)}", role=role)
    if (
        isinstance(exc, aiohttp.ClientConnectorError)
        and isinstance(exc.os_error, ConnectionResetError | ConnectionAbortedError)
        and cfg.url.startswith("https://")
    ):
        # Connected, then dropped before the connection was up: during the TLS handshake.
        return UpstreamTlsError(
            f"{name}: TLS handshake failed: the upstream closed the connection{_tls_hint(cfg)}", role=role
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        why = exc.os_error.strerror or exc
        return UpstreamConnectError(f"{name}: cannot connect: {why}{_tls_hint(cfg)}", role=role)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return UpstreamResetError(
            f"{name}: closed the connection before a complete response{_tls_hint(cfg)}", role=role
        )
    if isinstance(exc, aiohttp.ClientPayloadError):
        return UpstreamResetError(f"{name}: response body cut short: {exc}", role=role)
    if isinstance(exc, aiohttp.ClientResponseError):
        return UpstreamProtocolError(f"{name}: invalid HTTP response: {exc.message}", role=role)
    if isinstance(exc, aiohttp.ClientOSError | ConnectionError | OSError):
        if isinstance(exc.__cause__, ssl.SSLError) or isinstance(exc, ssl.SSLError):
            # A TLS alert after the handshake (TLS 1.3 servers judge the client certificate then).
            reason = _ssl_reason(exc if isinstance(exc, ssl.SSLError) else exc.__cause__)
            return UpstreamTlsError(f"{name}: TLS handshake failed: {reason}", role=role)
        return UpstreamResetError(f"{name}: connection error: {exc}{_tls_hint(cfg)}", role=role)
    return UpstreamProtocolError(f"{name}: {type(exc).__name__}: {exc}", role=role)


def _ssl_reason(err: BaseException | None) -> str:
    reason = getattr(err, "reason", None)
    return str(reason).lower().replace("_", " ") if reason else str(err)


def _tls_hint(cfg: UpstreamConfig) -> str:
    """Under TLS 1.3 a server judges the client certificate after our side of the handshake is done, and
    many then just drop the connection: what the client sees is a reset, not a TLS alert."""
    if not cfg.url.startswith("https://"):
        return ""
    if cfg.tls is None or cfg.tls.cert is None:
        return f" (over TLS: does it require a client certificate? upstreams.{cfg.role}.tls.cert is not set)"
    return " (over TLS: does it refuse the client certificate?)"


class UpstreamPool:
    """The connection pool of one upstream. ``start`` in the lifespan, ``close`` on the way out."""

    def __init__(self, cfg: UpstreamConfig) -> None:
        self.cfg = cfg
        self.role = cfg.role
        self.version = cfg.version
        self.timeout = aiohttp.ClientTimeout(
            total=cfg.timeout, connect=cfg.connect_timeout, sock_read=cfg.read_timeout
        )
        self._session: aiohttp.ClientSession | None = None
        self._server_name = cfg.tls.server_name if cfg.tls is not None else None  # SNI and name checked
        self._connector: aiohttp.TCPConnector | None = None
        self.in_flight = 0
        self.breaker = CircuitBreaker(
            BreakerPolicy(
                failures=cfg.breaker_failures,
                failure_rate=cfg.breaker_failure_rate,
                min_volume=cfg.breaker_min_volume,
                open_for=cfg.breaker_open_for,
            )
        )

    def __repr__(self) -> str:
        return f"<UpstreamPool {self.role} {self.cfg.url} {self.stats()}>"

    async def start(self) -> None:
        # https:// is always verified: the configured CA bundle only, or the system store. (True is
        # aiohttp's default, which plain http:// never uses.)
        tls = client_context(self.cfg.tls) if self.cfg.url.startswith("https://") else True
        self._connector = aiohttp.TCPConnector(
            limit=self.cfg.max_connections,
            limit_per_host=0,
            ttl_dns_cache=30,
            keepalive_timeout=30,
            ssl=tls,
        )
        self._session = aiohttp.ClientSession(
            connector=self._connector,
            timeout=self.timeout,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
            skip_auto_headers=_NO_AUTO_HEADERS,
            raise_for_status=False,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def stats(self) -> dict[str, Any]:
        """Pool occupancy and circuit state for ``/status``."""
        return {
            "url": self.cfg.url,
            "version": self.version,
            "limit": self.cfg.max_connections,
            "in_flight": self.in_flight,
            "circuit": self.breaker.to_json(),
        }

    def admit(self) -> None:
        """Refuse at once, before any I/O, when the circuit is open or every connection is busy."""
        now = time.monotonic()
        if not self.breaker.allow(now):
            raise UpstreamCircuitOpen(
                f"{self.role} upstream: circuit open after repeated failures",
                role=self.role,
                retry_after=self.breaker.retry_after(now),
            )
        if self.in_flight >= self.cfg.max_connections:
            raise UpstreamPoolFull(
                f"{self.role} upstream: all {self.cfg.max_connections} connections busy",
                role=self.role,
            )

    def record(self, ok: bool) -> None:
        self.breaker.record(ok, time.monotonic())

    async def send(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | AsyncIterable[bytes] | None,
        *,
        budget: float | None = None,
    ) -> aiohttp.ClientResponse:
        """Send a request; return the response with its head read and its body unread.

        ``budget`` (seconds) shortens the attempt's total timeout to what the route's deadline leaves.
        The caller must ``release()`` the response. Failures arrive as :class:`UpstreamError`.
        """
        if self._session is None:
            raise RuntimeError("upstream pool not started")
        attempt_timeout = self.timeout
        if budget is not None and budget < self.cfg.timeout:
            attempt_timeout = aiohttp.ClientTimeout(
                total=max(budget, 0.001), connect=self.cfg.connect_timeout, sock_read=self.cfg.read_timeout
            )
        # The client's target is forwarded byte for byte: already percent-encoded, so yarl is told not
        # to re-quote it (also the cheap path: no parsing of the path per request).
        url = URL(self.cfg.url + target, encoded=True)
        try:
            return await self._session.request(
                method,
                url,
                headers=headers,
                data=body,
                allow_redirects=False,
                timeout=attempt_timeout,
                compress=None,
                server_hostname=self._server_name,
            )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise translate(exc, self.role, self.cfg) from exc

    async def reachable(self, within: float = 1.0) -> bool:
        """Whether a TCP connection to the upstream opens within ``within`` seconds (for ``/readyz``)."""
        url = URL(self.cfg.url)
        try:
            async with asyncio.timeout(within):
                _, writer = await asyncio.open_connection(url.host, url.port)
        except (OSError, TimeoutError):
            return False
        writer.close()
        return True
