"""Header hygiene for a reverse proxy (pure): hop-by-hop removal, forwarding headers, request ids.

Hop-by-hop headers (RFC 9110 §7.6.1) and every header named in ``Connection`` are dropped in both
directions. ``x-forwarded-for``/``-proto``/``forwarded`` from a trusted peer are kept and appended to;
from anyone else they are replaced, so a client cannot forge its address. The other headers by which a
proxy in front asserts the client's address or original URL (``x-real-ip``, ``x-original-url``, ...) are
kept only from a trusted peer. No inbound ``x-rollguard-*`` header is ever forwarded: those are ours to
set (``x-rollguard-shadow`` marks a mirror), so a client cannot pass for one.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from random import getrandbits

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Never forwarded upstream: operator controls, the client's idea of our host, framing we recompute.
REQUEST_DROP = HOP_BY_HOP | {
    b"x-rollguard-force",
    b"x-rollguard-token",
    b"host",
    b"content-length",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"forwarded",
    b"x-forwarded-host",
}
# Set by a proxy in front about the client; believed only from a trusted peer, like the forwarded family.
PEER_ASSERTED = frozenset(
    {
        b"x-real-ip",
        b"x-client-ip",
        b"true-client-ip",
        b"cf-connecting-ip",
        b"fastly-client-ip",
        b"x-cluster-client-ip",
        b"x-forwarded-port",
        b"x-forwarded-prefix",
        b"x-forwarded-server",
        b"x-forwarded-uri",
        b"x-original-url",
        b"x-original-uri",
        b"x-original-host",
        b"x-rewrite-url",
        b"x-envoy-external-address",
    }
)
_OURS = b"x-rollguard-"  # every header of this prefix is rollguard's to set, never a client's to send
RESPONSE_DROP = HOP_BY_HOP | {b"x-rollguard-version", b"x-request-id"}
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:@+=-]{1,128}")
# What may be echoed into x-forwarded-host / forwarded host=: a host name or address and a port.
_HOST = re.compile(r"[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
RawHeaders = Sequence[tuple[bytes, bytes]]


_NONE: frozenset[bytes] = frozenset()


# The common single-token values, answered without splitting and lower-casing.
_PLAIN_CONNECTION = {v: frozenset({v.lower()}) for v in (b"keep-alive", b"close", b"Keep-Alive", b"Close")}


def connection_tokens(headers: RawHeaders) -> frozenset[bytes]:
    """Header names listed in ``Connection``: also hop-by-hop for this message."""
    names: frozenset[bytes] | None = None
    for k, v in headers:
        if k == b"connection":
            tokens = _PLAIN_CONNECTION.get(v) or frozenset(
                t.strip().lower() for t in v.split(b",") if t.strip()
            )
            names = tokens if names is None else names | tokens
    return _NONE if names is None else names


def request_id(headers: RawHeaders) -> str:
    """The client's ``x-request-id`` when well-formed, else a fresh one.

    Ids correlate log lines; they guard nothing, so a fast non-cryptographic 128-bit draw is enough.
    """
    for k, v in headers:
        if k == b"x-request-id" and _REQUEST_ID.fullmatch(v):
            return v.decode("ascii")
    return f"{getrandbits(128):032x}"


class TrustedPeers:
    """Whether a peer address is in the configured networks; answers are cached (parsing is slow)."""

    def __init__(self, networks: Iterable[Network], cache_size: int = 4096) -> None:
        self.networks = tuple(networks)
        self._cache: dict[str, bool] = {}
        self._cache_size = cache_size

    def __call__(self, peer: str | None) -> bool:
        if not peer:
            return False
        known = self._cache.get(peer)
        if known is None:
            known = is_trusted(peer, self.networks)
            if len(self._cache) >= self._cache_size:
                self._cache.clear()  # bounded: a scan from many addresses cannot grow it
            self._cache[peer] = known
        return known


def is_trusted(peer: str | None, trusted: Iterable[Network]) -> bool:
    if not peer:
        return False
    try:
        addr = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(addr in net for net in trusted)


def upstream_request_headers(
    headers: RawHeaders,
    *,
    peer: str | None,
    scheme: str,
    trusted: bool,
    request_id: str,
    content_length: int | None,
    credential: bytes | None = None,
) -> list[tuple[str, str]]:
    """The headers to send upstream for one client request; ``credential`` names a header to drop too
    (the one whose credential the proxy verified, ``auth.strip_credentials``)."""
    extra_drop = connection_tokens(headers)
    if credential is not None:
        extra_drop = extra_drop | {credential}
    out: list[tuple[str, str]] = []
    xff: list[str] = []
    xfp = ""
    fwd: list[str] = []
    host = ""
    for k, v in headers:
        if k in REQUEST_DROP or k in extra_drop:
            if trusted and k == b"x-forwarded-for":
                xff.append(v.decode("latin-1"))
            elif trusted and k == b"x-forwarded-proto" and not xfp:
                xfp = v.decode("latin-1")
            elif trusted and k == b"forwarded":
                fwd.append(v.decode("latin-1"))
            elif k == b"host" and _HOST.fullmatch(v.decode("latin-1")):
                host = v.decode("latin-1")  # anything else could inject into forwarded's syntax
            continue
        if k == b"x-request-id" or k.startswith(_OURS) or (k in PEER_ASSERTED and not trusted):
            continue
        out.append((k.decode("latin-1"), v.decode("latin-1")))
    client = peer or "unknown"
    xff.append(client)
    node = f'"[{client}]"' if ":" in client else client
    fwd.append(f"for={node};proto={scheme}" + (f';host="{host}"' if host else ""))
    out.append(("x-forwarded-for", ", ".join(xff)))
    out.append(("x-forwarded-proto", xfp or scheme))
    out.append(("forwarded", ", ".join(fwd)))
    if host:
        out.append(("x-forwarded-host", host))
    out.append(("x-request-id", request_id))
    if content_length is not None:
        out.append(("content-length", str(content_length)))
    return out


def client_response_headers(
    upstream: Iterable[tuple[bytes, bytes]], *, version: bytes, request_id: bytes
) -> list[tuple[bytes, bytes]]:
    """The upstream's response headers minus hop-by-hop, plus ours."""
    raw = [(k.lower(), v) for k, v in upstream]
    extra_drop = connection_tokens(raw)
    drop = RESPONSE_DROP | extra_drop if extra_drop else RESPONSE_DROP
    out = [(k, v) for k, v in raw if k not in drop]
    out.append((b"x-rollguard-version", version))
    out.append((b"x-request-id", request_id))
    return out
