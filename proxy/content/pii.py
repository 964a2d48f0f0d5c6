"""The PII masker: keyed pseudonyms for personal data in log text, queries, headers and JSON.

Pure core: no I/O, no framework imports. :mod:`proxy.content.pii_detectors` finds candidate values and
validates them (check digits, Luhn, mod 97, ...); this module resolves overlaps between detectors, replaces
each value with ``<kind:xxxxxxxx>`` and knows the shapes of queries, headers and JSON documents.

A pseudonym is the first 8 hex digits of HMAC-SHA256(key, kind + NUL + normalized value): stable for
correlating log lines under one key, not reversible, and different under another key. Normalization makes
one identity look the same in every format (``123.456.789-09`` and ``12345678909`` are one CPF).

Every ``mask_*`` method fails closed: whatever goes wrong inside it (a detector bug, an input of the wrong
type, a document nested too deeply), the affected value comes out as :data:`MASK_ERROR`, never raw, and
nothing propagates. Logging must never break traffic, nor leak because it tried not to.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from proxy.content.pii_detectors import Detector, Hit, default_detectors, ipv4_canonical
from proxy.content.pii_validators import BR_DDD

__all__ = [
    "KINDS",
    "MASK_ERROR",
    "SENSITIVE_HEADERS",
    "Detector",
    "Hit",
    "Masker",
    "MaskerConfig",
    "normalize",
]

MASK_ERROR: Final = "<masked:error>"
MAX_JSON_DEPTH: Final = 64  # deeper containers come out as MASK_ERROR (and recursion stays bounded)

SENSITIVE_HEADERS: Final = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-rollguard-token", "x-api-key"}
    # not in the product list, but credentials by name wherever they appear
    | {"x-auth-token", "x-access-token", "x-csrf-token", "x-xsrf-token", "x-amz-security-token"}
)
# Names (lower-case, "-" read as "_") whose value is a credential whatever it looks like, as JSON keys
# and query parameters; a few more are credentials only in URLs (pre-signed links, OAuth redirects).
_SECRET_NAMES: Final = frozenset(
    "password passwd pwd secret client_secret api_key apikey x_api_key access_token refresh_token id_token"
    " auth_token session_token csrf_token token authorization credential credentials private_key"
    " aws_secret_access_key".split()
)
_SECRET_QUERY_NAMES: Final = _SECRET_NAMES | frozenset(
    "token sig signature x_amz_signature x_amz_credential".split()
)
# Most specific first: of two overlapping hits of one length the earlier kind wins (a JWT that is a
# bearer credential is one "bearer"; 11 digits with CPF check digits are a "cpf" before a "phone").
KINDS: Final = ("bearer", "jwt", "apikey", "iban", "cnpj", "cpf", "card", "email", "phone", "ip")
_RANK: Final = {kind: rank for rank, kind in enumerate(KINDS)}
_ESCAPES: Final = re.compile(r"(?:%[0-9A-Fa-f]{2})+")
_NAME_WORDS: Final = re.compile(r"[a-z0-9_]+")


@dataclass(frozen=True, slots=True, kw_only=True)
class MaskerConfig:
    """What the masker hides and the key its pseudonyms are made with. Validated on construction."""

    key: bytes = field(repr=False)
    """HMAC key (config ``env:``/``file:`` secret); required, at least 16 bytes; never printed."""
    ip_addresses: bool = True
    """Mask IPv4 and IPv6 addresses (default on)."""
    json_fields: tuple[str, ...] = ()
    """JSON pointers masked whole as ``field``, e.g. ``/user/email``; ``*`` matches any key or index."""
    header_names: tuple[str, ...] = ()
    """Header names masked whole, on top of :data:`SENSITIVE_HEADERS` (case-insensitive)."""

    def __post_init__(self) -> None:
        if not isinstance(self.key, bytes):
            raise TypeError("MaskerConfig.key must be bytes")
        if len(self.key) < 16:
            raise ValueError(f"MaskerConfig.key must be at least 16 bytes, got {len(self.key)}")
        for pointer in self.json_fields:
            if not pointer.startswith("/"):
                raise ValueError(f"json_fields: {pointer!r} is not a JSON pointer (must start with '/')")


def normalize(kind: str, value: str) -> str:
    """The canonical form hashed for ``kind``: one identity, one pseudonym, whatever its format.

    Digits only for CPF, card and phone (a national Brazilian phone gets its ``55``), upper-case
    alphanumerics for CNPJ and IBAN, lower-case for email (``%40`` read as ``@``), the compressed form
    for IP addresses; other kinds are hashed as given.
    """
    if kind in ("cpf", "card"):
        return "".join(c for c in value if c.isascii() and c.isdigit())
    if kind == "phone":
        digits = "".join(c for c in value if c.isascii() and c.isdigit())
        national = not value.lstrip().startswith("+") and len(digits) in (10, 11) and digits[:2] in BR_DDD
        return "55" + digits if national else digits
    if kind in ("cnpj", "iban"):
        return "".join(c for c in value if c.isascii() and c.isalnum()).upper()
    if kind == "email":
        return value.replace("%40", "@").lower()
    if kind == "ip":
        value = value.strip()
        if (v4 := ipv4_canonical(value)) is not None:
            return v4
        try:
            return ipaddress.ip_address(value).compressed
        except ValueError:
            return value.lower()
    return value


class Masker:
    """Replaces personal data with keyed pseudonyms; see the module docstring for the guarantees.

    ``detectors`` replaces the built-in set (tests, special deployments); hits of kind ``ip`` are
    dropped either way when the config turns IP masking off.
    """

    __slots__ = ("_config", "_inner", "_outer", "_detectors", "_headers", "_pointers")

    def __init__(self, config: MaskerConfig, *, detectors: Sequence[Detector] | None = None) -> None:
        self._config = config
        # HMAC (RFC 2104) with the key's two pad blocks hashed once, as the hmac module does inside each
        # call: a pseudonym then costs two hash copies instead of a fresh HMAC context, half the time.
        block = (hashlib.sha256(config.key).digest() if len(config.key) > 64 else config.key).ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))
        self._detectors = tuple(
            default_detectors(ip_addresses=config.ip_addresses) if detectors is None else detectors
        )
        self._headers = SENSITIVE_HEADERS | {name.lower() for name in config.header_names}
        self._pointers = tuple(_parse_pointer(p) for p in config.json_fields)

    def __repr__(self) -> str:
        return f"Masker({self._config!r}, detectors={len(self._detectors)})"

    def pseudonym(self, kind: str, value: str) -> str:
        """``<kind:8 hex>`` from HMAC-SHA256(key, kind + NUL + normalize(kind, value))."""
        inner = self._inner.copy()
        inner.update((kind + "\x00" + normalize(kind, value)).encode("utf-8", "surrogatepass"))
        outer = self._outer.copy()
        outer.update(inner.digest())
        return f"<{kind}:{outer.hexdigest()[:8]}>"

    def mask_text(self, text: str) -> str:
        """``text`` with every detected value replaced by its pseudonym, all else byte-identical."""
        try:
            hits = self._hits(text)
            return self._replace(text, hits) if hits else text
        except Exception:
            return MASK_ERROR

    def mask_query(self, query: str) -> str:
        """A raw query string with each key and value masked after percent-decoding.

        Parts are split on ``&``; what is not masked is kept exactly as it arrived, a masked span is
        replaced by its pseudonym. A value whose key names a credential (``token``, ``password``,
        ``api_key``, ...) is masked whole as ``apikey``. A part that fails comes out as
        ``key=<masked:error>`` (or :data:`MASK_ERROR` alone when the key itself failed). A bracketed or
        dotted key is named by its last part (``user[password]``).
        """
        try:
            return "&".join(self._mask_query_part(part) for part in query.split("&"))
        except Exception:
            return MASK_ERROR

    def mask_headers(self, headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """Credential headers (:data:`SENSITIVE_HEADERS` and the configured names, case-insensitive)
        masked whole as ``header``; every other value through :meth:`mask_text`. Names and order kept."""
        out: list[tuple[str, str]] = []
        try:
            for item in headers:
                out.append(self._mask_header(item))
        except Exception:  # the iterable itself broke: what was masked so far stands, the rest is gone
            out.append((MASK_ERROR, MASK_ERROR))
        return out

    def mask_json(self, doc: Any) -> Any:
        """A new document: configured pointers masked whole as ``field`` (any type but null), values of
        credential-named keys as ``apikey``, every other string (keys too) through :meth:`mask_text`.
        Numbers, booleans and null elsewhere are kept; tuples come back as lists. A value that fails, is
        of a type JSON does not have, or sits deeper than :data:`MAX_JSON_DEPTH` is :data:`MASK_ERROR`."""
        try:
            return self._walk(doc, self._pointers, 0)
        except Exception:
            return MASK_ERROR

    def mask_at(self, pointer: str, value: Any) -> Any:
        """``value`` masked as :meth:`mask_json` would mask it at JSON pointer ``pointer`` of a document:
        whole as ``field`` when a configured pointer names that place, whole as ``apikey`` under a
        credential-named key, else walked (strings through :meth:`mask_text`). For values reported
        outside their document: shadow examples, segment labels."""
        try:
            parts = _parse_pointer(pointer) if pointer else ()
            depth = len(parts)

            def under(p: tuple[str, ...]) -> bool:
                return all(q == "*" or q == name for q, name in zip(p, parts, strict=False))

            if value is not None and any(len(p) == depth and under(p) for p in self._pointers):
                return self.pseudonym("field", _canonical(value))
            if parts and _is_secret(parts[-1], value):
                return self.pseudonym("apikey", str(value))
            return self._walk(value, tuple(p for p in self._pointers if len(p) > depth and under(p)), depth)
        except Exception:
            return MASK_ERROR

    def mask_pointer(self, pointer: str) -> str:
        """A JSON pointer with each of its segments masked on its own: a key can hold a card number or a
        CPF (``/cards/4111111111111111/limit``), and a segment is one value, whatever surrounds it."""
        try:
            return "/".join(self.mask_text(part) if part else part for part in pointer.split("/"))
        except Exception:
            return MASK_ERROR

    # ----------------------------------------------------------------------------------------------

    def _hits(self, text: str) -> list[Hit]:
        if not isinstance(text, str):
            raise TypeError(f"expected str, got {type(text).__name__}")
        found: list[Hit] = []
        for detector in self._detectors:
            found.extend(detector.find(text))
        return self._resolve(found)

    def _resolve(self, found: list[Hit]) -> list[Hit]:
        """Non-overlapping hits in text order. Each cluster of overlapping hits is masked as one span,
        their union, under the pseudonym of its best hit: the longest, then the more specific kind
        (:data:`KINDS` order), then the leftmost. Keeping the best hit's span alone would leave raw
        whatever part of the others sticks out of it ("password=<secret>:<IBAN>" when the secret runs
        into the IBAN)."""
        if not self._config.ip_addresses:
            found = [hit for hit in found if hit.kind != "ip"]
        if len(found) <= 1:
            return found
        found.sort(key=lambda hit: hit.start)
        kept: list[Hit] = []
        cluster, reach = [found[0]], found[0].end
        for hit in found[1:]:
            if hit.start >= reach:  # clusters never overlap each other: resolve each on its own
                kept.append(_union(cluster, reach))
                cluster, reach = [], hit.end
            cluster.append(hit)
            reach = max(reach, hit.end)
        kept.append(_union(cluster, reach))
        return kept

    def _replace(self, text: str, hits: list[Hit]) -> str:
        parts: list[str] = []
        pos = 0
        for hit in hits:
            parts.append(text[pos : hit.start])
            parts.append(self.pseudonym(hit.kind, hit.value))
            pos = hit.end
        parts.append(text[pos:])
        return "".join(parts)

    def _mask_header(self, item: tuple[str, str]) -> tuple[str, str]:
        name: Any = MASK_ERROR
        try:
            name, value = item
            if not isinstance(name, str):
                raise TypeError("header name must be str")
            if name.lower() in self._headers:
                if not isinstance(value, str):
                    raise TypeError("header value must be str")
                return name, self.pseudonym("header", value)
            return name, self.mask_text(value)
        except Exception:
            return (name if isinstance(name, str) else MASK_ERROR), MASK_ERROR

    def _mask_query_part(self, part: str) -> str:
        key, eq, value = part.partition("=")
        try:
            masked_key = self._mask_component(key)
        except Exception:
            return MASK_ERROR
        if not eq:
            return masked_key
        try:
            name = (_decode(key)[1] if "%" in key or "+" in key else key).lower().replace("-", "_")
            # The innermost name says what the value is: "user[password]", "/password", "a.token".
            if not name.isidentifier() and (words := _NAME_WORDS.findall(name)):
                name = words[-1]
            if name in _SECRET_QUERY_NAMES and value:
                return f"{masked_key}={self.pseudonym('apikey', _decode(value)[1])}"
            return f"{masked_key}={self._mask_component(value)}"
        except Exception:
            return f"{masked_key}={MASK_ERROR}"

    def _mask_component(self, raw: str) -> str:
        """One percent-encoded key or value, masked in place.

        ``+`` is a space in form encoding and a plus elsewhere (``+5511...``); both readings are searched,
        and since they differ only at literal ``+`` signs their positions line up.
        """
        if "%" not in raw and "+" not in raw:
            hits = self._hits(raw)
            return self._replace(raw, hits) if hits else raw
        plain, spaced, offsets = _decode(raw)
        found: list[Hit] = []
        for detector in self._detectors:
            found.extend(detector.find(plain))
            if spaced != plain:
                found.extend(detector.find(spaced))
        hits = self._resolve(found)
        if not hits:
            return raw
        # Spans are in decoded characters; cut the raw text at the matching raw offsets.
        raw_hits = [Hit(offsets[h.start], offsets[h.end], h.kind, h.value) for h in hits]
        return self._replace(raw, raw_hits)

    def _walk(self, node: Any, pointers: tuple[tuple[str, ...], ...], depth: int) -> Any:
        if isinstance(node, str):
            return self.mask_text(node)
        if node is None or isinstance(node, bool | int | float):
            return node
        if depth >= MAX_JSON_DEPTH or not isinstance(node, dict | list | tuple):
            return MASK_ERROR  # bytes, sets, objects, absurd nesting: nothing we can vouch for
        items = node.items() if isinstance(node, dict) else enumerate(node)
        out: dict[Any, Any] = {}
        for key, value in items:
            name = key if isinstance(key, str) else str(key)
            try:
                below = tuple(p for p in pointers if p[depth] == "*" or p[depth] == name)
                if value is not None and any(len(p) == depth + 1 for p in below):
                    masked = self.pseudonym("field", _canonical(value))
                elif isinstance(key, str) and _is_secret(name, value):
                    masked = self.pseudonym("apikey", str(value))
                else:
                    masked = self._walk(value, tuple(p for p in below if len(p) > depth + 1), depth + 1)
            except Exception:
                masked = MASK_ERROR
            out[self.mask_text(key) if isinstance(key, str) else key] = masked
        return out if isinstance(node, dict) else list(out.values())


def _union(cluster: list[Hit], end: int) -> Hit:
    """``cluster[0].start`` (the hits are in start order) to ``end``, as the best of the hits."""
    if len(cluster) == 1:
        return cluster[0]
    best = min(cluster, key=lambda h: (h.start - h.end, _RANK.get(h.kind, len(_RANK)), h.start))
    return Hit(cluster[0].start, end, best.kind, best.value)


def _is_secret(name: str, value: Any) -> bool:
    return (
        isinstance(value, str | int | float)
        and not isinstance(value, bool)
        and name.lower().replace("-", "_") in _SECRET_NAMES
    )


def _parse_pointer(pointer: str) -> tuple[str, ...]:
    return tuple(part.replace("~1", "/").replace("~0", "~") for part in pointer[1:].split("/"))


def _canonical(value: Any) -> str:
    """A stable text for a value masked whole: strings as they are, anything else as sorted JSON-ish."""
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, bool | int | float):
        return repr(value)  # 12345678909 and "12345678909" get one pseudonym
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode()


def _decode(raw: str) -> tuple[str, str, list[int]]:
    """Percent-decode ``raw`` as UTF-8: (``+`` kept, ``+`` as space, raw offset of each decoded char).

    ``offsets`` has one more entry than the decoded text, ``len(raw)``. Bytes that are not valid UTF-8
    decode to U+FFFD, one per byte, so every decoded character has a place in ``raw``.
    """
    plain: list[str] = []
    spaced: list[str] = []
    offsets: list[int] = []
    pos = 0
    for run in _ESCAPES.finditer(raw):
        literal = raw[pos : run.start()]
        plain.append(literal)
        spaced.append(literal.replace("+", " "))
        offsets.extend(range(pos, run.start()))
        data = bytes.fromhex(run.group().replace("%", ""))
        j = 0
        while j < len(data):
            size = _utf8_size(data[j])
            try:
                char = data[j : j + size].decode() if size else "\ufffd"
            except UnicodeDecodeError:
                char, size = "\ufffd", 1
            plain.append(char)
            spaced.append(char)
            offsets.append(run.start() + 3 * j)
            j += max(size, 1)
        pos = run.end()
    plain.append(raw[pos:])
    spaced.append(raw[pos:].replace("+", " "))
    offsets.extend(range(pos, len(raw) + 1))
    return "".join(plain), "".join(spaced), offsets


def _utf8_size(lead: int) -> int:
    if lead < 0x80:
        return 1
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 0
