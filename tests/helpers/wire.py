"""Hypothesis strategies for raw HTTP/1.1 request bytes, aimed at the data listener.

:func:`request_bytes` is the entry point. Most of what it draws starts as a request a parser would take
(a JSON POST to the ``/v1/infer`` route of ``tests/helpers/config.py``, GETs to health-like paths,
unknown paths) and is then broken the ways clients and attackers break HTTP/1.1: line endings, field
syntax, control bytes, framing (``Content-Length`` and ``Transfer-Encoding``, chunk syntax), versions,
methods, request targets, sizes over the listener's limits, truncation and pipelining. Near-valid input
reaches the deep code (the framing checks, the body reader, the forwarder); the pure noise drawn now
and then stops at the first byte, so it is kept rare.

Every draw shrinks towards one valid ``POST /v1/infer``: mutation counts shrink to zero and each list
of choices starts with the ordinary one.

The sample model's ``/_control/behavior`` (changes how the model answers), ``/bytes`` and ``/sse``
(stream for as long as they are asked to) are never targeted: through them a client could legitimately
make the upstream fail or a response outlast any deadline.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from hypothesis import strategies as st

from tests.helpers.tokens import OPERATOR_TOKEN
from tests.helpers.traffic import VALID_BODY

Draw = Callable[[st.SearchStrategy[Any]], Any]

CRLF = b"\r\n"
# RFC 9110 tchar: what a method or a field name may be made of.
TCHAR = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
CONTROL_BYTES = bytes([*range(0x00, 0x20), 0x7F])
LINE_ENDINGS = [CRLF, b"\n", b"\r", b"\r\r\n", b"\n\r", b" \r\n"]

METHODS = [b"POST", b"GET", b"HEAD", b"PUT", b"PATCH", b"DELETE", b"OPTIONS", b"TRACE", b"CONNECT"]
ODD_METHODS = [b"PRI", b"QUERY", b"get", b"Post", b"G\x00T", b"GET\t", b"", b"M-SEARCH", b"\xff\xfe", b"-"]
VERSIONS = [
    b"HTTP/1.0",
    b"HTTP/2.0",
    b"HTTP/2",
    b"HTTP/3",
    b"HTTP/9",
    b"HTTP/0.9",
    b"HTTP/1.2",
    b"HTTP/1.10",
    b"HTTP/11",
    b"http/1.1",
    b"HTTP/1.1 ",
    b"HTTP/1.",
    b"HTTP/-1.1",
    b"HTTX/1.1",
    b"",
]
# Health-like and unknown paths: the data plane forwards whatever matches no route to the baseline.
PATHS = [
    b"/v1/infer",
    b"/healthz",
    b"/readyz",
    b"/",
    b"/metrics",
    b"/echo",
    b"/v1/infer/",
    b"/V1/INFER",
    b"/v1/infer?debug=1&x=%20y",
    b"/no/such/path",
    b"//double//slash",
    b"/%2e%2e/%2e%2e/etc/passwd",
    b"/../../etc/passwd",
    b"/%zz",
    b"/%00",
    b"/caf%C3%A9",
    b"/caf\xc3\xa9",
    b"/a;b=c",
    b"/?",
    b"/#fragment",
    b"/v1/infer?" + b"q=" * 40,
]
ODD_TARGETS = [
    b"*",
    b"http://rollguard/v1/infer",
    b"http://rollguard:8080/healthz?x=1",
    b"https://user:pass@rollguard/v1/infer",
    b"http://[::1]:80/",
    b"http://rollguard:99999/",
    b"http://",
    b"rollguard:443",
    b"rollguard",
    b"?only=query",
    b"#only-fragment",
    b"",
    b"/with space",
    b"/tab\there",
    b"@evil/",
    b"\\windows\\path",
]
CONTENT_LENGTHS = [
    b"-1",
    b"-0",
    b"+5",
    b"0x10",
    b"1e3",
    b"5.0",
    b" 5",
    b"5 ",
    b"",
    b"abc",
    b"99999999999999999999",
    b"18446744073709551616",
    b"18446744073709551615",
    b"9223372036854775808",
    b"00000000000000000005",
    b"5, 5",
    b"5,6",
    b"\t5",
    b"\xd9\xa5",
]
TRANSFER_CODINGS = [
    b"chunked",
    b"Chunked",
    b"CHUNKED",
    b" chunked",
    b"chunked ",
    b"gzip, chunked",
    b"chunked, gzip",
    b"identity",
    b"identity, chunked",
    b"chunked, chunked",
    b"xchunked",
    b"chunked\x0b",
    b"chunked;q=1",
    b"",
    b",chunked",
]
BAD_CHUNK_SIZES = [
    b"zz",
    b"-3",
    b"f" * 17,
    b"FFFFFFFFFFFFFFFF",
    b"0x5",
    b" 5",
    b"5 ",
    b"",
    b"+5",
    b"5\x00",
    b"1" * 40,
]
CHUNK_EXTENSIONS = [
    b";a=b",
    b";",
    b';name="quoted;value"',
    b";a=b;c",
    b"; a = b",
    b";" + b"e" * 5000,
    b";\x00",
]
EXTRA_FIELDS: list[tuple[bytes, bytes]] = [
    (b"X-User-Id", b"u-42"),
    (b"X-User-Id", b"\xc3\xa9t\xc3\xa9"),
    (b"X-Request-Id", b"client-chosen-7"),
    (b"X-Request-Id", b"bad id with spaces and \xff"),
    (b"X-Request-Id", b"r" * 300),
    (b"Connection", b"close"),
    (b"Connection", b"keep-alive"),
    (b"Connection", b"keep-alive, close"),
    (b"Connection", b"TE, Upgrade"),
    (b"Connection", b"x-request-id, content-length"),
    (b"TE", b"trailers"),
    (b"Trailer", b"X-Checksum"),
    (b"Expect", b"100-continue"),
    (b"Expect", b"100-CONTINUE"),
    (b"Expect", b"200-ok"),
    (b"Accept-Encoding", b"gzip, br"),
    (b"Content-Encoding", b"gzip"),
    (b"Content-Encoding", b"br, deflate"),
    (b"Content-Type", b"text/plain"),
    (b"Content-Type", b"application/json; charset=utf-16"),
    (b"Content-Type", b"multipart/form-data; boundary="),
    (b"X-Forwarded-For", b"10.0.0.1, 192.168.0.1"),
    (b"X-Forwarded-For", b"not-an-address"),
    (b"X-Forwarded-Proto", b"gopher"),
    (b"Forwarded", b'for="[::1]:80";proto=https;by=_x'),
    (b"Forwarded", b";;;=="),
    (b"X-Rollguard-Force", b"candidate"),
    (b"X-Rollguard-Force", b"nonsense"),
    (b"X-Rollguard-Token", OPERATOR_TOKEN.encode()),
    (b"X-Rollguard-Token", b"wrong-token"),
    (b"Authorization", b"Bearer " + OPERATOR_TOKEN.encode()),
    (b"Authorization", b"Basic !!!"),
    (b"Cookie", b"a=b; c"),
    (b"Range", b"bytes=0-1,5-"),
    (b"Max-Forwards", b"0"),
    (b"Proxy-Connection", b"keep-alive"),
    (b"Host", b"other.example"),
    (b"Host", b""),
    (b"X-Empty", b""),
    (b"X-Obs-Text", b"\x80\xff\xfe"),
    (b"X-Utf8", "ключ".encode()),
]
UPGRADES: list[list[tuple[bytes, bytes]]] = [
    [
        (b"Connection", b"Upgrade"),
        (b"Upgrade", b"websocket"),
        (b"Sec-WebSocket-Version", b"13"),
        (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
    ],
    [
        (b"Connection", b"Upgrade, HTTP2-Settings"),
        (b"Upgrade", b"h2c"),
        (b"HTTP2-Settings", b"AAMAAABkAAQAAP__"),
    ],
    [(b"Upgrade", b"websocket")],
    [(b"Connection", b"upgrade"), (b"Upgrade", b"foo/1, bar")],
]
# Bytes that are not HTTP at all but are what a confused client sends first.
FOREIGN_PREFIXES = [
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
    b"SSH-2.0-OpenSSH_9.6\r\n",
    b"\x00\x00\x00\x04\x00\x00\x00\x00\x00",  # an HTTP/2 SETTINGS frame
    b"\r\n\r\n\r\n",
]


@dataclass
class Request:
    """One request being drawn, kept in parts so that each mutation can break one of them."""

    method: bytes
    target: bytes
    version: bytes  # empty: a request line with no version (HTTP/0.9 style)
    fields: list[tuple[bytes, bytes]]
    body: bytes  # the bytes after the head, already framed (chunked or not)
    separators: list[bytes] = field(default_factory=lambda: [b" ", b" "])  # around the target
    eol: bytes = CRLF
    eol_overrides: dict[int, bytes] = field(default_factory=dict)  # line index -> its ending
    # Lines that are not ``name: value``, each placed after the field at its position.
    raw_lines: list[tuple[int, bytes]] = field(default_factory=list)

    def serialize(self) -> bytes:
        request_line = self.method + self.separators[0] + self.target
        if self.version:
            request_line += self.separators[1] + self.version
        lines = [request_line] + [name + b": " + value for name, value in self.fields]
        for position, line in sorted(self.raw_lines, reverse=True):
            lines.insert(min(position + 1, len(lines)), line)
        out = bytearray()
        for i, line in enumerate([*lines, b""]):
            out += line + self.eol_overrides.get(i, self.eol)
        return bytes(out) + self.body

    def set_field(self, name: bytes, value: bytes) -> None:
        """Replace every field named ``name`` (case-insensitive) by one, or add it."""
        self.drop_field(name)
        self.fields.append((name, value))

    def drop_field(self, name: bytes) -> None:
        self.fields = [(n, v) for n, v in self.fields if n.lower() != name.lower()]


# -- bodies ------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _json(doc: Any) -> bytes:
    # The standard library, not orjson: it writes integers past 64 bits, and lone surrogates pass
    # through as the invalid UTF-8 a careless client sends.
    return json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass")


@st.composite
def infer_bodies(draw: Draw) -> bytes:
    """Bodies for ``POST /v1/infer``: mostly the valid one, else near it, else not JSON at all."""
    kind = draw(st.sampled_from(["valid", "valid", "valid", "feature", "json", "nested", "broken", "large"]))
    if kind == "valid":
        return orjson.dumps(VALID_BODY)
    if kind == "feature":
        # One feature with another type or an extreme value: schema checks and the sticky/segment keys.
        features = dict(VALID_BODY["features"])
        name = draw(st.sampled_from([*features, "unknown_feature"]))
        features[name] = draw(json_values | st.sampled_from([1e308, -0.0, 2**64, "br-se" * 100]))
        doc: dict[str, Any] = {"features": features}
        if draw(st.booleans()):
            doc["user_id"] = draw(st.text(max_size=200))
        return _json(doc)
    if kind == "json":
        return _json(draw(json_values))
    if kind == "nested":
        depth = draw(st.integers(min_value=50, max_value=5000))
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
        return opener * depth + b"1" + closer * depth
    if kind == "broken":
        valid = orjson.dumps(VALID_BODY)
        return draw(
            st.sampled_from(
                [
                    valid[: len(valid) // 2],
                    b"{",
                    b"nul",
                    b'{"features": NaN}',
                    b'{"features": 1e999}',
                    b'{"features": {"region": "\xff\xfe"}}',
                    b"\xef\xbb\xbf" + valid,  # a UTF-8 byte-order mark
                    valid + b"trailing",
                    b"",
                ]
            )
            | st.binary(max_size=64)
        )
    # Around the body limits where the listener is fuzzed: held whole up to 8 KiB, streamed unchecked
    # up to 16 KiB, refused (413) beyond.
    size = draw(st.sampled_from([6, 12, 20])) * 1024 + draw(st.integers(min_value=-512, max_value=512))
    return orjson.dumps({**VALID_BODY, "note": "x" * size})


# -- chunked framing ---------------------------------------------------------------------------------


@st.composite
def chunked(draw: Draw, payload: bytes, broken: bool) -> bytes:
    """``payload`` in the chunked coding; ``broken``: some chunk sizes, extensions, CRLFs or the last
    chunk go wrong, and trailers may follow."""
    cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=4))) if payload else []
    pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True) if b > a]
    out = bytearray()
    for piece in pieces:
        size = b"%x" % len(piece)
        after = CRLF
        if broken:
            fault = draw(st.sampled_from(["none", "none", "size", "mismatch", "extension", "no-crlf", "lf"]))
            if fault == "size":
                size = draw(st.sampled_from(BAD_CHUNK_SIZES))
            elif fault == "mismatch":
                size = b"%x" % max(0, len(piece) + draw(st.sampled_from([-1, 1, 1000])))
            elif fault == "extension":
                size += draw(st.sampled_from(CHUNK_EXTENSIONS))
            elif fault == "no-crlf":
                after = b""
            elif fault == "lf":
                after = b"\n"
        out += size + CRLF + piece + after
    if broken:
        ending = draw(st.sampled_from(["last", "trailers", "missing-last", "unterminated", "extension"]))
    else:
        ending = "last"
    if ending == "last":
        out += b"0" + CRLF + CRLF
    elif ending == "trailers":
        trailers = draw(
            st.lists(
                st.sampled_from(
                    [
                        b"X-Checksum: abc",
                        b"Content-Length: 5",
                        b"Transfer-Encoding: chunked",
                        b"no colon",
                        b"\x00: x",
                    ]
                ),
                min_size=1,
                max_size=3,
            )
        )
        out += b"0" + CRLF + b"".join(t + CRLF for t in trailers) + CRLF
    elif ending == "unterminated":
        out += b"0" + CRLF  # the empty line after the last chunk never comes
    elif ending == "extension":
        out += b"0" + draw(st.sampled_from(CHUNK_EXTENSIONS)) + CRLF + CRLF
    return bytes(out)


# -- mutations of a request's parts --------------------------------------------------------------------


def _field_index(draw: Draw, req: Request) -> int | None:
    return draw(st.integers(0, len(req.fields) - 1)) if req.fields else None


def bad_content_length(draw: Draw, req: Request) -> None:
    body_len = len(req.body)
    near = [b"%d" % max(0, body_len + d) for d in (-1, 1, 100)] + [b"0", b"%d" % (10 * 1024 * 1024 + 1)]
    req.set_field(b"Content-Length", draw(st.sampled_from(near + CONTENT_LENGTHS)))


def duplicate_content_length(draw: Draw, req: Request) -> None:
    value = draw(st.sampled_from([b"%d" % len(req.body), b"%d" % (len(req.body) + 1), b"0", b"-1"]))
    name = draw(st.sampled_from([b"Content-Length", b"content-length", b"CONTENT-LENGTH"]))
    req.fields.insert(draw(st.integers(0, len(req.fields))), (name, value))


def transfer_encoding(draw: Draw, req: Request) -> None:
    if draw(st.booleans()):
        req.drop_field(b"Content-Length")
    for _ in range(draw(st.integers(1, 2))):
        req.fields.append((b"Transfer-Encoding", draw(st.sampled_from(TRANSFER_CODINGS))))


def broken_chunks(draw: Draw, req: Request) -> None:
    payload = orjson.dumps(VALID_BODY) if not req.body else req.body
    req.drop_field(b"Content-Length")
    req.set_field(b"Transfer-Encoding", b"chunked")
    req.body = draw(chunked(payload, broken=True))


def obs_fold(draw: Draw, req: Request) -> None:
    i = _field_index(draw, req)
    if i is None:
        return
    name, value = req.fields[i]
    cut = draw(st.integers(0, len(value)))
    fold = CRLF + draw(st.sampled_from([b" ", b"\t", b"   "]))
    req.fields[i] = (name, value[:cut] + fold + value[cut:])


def control_byte_in_field(draw: Draw, req: Request) -> None:
    i = _field_index(draw, req)
    if i is None:
        return
    name, value = req.fields[i]
    byte = bytes([draw(st.sampled_from(CONTROL_BYTES))])
    if draw(st.booleans()):
        cut = draw(st.integers(0, len(name)))
        req.fields[i] = (name[:cut] + byte + name[cut:], value)
    else:
        cut = draw(st.integers(0, len(value)))
        req.fields[i] = (name, value[:cut] + byte + value[cut:])


def field_syntax(draw: Draw, req: Request) -> None:
    """A field line that is not ``name: value``: space before the colon, no colon, no name, a name with
    separators or high bytes, a line that starts with whitespace."""
    line = draw(
        st.sampled_from(
            [
                b"Host : rollguard",
                b"X-No-Colon",
                b": no-name",
                b"X(Paren): 1",
                b"X@At: 1",
                b"X\xffHigh: 1",
                b" Leading-Space: 1",
                b"\tLeading-Tab: 1",
                b"X-Colon:: 1",
                b"Content-Length : 0",
                b"Transfer-Encoding : chunked",
                b"Content-Length\t: 5",
            ]
        )
    )
    req.raw_lines.append((draw(st.integers(0, len(req.fields))), line))


def long_field(draw: Draw, req: Request) -> None:
    """One field near or over ``limits.max_header_bytes`` (4 KiB where the listener is fuzzed)."""
    size = draw(st.integers(min_value=3 * 1024, max_value=12 * 1024))
    name = draw(st.sampled_from([b"X-Padding", b"Cookie", b"X-" + b"n" * 4000]))
    req.fields.append((name, b"a" * size))


def many_fields(draw: Draw, req: Request) -> None:
    n = draw(st.integers(min_value=20, max_value=600))
    req.fields += [(b"X-F%d" % i, b"v") for i in range(n)]


def odd_version(draw: Draw, req: Request) -> None:
    req.version = draw(st.sampled_from(VERSIONS))


def odd_method(draw: Draw, req: Request) -> None:
    req.method = draw(st.sampled_from(METHODS + ODD_METHODS) | st.binary(min_size=1, max_size=12))


def random_token_method(draw: Draw, req: Request) -> None:
    req.method = bytes(draw(st.lists(st.sampled_from(TCHAR), min_size=1, max_size=16)))


def odd_target(draw: Draw, req: Request) -> None:
    long_path = b"/" + b"p" * draw(st.integers(min_value=3 * 1024, max_value=10 * 1024))
    random_path = b"/" + draw(st.binary(max_size=40))
    req.target = draw(st.sampled_from([*ODD_TARGETS, *PATHS, long_path, random_path]))


def request_line_syntax(draw: Draw, req: Request) -> None:
    fault = draw(st.sampled_from(["double-space", "tab", "leading-crlf", "no-version", "extra-word"]))
    if fault == "double-space":
        req.separators[draw(st.integers(0, 1))] = b"  "
    elif fault == "tab":
        req.separators[draw(st.integers(0, 1))] = b"\t"
    elif fault == "leading-crlf":
        req.method = CRLF * draw(st.integers(1, 3)) + req.method  # RFC 9112 §2.2: ignored if it precedes
    elif fault == "no-version":
        req.version = b""
    else:
        req.version += b" extra"


def extra_fields(draw: Draw, req: Request) -> None:
    req.fields += draw(st.lists(st.sampled_from(EXTRA_FIELDS), min_size=1, max_size=4))


def upgrade(draw: Draw, req: Request) -> None:
    req.fields += draw(st.sampled_from(UPGRADES))


def host(draw: Draw, req: Request) -> None:
    if draw(st.booleans()):
        req.drop_field(b"Host")
    else:
        req.fields.append(
            (b"Host", draw(st.sampled_from([b"second.example", b"rollguard", b"a b", b"[::1"])))
        )


def line_endings(draw: Draw, req: Request) -> None:
    """Bare LF, bare CR, a stray space before CRLF: for every line or just one."""
    ending = draw(st.sampled_from(LINE_ENDINGS[1:]))
    if draw(st.booleans()):
        req.eol = ending
    else:
        req.eol_overrides[draw(st.integers(0, len(req.fields) + 1))] = ending


MUTATIONS: list[Callable[[Draw, Request], None]] = [
    extra_fields,
    bad_content_length,
    duplicate_content_length,
    transfer_encoding,
    broken_chunks,
    obs_fold,
    control_byte_in_field,
    field_syntax,
    long_field,
    many_fields,
    odd_version,
    odd_method,
    random_token_method,
    odd_target,
    request_line_syntax,
    upgrade,
    host,
    line_endings,
]


# -- whole requests ------------------------------------------------------------------------------------


@st.composite
def valid_requests(draw: Draw) -> Request:
    """A request the data plane serves: the JSON POST route, a GET, or something else to any path."""
    kind = draw(st.sampled_from(["infer", "infer", "get", "other"]))
    if kind == "infer":
        method, target, body = b"POST", b"/v1/infer", draw(infer_bodies())
    elif kind == "get":
        method, target, body = b"GET", draw(st.sampled_from(PATHS)), b""
    else:
        method = draw(st.sampled_from(METHODS))
        target = draw(st.sampled_from(PATHS))
        body = draw(st.sampled_from([b"", b"hello", orjson.dumps(VALID_BODY)]))
    fields: list[tuple[bytes, bytes]] = [(b"Host", b"rollguard")]
    if body:
        fields.append((b"Content-Type", b"application/json"))
    framing = draw(st.sampled_from(["length", "length", "length", "chunked", "none"])) if body else "none"
    if framing == "length":
        fields.append((b"Content-Length", b"%d" % len(body)))
    elif framing == "chunked":
        fields.append((b"Transfer-Encoding", b"chunked"))
        body = draw(chunked(body, broken=False))
    # framing "none": the body's bytes are left to be read as the next request's
    return Request(method=method, target=target, version=b"HTTP/1.1", fields=fields, body=body)


@st.composite
def mutated_requests(draw: Draw) -> bytes:
    """A valid request with zero to four of :data:`MUTATIONS` applied, serialized."""
    req = draw(valid_requests())
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        draw(st.sampled_from(MUTATIONS))(draw, req)
    return req.serialize()


@st.composite
def byte_mutations(draw: Draw, data: bytes) -> bytes:
    """``data`` cut short, or with bytes inserted, dropped, or replaced, at a drawn place."""
    fault = draw(st.sampled_from(["truncate", "insert", "drop", "replace"]))
    at = draw(st.integers(0, len(data)))
    if fault == "truncate":
        return data[:at]
    if fault == "insert":
        return data[:at] + draw(
            st.binary(min_size=1, max_size=8) | st.sampled_from([CRLF, b"\x00", b"\r", b"\n"])
        )
    if fault == "drop":
        return data[:at] + data[at + draw(st.integers(1, 16)) :]
    return data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]


@st.composite
def request_bytes(draw: Draw) -> bytes:
    """What one client connection sends: usually one (mutated) request, sometimes a pipeline of them,
    sometimes noise; then perhaps cut short or with bytes changed."""
    shape = draw(st.integers(min_value=0, max_value=99))
    if shape < 80:
        data = draw(mutated_requests())
    elif shape < 92:
        data = b"".join(draw(st.lists(mutated_requests(), min_size=2, max_size=4)))
    elif shape < 96:
        data = draw(st.sampled_from(FOREIGN_PREFIXES)) + draw(st.binary(max_size=64))
    else:
        data = draw(st.binary(min_size=1, max_size=512))
    for _ in range(draw(st.sampled_from([0, 0, 0, 0, 0, 1, 1, 2]))):
        data = draw(byte_mutations(data))
    return data
