"""The ASGI TLS extension of a connection, with the peer's identities for authorization.

``tls_extension(ssl_object)`` is computed once per TLS connection (by the listener's protocol, at
``connection_made``, which both asyncio and uvloop call after the handshake) and put into every request
scope of that connection as ``scope["extensions"]["tls"]``. Keys (the ASGI TLS extension, plus one of
rollguard's own):

=========================  =================================================================================
``server_cert``            None (not tracked per connection across certificate reloads)
``client_cert_chain``      the peer's certificates as PEM strings, leaf first; ``[]`` without one. On
                           Python before 3.13 only the leaf is available
``client_cert_name``       the leaf's subject, RFC 4514 (``CN=svc-a,O=Example``), or None
``client_cert_error``      None: a presented certificate that fails verification fails the handshake
``tls_version``            0x0303 (TLS 1.2) or 0x0304 (TLS 1.3)
``cipher_suite``           the IANA number of the negotiated suite (0xC02F, 0x1301, ...), or None
``client_cert_identities`` rollguard: the subject's common names, then every DNS and URI subjectAltName of
                           the verified peer certificate, in certificate order; ``[]`` without one
=========================  =================================================================================
"""

from __future__ import annotations

import ssl
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

__all__ = ["identities", "tls_extension"]

_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}

# OpenSSL cipher name -> IANA number; ``get_ciphers()`` ids carry it in their low 16 bits.
_SUITES: dict[str, int] = {
    c["name"]: c["id"] & 0xFFFF for c in ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).get_ciphers()
}


def identities(cert: x509.Certificate) -> list[str]:
    """Subject common names, then DNS and URI subjectAltNames, in certificate order, without repeats."""
    found: list[str] = []
    for attr in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        value = attr.value if isinstance(attr.value, str) else attr.value.decode("utf-8", "replace")
        found.append(value)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    if san is not None:
        for name in san:
            if isinstance(name, x509.DNSName | x509.UniformResourceIdentifier):
                found.append(name.value)
    return list(dict.fromkeys(found))


def tls_extension(sslobj: ssl.SSLObject | ssl.SSLSocket) -> dict[str, Any]:
    """The ``tls`` scope extension of a completed handshake (see the module's table)."""
    cipher = sslobj.cipher()
    ext: dict[str, Any] = {
        "server_cert": None,
        "client_cert_chain": [],
        "client_cert_name": None,
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(sslobj.version() or ""),
        "cipher_suite": _SUITES.get(cipher[0]) if cipher else None,
        "client_cert_identities": [],
    }
    leaf = sslobj.getpeercert(binary_form=True)
    if not leaf:
        return ext
    chain_der: list[bytes] = [leaf]
    verified = getattr(sslobj, "get_verified_chain", None)  # Python 3.13+
    if verified is not None:
        chain_der = list(verified()) or chain_der  # DER bytes, leaf first
    cert = x509.load_der_x509_certificate(leaf)
    ext["client_cert_chain"] = [ssl.DER_cert_to_PEM_cert(der) for der in chain_der]
    ext["client_cert_name"] = cert.subject.rfc4514_string()
    ext["client_cert_identities"] = identities(cert)
    return ext
