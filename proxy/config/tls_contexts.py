"""TLS contexts: the listeners' server side (with reload on SIGHUP) and the upstreams' client side.

Server side. uvicorn is handed one :class:`ssl.SSLContext` per listener for its whole life (through
``uvicorn.Config(ssl_context_factory=...)``); :class:`ServerTls` keeps it. A reload never touches that
context: it builds a complete fresh one from the files and publishes it, and the kept context's SNI
callback switches every new handshake to the latest published one (``SSLObject.context = ...``, the
documented way to swap a certificate during the handshake; OpenSSL calls the callback for every
ClientHello, with or without a server name). Why not ``load_cert_chain`` on the live context:

- ``load_verify_locations`` only *adds* to a context's trust store, so a reloaded client CA bundle
  could never drop a CA;
- ``load_cert_chain`` replaces the certificate before it checks the key, so a bad key file would leave
  the live context with the new certificate and no key.

Connections already open hold their own ``SSL`` object (OpenSSL copies certificate and key into it at
accept) and are not affected. A reload that fails leaves the published context as it was.

Client side. :func:`client_context` verifies the upstream against only the configured CA bundle (or the
system store), always checks the host name, and loads the client certificate for mTLS. There is no way
to turn verification off.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

from cryptography import x509

from proxy.config.model import ListenerTls, UpstreamTls
from proxy.errors import ConfigError, TlsError

__all__ = ["CIPHERS", "ServerTls", "TlsError", "client_context", "server_context"]

log = logging.getLogger("rollguard.tls")

# Mozilla's "intermediate" TLS 1.2 suites: forward secrecy and AEAD only. TLS 1.3 suites are OpenSSL's
# (all AEAD) and are not affected by this list.
CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
    )
)

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
_VERIFY = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "require": ssl.CERT_REQUIRED}


def _describe(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError):
        return f"cannot read {exc.filename}: {exc.strerror}"
    reason = getattr(exc, "reason", None)
    if reason is None and "PEM lib" in str(exc):
        # OpenSSL's catch-all for a file it could not decode.
        return "not a readable PEM key (or its key_password is wrong or missing)"
    return str(reason or exc).lower().replace("_", " ")


def _load_chain(ctx: ssl.SSLContext, cert: Path, key: Path | None, password: str | None) -> None:
    for name, file in (("cert", cert), ("key", key)):
        if file is not None and not file.is_file():
            raise TlsError(name, f"cannot read {file}: no such file")
    try:
        pem = cert.read_bytes()
    except OSError as exc:
        raise TlsError("cert", f"cannot read {cert}: {exc.strerror}") from exc
    try:
        # First block only: whether the certificate itself is readable, so the error names the right file.
        x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise TlsError("cert", f"{cert} does not start with a PEM certificate: {exc}") from exc
    try:
        ctx.load_cert_chain(cert, key, password=password)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise TlsError(
            "key" if key is not None else "cert", f"cannot load the private key for {cert}: {_describe(exc)}"
        ) from exc


def _load_cas(ctx: ssl.SSLContext, field: str, bundle: Path) -> None:
    try:
        ctx.load_verify_locations(cafile=bundle)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(field, f"cannot load the CA bundle: {_describe(exc)}") from exc


def server_context(cfg: ListenerTls) -> ssl.SSLContext:
    """A complete server context from ``cfg``'s files; :class:`TlsError` names the field at fault."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _VERSIONS[cfg.min_version]
    ctx.set_ciphers(CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    # HTTP/1.1 only: an h2-capable client settles on http/1.1 during the handshake.
    ctx.set_alpn_protocols(["http/1.1"])
    _load_chain(ctx, cfg.cert, cfg.key, cfg.key_password)
    if cfg.client_ca is not None:
        _load_cas(ctx, "client_ca", cfg.client_ca)
        # A resumed session skips certificate verification, and tickets stay valid across a reload:
        # without them, a client CA removed from the bundle stops working at the next connection.
        ctx.options |= ssl.OP_NO_TICKET
        ctx.num_tickets = 0
    ctx.verify_mode = _VERIFY[cfg.client_auth]
    return ctx


class ServerTls:
    """One listener's TLS: the context uvicorn holds, and the latest one its handshakes switch to."""

    def __init__(self, cfg: ListenerTls) -> None:
        self.cfg = cfg
        try:
            self.context = server_context(cfg)  # uvicorn's, for the listener's life
        except TlsError as exc:  # the files changed since the config was checked
            raise ConfigError(f"{cfg.at}.{exc.field}", str(exc)) from exc
        self.context.sni_callback = self._switch
        self._current = self.context  # switching to itself is a no-op in OpenSSL
        self.generation = 1  # certificate loads, for logs and /status

    def _switch(self, sslobj: ssl.SSLObject, _server_name: str | None, _ctx: ssl.SSLContext) -> None:
        sslobj.context = self._current
        return None

    def reload(self) -> bool:
        """Re-read certificate, key and client CA; on any failure log it and keep serving the old ones."""
        try:
            fresh = server_context(self.cfg)
        except TlsError as exc:
            log.error(
                "%s: TLS reload failed, the previous certificate stays in use: %s.%s: %s",
                self.cfg.at,
                self.cfg.at,
                exc.field,
                exc,
            )
            return False
        self._current = fresh
        self.generation += 1
        log.info(
            "%s: TLS certificate, key and client CA reloaded (load %d, %s); open connections keep theirs",
            self.cfg.at,
            self.generation,
            self.cfg.cert,
        )
        return True

    def __repr__(self) -> str:
        return f"<ServerTls {self.cfg.at} cert={self.cfg.cert} generation={self.generation}>"


def client_context(cfg: UpstreamTls | None) -> ssl.SSLContext:
    """The context for an ``https://`` upstream: verified against ``cfg.ca`` only, or the system store."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname by construction
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(CIPHERS)
    if cfg is not None and cfg.ca is not None:
        _load_cas(ctx, "ca", cfg.ca)
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if cfg is not None and cfg.cert is not None:
        _load_chain(ctx, cfg.cert, cfg.key, cfg.key_password)
    return ctx
