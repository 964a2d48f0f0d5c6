"""The PII masker's contract at its edges: the key and the HMAC, normalization per kind, percent-decoding
of queries byte by byte, JSON pointers and values reported outside their document (``mask_at``,
``mask_pointer``), and the tie-break between overlapping hits.

A pseudonym is compared with one computed here from the documented recipe, so a test fails both when a
value leaks and when one identity stops getting one pseudonym.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from typing import Any

import pytest

from proxy.content.pii import MASK_ERROR, Hit, Masker, MaskerConfig, normalize

KEY = b"rollguard-contract-key-0123456789"
M = Masker(MaskerConfig(key=KEY))


def expected_pseudonym(key: bytes, kind: str, value: str) -> str:
    """``<kind:8 hex>`` of HMAC-SHA256(key, kind NUL normalized value), as the module docstring says."""
    message = (kind + "\x00" + normalize(kind, value)).encode("utf-8", "surrogatepass")
    return f"<{kind}:{hmac.new(key, message, hashlib.sha256).hexdigest()[:8]}>"


# -- the key ------------------------------------------------------------------------------------------


def test_a_key_of_16_bytes_is_enough_and_15_is_not() -> None:
    MaskerConfig(key=b"k" * 16)
    with pytest.raises(ValueError, match="^MaskerConfig.key must be at least 16 bytes, got 15$"):
        MaskerConfig(key=b"k" * 15)


def test_a_key_must_be_bytes() -> None:
    with pytest.raises(TypeError, match="^MaskerConfig.key must be bytes$"):
        MaskerConfig(key="a text key of 20 chars")  # type: ignore[arg-type]


@pytest.mark.parametrize("length", [16, 63, 64, 65, 100])
def test_pseudonyms_are_rfc_2104_hmacs_for_every_key_length(length: int) -> None:
    # Keys longer than SHA-256's 64-byte block are hashed first; the precomputed pads must agree.
    key = bytes(range(length))
    masker = Masker(MaskerConfig(key=key))
    for kind, value in (("email", "maria@x.com"), ("cpf", "123.456.789-09"), ("header", "Bearer t")):
        assert masker.pseudonym(kind, value) == expected_pseudonym(key, kind, value)


def test_a_lone_surrogate_is_hashed_not_an_error() -> None:
    # Decoded input can carry one (a broken client, surrogateescape): it must still get a pseudonym.
    assert M.pseudonym("header", "\ud800abc") == expected_pseudonym(KEY, "header", "\ud800abc")
    assert M.mask_headers([("authorization", "\udcff")]) == [
        ("authorization", expected_pseudonym(KEY, "header", "\udcff"))
    ]


# -- normalization ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "value", "normal"),
    [
        ("cpf", "123.456.789-09", "12345678909"),
        ("card", "4111 1111-1111 1111", "4111111111111111"),
        ("cnpj", "12.abc.345/01de-35", "12ABC34501DE35"),
        ("iban", "de89 3704 0044 0532 0130 00", "DE89370400440532013000"),
        ("phone", "(11) 91234-5678", "5511912345678"),  # national: Brazil's 55 added
        ("phone", "1121234567", "551121234567"),
        ("phone", "+11 91234-5678", "11912345678"),  # international: as dialled, no 55
        ("phone", " +11 91234-5678", "11912345678"),
        ("phone", "4930123456789", "4930123456789"),  # 13 digits: not a national number
        ("phone", "(10) 91234-5678", "10912345678"),  # 10 is no area code
        ("email", "Maria%40X.com", "maria@x.com"),
        ("ip", "2001:DB8:0:0::1", "2001:db8::1"),
        ("ip", "Not-An-Address", "not-an-address"),
        ("jwt", "eyJ.Ab.c", "eyJ.Ab.c"),
    ],
)
def test_normalize(kind: str, value: str, normal: str) -> None:
    assert normalize(kind, value) == normal


# -- percent-decoding in queries, byte by byte -------------------------------------------------------


@pytest.mark.parametrize(
    ("encoded", "decoded"),
    [
        ("%41%42%43", "ABC"),
        ("%C2%AA", "\u00aa"),  # the first two-byte lead
        ("%DF%80", "\u07c0"),  # the last
        ("%E0%B8%81", "\u0e01"),  # the first three-byte lead
        ("%EF%BD%B1", "\uff71"),  # the last
        ("%E2%82%AC%80", "\u20ac\ufffd"),  # a stray continuation byte after a whole character
        ("%F0%90%80%80", "\U00010000"),  # the first four-byte lead
        ("%F4%8F%BF%BF", "\U0010ffff"),  # the last
        ("%F0%90%80%80%80", "\U00010000\ufffd"),
        ("%FF", "\ufffd"),  # never a lead byte
        ("%80", "\ufffd"),
        ("%C0%80", "\ufffd\ufffd"),  # an overlong form: two bytes that are no character
        ("%C3%28", "\ufffd("),  # a lead without its continuation: the next byte stands on its own
        ("%E0%41%41", "\ufffdAA"),
    ],
)
def test_a_credential_value_is_hashed_as_decoded(encoded: str, decoded: str) -> None:
    # The pseudonym of a credential is that of its decoded value: what was sent, not how it was spelled.
    assert M.mask_query(f"token={encoded}") == f"token={M.pseudonym('apikey', decoded)}"


@pytest.mark.parametrize("char", ["\u00e9", "\u00aa", "\u0e01", "\uff71", "\U00010000"])
def test_a_non_ascii_email_is_masked_whole(char: str) -> None:
    # Every byte of the character decoded: else the address would be cut at it and its start leak.
    raw = "".join(f"%{b:02X}" for b in f"jo{char}o".encode())
    address = f"jo{char}o@example.com"
    assert M.mask_query(f"to={raw}%40example.com") == f"to={M.pseudonym('email', address)}"


@pytest.mark.parametrize(
    ("query", "kept", "address"),
    [
        ("q=%20%41maria%40x.com", "q=%20", "Amaria@x.com"),  # the address starts inside a run
        ("q=%20%C3%A9va%40x.com", "q=%20", "\u00e9va@x.com"),
        ("q=%C3%A9%20%41na%40x.com", "q=%C3%A9%20", "Ana@x.com"),
    ],
)
def test_a_masked_span_is_cut_at_the_raw_offset_of_its_first_character(
    query: str, kept: str, address: str
) -> None:
    assert M.mask_query(query) == kept + M.pseudonym("email", address)


def test_a_plus_before_an_escape_is_read_as_a_space_too() -> None:
    phone = M.pseudonym("phone", "+5511912345678")
    assert M.mask_query("tel=11+91234-5678%21") == f"tel={phone}%21"


@pytest.mark.parametrize(
    "query",
    ["pass%77ord=hunter2", "PASS%77ORD=hunter2", "api-key=hunter2", "user%5Bpassword%5D=hunter2"],
)
def test_a_credential_name_is_read_decoded_and_with_dashes_as_underscores(query: str) -> None:
    key = query.split("=")[0]
    assert M.mask_query(query) == f"{key}={M.pseudonym('apikey', 'hunter2')}"


# -- JSON: pointers, canonical values, credential keys ---------------------------------------------


def test_a_numeric_pointer_segment_names_a_list_index() -> None:
    masker = Masker(MaskerConfig(key=KEY, json_fields=("/cards/1", "/rows/0/id")))
    out = masker.mask_json({"cards": ["a", "b", "c"], "rows": [{"id": 7}, {"id": 8}]})
    assert out == {
        "cards": ["a", masker.pseudonym("field", "b"), "c"],
        "rows": [{"id": masker.pseudonym("field", "7")}, {"id": 8}],
    }


def test_a_tilde_in_a_pointer_is_escaped_as_in_rfc_6901() -> None:
    masker = Masker(MaskerConfig(key=KEY, json_fields=("/a~0b", "/c~1d")))
    out = masker.mask_json({"a~b": "x", "c/d": "y", "a~0b": "z"})
    assert out == {"a~b": masker.pseudonym("field", "x"), "c/d": masker.pseudonym("field", "y"), "a~0b": "z"}


@pytest.mark.parametrize(
    ("value", "canonical"),
    [
        (True, "True"),
        (12345678909, "12345678909"),
        (1.5, "1.5"),
        ({"b": 1, "a": [2, 3]}, '{"a":[2,3],"b":1}'),
        ({"b": 1, "a": 2}, '{"a":2,"b":1}'),
        ({2: "x", 1: "y"}, '{"1":"y","2":"x"}'),  # keys JSON would not allow, sorted as text
    ],
)
def test_a_field_masked_whole_is_hashed_in_one_canonical_form(value: object, canonical: str) -> None:
    # One document in any key order is one pseudonym; a number and its text are one.
    masker = Masker(MaskerConfig(key=KEY, json_fields=("/x",)))
    assert masker.mask_json({"x": value}) == {"x": masker.pseudonym("field", canonical)}


def test_a_field_that_cannot_be_hashed_comes_out_as_the_error_mark() -> None:
    masker = Masker(MaskerConfig(key=KEY, json_fields=("/x",)))
    assert masker.mask_json({"x": {1, 2}, "y": "fine"}) == {"x": MASK_ERROR, "y": "fine"}


@pytest.mark.parametrize("key", ["api-key", "API_KEY", "Client-Secret", "x-api-key"])
def test_credential_keys_are_read_with_dashes_as_underscores(key: str) -> None:
    assert M.mask_json({key: "s3cr3t"}) == {key: M.pseudonym("apikey", "s3cr3t")}


# -- values outside their document ----------------------------------------------------------------

AT = Masker(MaskerConfig(key=KEY, json_fields=("/user/email", "/items/*/card")))


@pytest.mark.parametrize(
    ("pointer", "value", "expected"),
    [
        ("/user/email", "not-an-email", AT.pseudonym("field", "not-an-email")),
        ("/items/3/card", 4111111111111111, AT.pseudonym("field", "4111111111111111")),
        ("/items/x/card", "c", AT.pseudonym("field", "c")),
        ("/user/email", None, None),  # null is never masked as a field
        ("/user/password", "hunter2", AT.pseudonym("apikey", "hunter2")),
        ("/user/pin", True, True),
        ("/other", "plain words", "plain words"),
        ("/other", "mail maria@x.com", f"mail {AT.pseudonym('email', 'maria@x.com')}"),
        ("/user/email/deeper", "x", "x"),  # below a field is not the field
        ("/user", "not-an-email", "not-an-email"),  # above it neither
    ],
)
def test_mask_at_masks_a_value_as_it_would_be_masked_in_place(
    pointer: str, value: object, expected: object
) -> None:
    assert AT.mask_at(pointer, value) == expected


@pytest.mark.parametrize(
    ("pointer", "value"),
    [
        ("/user", {"email": "e", "name": "maria@x.com", "password": "p"}),
        ("/items", [{"card": 1}, {"card": None, "note": "ok"}]),
        ("/items/0", {"card": 4111111111111111}),
        ("", {"user": {"email": "e"}, "items": [{"card": 2}]}),
    ],
)
def test_mask_at_a_container_equals_that_part_of_mask_json(pointer: str, value: Any) -> None:
    document: Any = value
    for part in reversed(pointer.split("/")[1:]):
        document = [value] if part.isdigit() else {part: document}
    masked: Any = AT.mask_json(document)
    for part in pointer.split("/")[1:]:
        masked = masked[int(part)] if part.isdigit() else masked[part]
    assert AT.mask_at(pointer, value) == masked
    assert masked != value  # each holds something to mask: the comparison is not of two copies


def test_mask_at_fails_closed() -> None:
    assert AT.mask_at("/x", object()) == MASK_ERROR
    assert AT.mask_at(42, "maria@x.com") == MASK_ERROR  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("pointer", "expected"),
    [
        ("/cards/4111111111111111/limit", f"/cards/{M.pseudonym('card', '4111111111111111')}/limit"),
        ("/users/maria@x.com", f"/users/{M.pseudonym('email', 'maria@x.com')}"),
        ("/a//b/", "/a//b/"),
        ("/first name/maria@x.com", f"/first name/{M.pseudonym('email', 'maria@x.com')}"),
        ("", ""),
        ("/", "/"),
    ],
)
def test_mask_pointer_masks_each_segment_on_its_own(pointer: str, expected: str) -> None:
    assert M.mask_pointer(pointer) == expected


def test_mask_pointer_fails_closed() -> None:
    assert M.mask_pointer(None) == MASK_ERROR  # type: ignore[arg-type]


class Boom:
    """A detector with a bug: it raises on any text containing "boom"."""

    def find(self, text: str) -> Iterator[Hit]:
        if "boom" in text:
            raise RuntimeError("detector bug")
        return iter(())


def test_mask_pointer_fails_closed_per_segment() -> None:
    # One segment the masker cannot vouch for hides that segment, not the rest of the path.
    masker = Masker(MaskerConfig(key=KEY), detectors=[Boom()])
    assert masker.mask_pointer("/orders/boom/total") == f"/orders/{MASK_ERROR}/total"


def test_mask_at_walks_only_the_pointers_below_its_place() -> None:
    # "/items/*/card" is not under "/user": a "card" key below "/user" is not that field.
    assert AT.mask_at("/user", {"x": {"card": "c"}}) == {"x": {"card": "c"}}
    assert AT.mask_at("/items", [{"x": {"card": "c"}}]) == [{"x": {"card": "c"}}]


# -- overlapping hits of detectors the masker does not know --------------------------------------


class Fixed:
    """A detector that reports the same hits in any text."""

    def __init__(self, *hits: Hit) -> None:
        self.hits = hits

    def find(self, text: str) -> Iterator[Hit]:
        return iter(self.hits)


def test_a_known_kind_wins_a_tie_against_an_unknown_one() -> None:
    # Same span, same length: the built-in kind (ranked) beats a custom one (ranked after them all).
    masker = Masker(
        MaskerConfig(key=KEY),
        detectors=[Fixed(Hit(0, 5, "custom", "abcde")), Fixed(Hit(0, 5, "email", "abcde"))],
    )
    assert masker.mask_text("abcde!") == masker.pseudonym("email", "abcde") + "!"


def test_two_unknown_kinds_tie_by_position() -> None:
    masker = Masker(
        MaskerConfig(key=KEY),
        detectors=[Fixed(Hit(2, 6, "custom-b", "cdef")), Fixed(Hit(0, 4, "custom-a", "abcd"))],
    )
    assert masker.mask_text("abcdefg") == masker.pseudonym("custom-a", "abcd") + "g"
