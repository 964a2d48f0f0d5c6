"""Header hygiene, pure: hop-by-hop both ways, forwarding headers, request ids, our controls."""

from __future__ import annotations

import ipaddress
import re

import pytest

from proxy.upstream.headers import (
    TrustedPeers,
    client_response_headers,
    connection_tokens,
    is_trusted,
    request_id,
    upstream_request_headers,
)

RID = "rid-0123456789"
HOP_BY_HOP = [
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
]


def upstream(
    headers: list[tuple[bytes, bytes]],
    *,
    peer: str | None = "127.0.0.1",
    trusted: bool = False,
    scheme: str = "http",
    content_length: int | None = 17,
) -> list[tuple[str, str]]:
    return upstream_request_headers(
        headers, peer=peer, scheme=scheme, trusted=trusted, request_id=RID, content_length=content_length
    )


def values(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [v for k, v in headers if k == name]


def names(headers: list[tuple[str, str]]) -> list[str]:
    return [k for k, _ in headers]


# A small RFC 7239 parser, to read back what an upstream would: elements by ",", pairs by ";",
# values a token or a quoted-string with quoted-pairs.
_PAIR = re.compile(r'\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)=([!#$%&\'*+.^_`|~0-9A-Za-z-]+|"(?:[^"\\]|\\.)*")\s*')


def parse_forwarded(value: str) -> list[list[tuple[str, str]]]:
    elements: list[list[tuple[str, str]]] = [[]]
    pos = 0
    while pos < len(value):
        m = _PAIR.match(value, pos)
        assert m, f"not RFC 7239 at {pos}: {value!r}"
        raw = m.group(2)
        text = re.sub(r"\\(.)", r"\1", raw[1:-1]) if raw.startswith('"') else raw
        elements[-1].append((m.group(1).lower(), text))
        pos = m.end()
        if pos < len(value):
            sep = value[pos]
            assert sep in ";,", f"unexpected {sep!r} at {pos}: {value!r}"
            if sep == ",":
                elements.append([])
            pos += 1
    return elements


# -- hop-by-hop ------------------------------------------------------------------------------------


def test_hop_by_hop_request_headers_are_dropped() -> None:
    headers = [(name, b"x") for name in HOP_BY_HOP] + [
        (b"connection", b"close, X-Secret-Hop ,x-other-hop"),
        (b"x-secret-hop", b"1"),
        (b"x-other-hop", b"2"),
        (b"accept", b"application/json"),
        (b"accept", b"text/plain"),
        (b"content-type", b"application/json"),
        (b"authorization", b"Bearer client-token"),
    ]
    out = upstream(headers)
    assert not set(names(out)) & {n.decode() for n in HOP_BY_HOP}
    assert "x-secret-hop" not in names(out) and "x-other-hop" not in names(out)
    # End-to-end headers pass in order, duplicates kept.
    assert values(out, "accept") == ["application/json", "text/plain"]
    assert values(out, "content-type") == ["application/json"]
    assert values(out, "authorization") == ["Bearer client-token"]


def test_hop_by_hop_response_headers_are_dropped() -> None:
    headers = [(name.title(), b"x") for name in HOP_BY_HOP] + [
        (b"Connection", b"keep-alive, X-Upstream-Hop"),
        (b"X-Upstream-Hop", b"1"),
        (b"Content-Type", b"application/json"),
        (b"Content-Length", b"42"),
        (b"Set-Cookie", b"a=1"),
        (b"Set-Cookie", b"b=2"),
    ]
    out = client_response_headers(headers, version=b"v2", request_id=RID.encode())
    out_names = [k for k, _ in out]
    assert not set(out_names) & set(HOP_BY_HOP)
    assert b"x-upstream-hop" not in out_names
    assert (b"content-type", b"application/json") in out and (b"content-length", b"42") in out
    assert [v for k, v in out if k == b"set-cookie"] == [b"a=1", b"b=2"]


def test_response_carries_our_version_and_request_id_only() -> None:
    headers = [(b"x-rollguard-version", b"forged"), (b"X-Request-Id", b"upstream-id"), (b"server", b"m")]
    out = client_response_headers(headers, version=b"v2", request_id=RID.encode())
    assert [v for k, v in out if k == b"x-rollguard-version"] == [b"v2"]
    assert [v for k, v in out if k == b"x-request-id"] == [RID.encode()]
    assert (b"server", b"m") in out


@pytest.mark.parametrize(
    ("headers", "tokens"),
    [
        ([], set()),
        ([(b"connection", b"close")], {b"close"}),
        ([(b"connection", b"Keep-Alive, Upgrade")], {b"keep-alive", b"upgrade"}),
        ([(b"connection", b" a ,, b "), (b"connection", b"C")], {b"a", b"b", b"c"}),
        ([(b"x-connection", b"a")], set()),
    ],
)
def test_connection_tokens(headers: list[tuple[bytes, bytes]], tokens: set[bytes]) -> None:
    assert connection_tokens(headers) == tokens


# -- forwarding headers ----------------------------------------------------------------------------

CLIENT_FORWARDING = [
    (b"host", b"api.example.com"),
    (b"x-forwarded-for", b"203.0.113.7, 10.0.0.2"),
    (b"x-forwarded-for", b"10.0.0.3"),
    (b"x-forwarded-proto", b"https"),
    (b"forwarded", b"for=203.0.113.7;proto=https"),
    (b"x-forwarded-host", b"forged.example"),
]


def test_trusted_peer_forwarding_headers_are_appended_to() -> None:
    out = upstream(CLIENT_FORWARDING, peer="10.0.0.4", trusted=True)
    assert values(out, "x-forwarded-for") == ["203.0.113.7, 10.0.0.2, 10.0.0.3, 10.0.0.4"]
    assert values(out, "x-forwarded-proto") == ["https"]
    assert values(out, "forwarded") == [
        'for=203.0.113.7;proto=https, for=10.0.0.4;proto=http;host="api.example.com"'
    ]
    assert values(out, "x-forwarded-host") == ["api.example.com"]
    assert "host" not in names(out)


def test_untrusted_peer_forwarding_headers_are_replaced() -> None:
    out = upstream(CLIENT_FORWARDING, peer="198.51.100.9", trusted=False, scheme="https")
    assert values(out, "x-forwarded-for") == ["198.51.100.9"]
    assert values(out, "x-forwarded-proto") == ["https"]
    assert values(out, "forwarded") == ['for=198.51.100.9;proto=https;host="api.example.com"']
    assert values(out, "x-forwarded-host") == ["api.example.com"]


def test_forwarding_headers_without_any_from_the_client() -> None:
    out = upstream([(b"accept", b"*/*")], peer="127.0.0.1", trusted=True)
    assert values(out, "x-forwarded-for") == ["127.0.0.1"]
    assert values(out, "x-forwarded-proto") == ["http"]
    assert values(out, "forwarded") == ["for=127.0.0.1;proto=http"]
    assert "x-forwarded-host" not in names(out)


@pytest.mark.parametrize(
    ("peer", "xff", "forwarded"),
    [
        ("2001:db8::1", "2001:db8::1", 'for="[2001:db8::1]";proto=http'),
        ("::1", "::1", 'for="[::1]";proto=http'),
        ("192.0.2.60", "192.0.2.60", "for=192.0.2.60;proto=http"),
        (None, "unknown", "for=unknown;proto=http"),
    ],
)
def test_forwarded_node_syntax(peer: str | None, xff: str, forwarded: str) -> None:
    out = upstream([], peer=peer)
    assert values(out, "x-forwarded-for") == [xff]
    assert values(out, "forwarded") == [forwarded]
    parse_forwarded(forwarded)  # valid RFC 7239


def test_ipv6_peer_appended_to_a_trusted_chain() -> None:
    out = upstream([(b"forwarded", b'for="[2001:db8::7]"')], peer="2001:db8::1", trusted=True)
    assert parse_forwarded(values(out, "forwarded")[0]) == [
        [("for", "[2001:db8::7]")],
        [("for", "[2001:db8::1]"), ("proto", "http")],
    ]


@pytest.mark.parametrize(
    "host",
    [
        pytest.param(b'a";for=6.6.6.6;x="', id="second-for-in-our-element"),
        pytest.param(b'evil.example", for="6.6.6.6', id="forged-last-element"),
        pytest.param(b"api.example.com:8443", id="plain-host-and-port"),
    ],
)
def test_host_cannot_inject_into_forwarded(host: bytes) -> None:
    out = upstream([(b"host", host)], peer="198.51.100.9", trusted=False)
    elements = parse_forwarded(values(out, "forwarded")[0])
    assert len(elements) == 1, elements
    pairs = dict(elements[0])
    assert [k for k, _ in elements[0]].count("for") == 1
    assert pairs["for"] == "198.51.100.9"
    assert pairs.get("host", host.decode()) == host.decode()


@pytest.mark.parametrize(
    ("peer", "nets", "expected"),
    [
        ("127.0.0.1", ["127.0.0.1/32"], True),
        ("127.0.0.2", ["127.0.0.1/32"], False),
        ("10.1.2.3", ["192.168.0.0/16", "10.0.0.0/8"], True),
        ("2001:db8::5", ["2001:db8::/32"], True),
        ("2001:db9::5", ["2001:db8::/32"], False),
        ("127.0.0.1", ["::1/128"], False),
        ("", ["127.0.0.1/32"], False),
        (None, ["127.0.0.1/32"], False),
        ("localhost", ["127.0.0.1/32"], False),
        ("127.0.0.1", [], False),
    ],
)
def test_is_trusted(peer: str | None, nets: list[str], expected: bool) -> None:
    assert is_trusted(peer, [ipaddress.ip_network(n) for n in nets]) is expected


# -- request ids -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given",
    [
        b"abc-123",
        b"3f2b8c1e-9d4a-4c55-8f0e-6b7a1d2c3e4f",
        b"trace:span@host+1=2_3.4",
        b"x" * 128,
    ],
)
def test_well_formed_request_id_is_kept(given: bytes) -> None:
    assert request_id([(b"accept", b"*/*"), (b"x-request-id", given)]) == given.decode()


@pytest.mark.parametrize(
    "given",
    [
        pytest.param(b"x" * 129, id="too-long"),
        pytest.param(b"", id="empty"),
        pytest.param(b"has space", id="space"),
        pytest.param(b"<script>", id="angle-brackets"),
        pytest.param(b"a;b", id="semicolon"),
        pytest.param(b'q"uote', id="quote"),
        pytest.param("caf\u00e9".encode(), id="non-ascii"),
        pytest.param(b"abc\r\nx-injected: 1", id="crlf-inside"),
        pytest.param(b"abc\n", id="trailing-newline"),
        pytest.param(b"abc\x00", id="nul"),
    ],
)
def test_malformed_request_id_is_regenerated(given: bytes) -> None:
    rid = request_id([(b"x-request-id", given)])
    assert re.fullmatch(r"[0-9a-f]{32}", rid), rid


def test_generated_request_ids_are_fresh() -> None:
    ids = {request_id([]) for _ in range(1_000)}
    assert len(ids) == 1_000
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)


def test_upstream_gets_exactly_our_request_id() -> None:
    out = upstream([(b"x-request-id", b"client-id"), (b"x-request-id", b"second")])
    assert values(out, "x-request-id") == [RID]


# -- our controls and framing ----------------------------------------------------------------------


@pytest.mark.parametrize("trusted", [True, False])
def test_operator_controls_are_never_forwarded(trusted: bool) -> None:
    headers = [
        (b"x-rollguard-force", b"candidate"),
        (b"x-rollguard-token", b"op-secret"),
        (b"connection", b"x-rollguard-token"),
        (b"x-rollguard-force", b"baseline"),
    ]
    out = upstream(headers, trusted=trusted)
    assert "x-rollguard-force" not in names(out)
    assert "x-rollguard-token" not in names(out)
    assert not any("op-secret" in v for _, v in out)


@pytest.mark.parametrize(("given", "sent"), [(17, ["17"]), (0, ["0"]), (None, [])])
def test_content_length_is_ours(given: int | None, sent: list[str]) -> None:
    out = upstream([(b"content-length", b"999"), (b"content-length", b"5")], content_length=given)
    assert values(out, "content-length") == sent


def test_nothing_but_latin1_round_trips() -> None:
    raw = "Jos\u00e9 \u00e7a".encode("latin-1")
    out = upstream([(b"x-name", raw)])
    assert values(out, "x-name") == [raw.decode("latin-1")]


def test_every_inbound_rollguard_header_is_dropped_whoever_sends_it() -> None:
    # The whole prefix is ours, not only the names we use today: a client cannot pass for a mirror.
    headers = [(b"x-rollguard-shadow", b"1"), (b"x-rollguard-anything", b"2"), (b"accept", b"*/*")]
    for trusted in (False, True):
        out = upstream(headers, trusted=trusted)
        assert not [k for k in names(out) if k.startswith("x-rollguard-")]
        assert values(out, "accept") == ["*/*"]


# A proxy in front asserts the client's address or original URL with these: believed from it alone.
PEER_ASSERTED = [
    (b"x-real-ip", b"203.0.113.7"),
    (b"x-client-ip", b"203.0.113.7"),
    (b"true-client-ip", b"203.0.113.7"),
    (b"cf-connecting-ip", b"203.0.113.7"),
    (b"x-original-url", b"/admin"),
    (b"x-forwarded-prefix", b"/api"),
    (b"x-envoy-external-address", b"203.0.113.7"),
]


def test_peer_asserted_headers_are_dropped_from_an_untrusted_peer() -> None:
    out = upstream([*PEER_ASSERTED, (b"accept", b"*/*")], trusted=False)
    assert names(out)[:1] == ["accept"]  # every asserted header gone, what follows them still sent
    assert not set(names(out)) & {k.decode() for k, _ in PEER_ASSERTED}


def test_peer_asserted_headers_are_kept_from_a_trusted_peer() -> None:
    out = upstream(PEER_ASSERTED, trusted=True)
    assert [(k.encode(), v.encode()) for k, v in out[: len(PEER_ASSERTED)]] == PEER_ASSERTED


def test_headers_after_a_dropped_one_are_still_forwarded_in_order() -> None:
    headers = [
        (b"x-request-id", b"client-id"),
        (b"accept", b"*/*"),
        (b"x-rollguard-shadow", b"1"),
        (b"x-real-ip", b"6.6.6.6"),
        (b"content-type", b"application/json"),
    ]
    assert names(upstream(headers))[:2] == ["accept", "content-type"]


def test_the_verified_credential_header_is_dropped_when_named() -> None:
    headers = [(b"authorization", b"Bearer client-token"), (b"x-api-key", b"k"), (b"accept", b"*/*")]
    out = upstream_request_headers(
        headers,
        peer="127.0.0.1",
        scheme="http",
        trusted=False,
        request_id=RID,
        content_length=None,
        credential=b"x-api-key",
    )
    assert values(out, "x-api-key") == []
    assert values(out, "authorization") == ["Bearer client-token"]  # only the named one is the proxy's
    assert values(out, "accept") == ["*/*"]
    # Without a credential to strip, the client's headers pass as they came.
    assert values(upstream(headers), "x-api-key") == ["k"]


def test_connection_tokens_of_a_plain_value_are_lower_case() -> None:
    assert connection_tokens([(b"connection", b"Close")]) == {b"close"}
    assert connection_tokens([(b"connection", b"Keep-Alive")]) == {b"keep-alive"}


# -- trusted peers ---------------------------------------------------------------------------------

TRUSTED_NETS = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32")]


@pytest.mark.parametrize(
    ("peer", "expected"),
    [("10.1.2.3", True), ("2001:db8::5", True), ("192.0.2.1", False), ("localhost", False), ("", False)],
)
def test_trusted_peers_answer_like_is_trusted(peer: str, expected: bool) -> None:
    trusted = TrustedPeers(TRUSTED_NETS)
    assert trusted.networks == tuple(TRUSTED_NETS)
    # Asked twice: the second answer comes from the cache and must be the same bool.
    assert trusted(peer) is expected
    assert trusted(peer) is expected


def test_trusted_peers_without_a_peer_is_untrusted() -> None:
    assert TrustedPeers(TRUSTED_NETS)(None) is False
    assert TrustedPeers([ipaddress.ip_network("0.0.0.0/0")])(None) is False


def test_a_full_trusted_peers_cache_still_answers_right() -> None:
    # A scan from many addresses clears the bounded cache over and over; no answer may change by it.
    trusted = TrustedPeers(TRUSTED_NETS, cache_size=2)
    peers = [f"10.0.0.{i}" for i in range(5)] + [f"192.0.2.{i}" for i in range(5)]
    for _ in range(3):
        assert [trusted(p) for p in peers] == [True] * 5 + [False] * 5
