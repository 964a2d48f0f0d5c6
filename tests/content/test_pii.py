"""PII masker: validators, property tests per detector, a realistic log corpus, the
query/header/JSON shapes and fail-closed behaviour. Pure: no sockets, no clock."""

from __future__ import annotations

import base64
import hmac
import ipaddress
import json
import re
from collections.abc import Iterator

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from proxy.content.pii import MASK_ERROR, MAX_JSON_DEPTH, Hit, Masker, MaskerConfig
from proxy.content.pii_validators import (
    BR_DDD,
    IBAN_LENGTHS,
    card_valid,
    cnpj_valid,
    cpf_valid,
    iban_valid,
    jwt_header_valid,
    luhn_valid,
)

KEY = b"rollguard-test-key-0123456789abcdef"
M = Masker(MaskerConfig(key=KEY))
SETTINGS = settings(max_examples=120, deadline=None)

# ---------------------------------------------------------------------------------------------------
# Generators: values built by the algorithms themselves (check digits, Luhn, mod 97).


def _mod11(values: list[int], weights: range | list[int]) -> int:
    rest = sum(v * w for v, w in zip(values, weights, strict=False)) % 11
    return 0 if rest < 2 else 11 - rest


def make_cpf(body: str) -> str:
    v = [int(c) for c in body]
    d1 = _mod11(v, range(10, 1, -1))
    return body + str(d1) + str(_mod11([*v, d1], range(11, 1, -1)))


def make_cnpj(body: str) -> str:
    v = [ord(c) - 48 for c in body]
    d1 = _mod11(v, [5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2])
    return body + str(d1) + str(_mod11([*v, d1], [6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2]))


def luhn_complete(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):  # the check digit will be position 0, so these start doubled
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return body + str((10 - total % 10) % 10)


def make_iban(country: str, bban: str) -> str:
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    return f"{country}{98 - int(numeric) % 97:02d}{bban}"


def fmt_cpf(d: str) -> str:
    return f"{d[:3]}.{d[3:6]}.{d[6:9]}-{d[9:]}"


def fmt_cnpj(d: str) -> str:
    return f"{d[:2]}.{d[2:5]}.{d[5:8]}/{d[8:12]}-{d[12:]}"


def group(value: str, sizes: list[int], sep: str) -> str:
    out, pos = [], 0
    for size in sizes:
        out.append(value[pos : pos + size])
        pos += size
    return sep.join(out)


def wrong_last(value: str) -> str:
    return value[:-1] + str((int(value[-1]) + 1) % 10)


def digits(n: int) -> st.SearchStrategy[str]:
    return st.text(alphabet="0123456789", min_size=n, max_size=n)


def not_repeated(s: str) -> bool:
    return len(set(s)) > 1


cpfs = digits(9).filter(not_repeated).map(make_cpf)
cnpjs = digits(12).filter(not_repeated).map(make_cnpj)
IINS = "4 51 52 53 54 55 2221 2500 2720 34 37 300 36 38 6011 65 62 3528 3589 5067 636368".split()


@st.composite
def cards(draw: st.DrawFn, lengths: tuple[int, ...] = tuple(range(13, 20))) -> str:
    prefix = draw(st.sampled_from(IINS))
    n = draw(st.sampled_from(lengths))
    return luhn_complete(prefix + draw(digits(n - 1 - len(prefix))))


@st.composite
def ibans(draw: st.DrawFn) -> str:
    country = draw(st.sampled_from(["BR", "DE", "GB"]))
    if country == "DE":
        bban = draw(digits(18))
    elif country == "GB":
        bban = draw(st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=4, max_size=4)) + draw(digits(14))
    else:  # bank 8, branch 5, account 10, account type (letter), holder (alphanumeric)
        bban = draw(digits(23)) + draw(st.sampled_from("ABCPQ")) + draw(st.sampled_from("12ABC"))
    return make_iban(country, bban)


label = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=10)


@st.composite
def emails(draw: st.DrawFn) -> str:
    atom = st.text("abcdefghijklmnopqrstuvwxyzãéç0123456789_+-", min_size=1, max_size=8)
    local = ".".join(draw(st.lists(atom, min_size=1, max_size=3)))
    labels = draw(st.lists(label, min_size=1, max_size=3))
    tld = draw(st.sampled_from(["com", "br", "org", "io", "dev", "co", "info", "email"]))
    return f"{local}@{'.'.join(labels)}.{tld}"


TEMPLATES = ["{}", "value {} ok", "x={} status=200", "(cliente: {})", "paid with {}.", "a {}, b", '"{}"']
templates = st.sampled_from(TEMPLATES)


def assert_masked(template: str, value: str, *kinds: str, masker: Masker = M) -> str:
    """The value, embedded in ``template``, comes out as one pseudonym and everything else byte-identical."""
    out = masker.mask_text(template.format(value))
    prefix, suffix = template.split("{}")
    pattern = re.escape(prefix) + f"<(?:{'|'.join(kinds)}):[0-9a-f]{{8}}>" + re.escape(suffix)
    assert re.fullmatch(pattern, out), (template.format(value), out)
    return out[len(prefix) : len(out) - len(suffix)]


# ---------------------------------------------------------------------------------------------------
# Validators, by table


@pytest.mark.parametrize(
    ("check", "value", "ok"),
    [
        (cpf_valid, "12345678909", True),
        (cpf_valid, "52998224725", True),
        (cpf_valid, "12345678900", False),
        (cpf_valid, "11111111111", False),
        (cpf_valid, "1234567890", False),
        (cnpj_valid, "11222333000181", True),
        (cnpj_valid, "11222333000180", False),
        (cnpj_valid, "00000000000000", False),
        (cnpj_valid, "12ABC34501DE35", True),  # Receita Federal's alphanumeric example
        (cnpj_valid, "12ABC34501DE36", False),
        (luhn_valid, "4111111111111111", True),
        (luhn_valid, "4111111111111112", False),
        (card_valid, "4111111111111111", True),
        (card_valid, "1111111111111117", False),  # Luhn-valid, no issuer starts with 1
        (card_valid, "2024202520262020", False),  # years are not a Mastercard 2-series prefix
        (iban_valid, "DE89370400440532013000", True),
        (iban_valid, "GB29NWBK60161331926819", True),
        (iban_valid, "DE89370400440532013001", False),
        (iban_valid, "DE8937040044053201300", False),  # a digit short for Germany
        (jwt_header_valid, "eyJhbGciOiJIUzI1NiJ9.e30.sig", True),
        (jwt_header_valid, "eyJ0eXAiOiJKV1QifQ.e30.sig", False),  # {"typ":"JWT"}: no alg
    ],
)
def test_validators(check: object, value: str, ok: bool) -> None:
    assert callable(check)
    assert check(value) is ok


def test_iban_table_has_the_common_countries() -> None:
    expected = {"BR": 29, "DE": 22, "FR": 27, "GB": 22, "ES": 24, "IT": 27, "NL": 18, "PT": 25}
    assert {c: IBAN_LENGTHS[c] for c in expected} == expected


# ---------------------------------------------------------------------------------------------------
# Properties per detector: generated values are masked in every format; near-misses are not.


@SETTINGS
@given(cpfs, templates)
def test_cpf_masked_in_both_formats_with_one_pseudonym(cpf: str, template: str) -> None:
    a = assert_masked(template, fmt_cpf(cpf), "cpf")
    b = assert_masked(template, cpf, "cpf")
    assert a == b == M.pseudonym("cpf", cpf)
    assert cpf not in a and cpf[:9] not in a  # the pseudonym reveals nothing of the number


@SETTINGS
@given(cpfs, templates)
def test_cpf_with_one_wrong_check_digit_is_not_a_cpf(cpf: str, template: str) -> None:
    bad = wrong_last(cpf)
    assert M.mask_text(template.format(fmt_cpf(bad))) == template.format(fmt_cpf(bad))
    assert "<cpf:" not in M.mask_text(template.format(bad))  # 11 bare digits may still be a phone


@SETTINGS
@given(cnpjs, templates)
def test_cnpj_masked_in_both_formats_with_one_pseudonym(cnpj: str, template: str) -> None:
    a = assert_masked(template, fmt_cnpj(cnpj), "cnpj")
    b = assert_masked(template, cnpj, "cnpj")
    assert a == b


@SETTINGS
@given(
    st.text("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=12, max_size=12).filter(not_repeated), templates
)
def test_alphanumeric_cnpj_masked_when_punctuated(body: str, template: str) -> None:
    cnpj = make_cnpj(body)
    assert_masked(template, fmt_cnpj(cnpj), "cnpj")
    bad = fmt_cnpj(wrong_last(cnpj))
    assert M.mask_text(template.format(bad)) == template.format(bad)


@SETTINGS
@given(cnpjs, templates)
def test_cnpj_with_one_wrong_check_digit_is_not_a_cnpj(cnpj: str, template: str) -> None:
    bad = wrong_last(cnpj)
    assert M.mask_text(template.format(fmt_cnpj(bad))) == template.format(fmt_cnpj(bad))
    assert "<cnpj:" not in M.mask_text(template.format(bad))  # 14 bare digits may still be a card


@SETTINGS
@given(cards(), templates, st.sampled_from([" ", "-"]))
def test_cards_masked_bare_and_grouped(card: str, template: str, sep: str) -> None:
    # 14 bare digits with CNPJ check digits are a CNPJ first: still masked, under the other kind.
    kinds = ("card", "cnpj") if len(card) == 14 else ("card",)
    bare = assert_masked(template, card, *kinds)
    sizes = {15: [4, 6, 5], 16: [4, 4, 4, 4], 19: [4, 4, 4, 4, 3]}.get(len(card))
    if sizes is not None:
        assert assert_masked(template, group(card, sizes, sep), "card") == bare


@SETTINGS
@given(cards((13, 15, 16, 17, 19)), templates, st.sampled_from([" ", "-"]))
def test_card_with_a_wrong_luhn_digit_is_not_masked(card: str, template: str, sep: str) -> None:
    bad = wrong_last(card)
    assert M.mask_text(template.format(bad)) == template.format(bad)
    if len(bad) == 16:
        printed = group(bad, [4, 4, 4, 4], sep)
        assert M.mask_text(template.format(printed)) == template.format(printed)


@SETTINGS
@given(cards((16,)), digits(4))  # 20 digits: too long to be a card itself
def test_card_is_never_a_substring_of_a_longer_digit_run(card: str, extra: str) -> None:
    for text in (f"id {card}{extra} x", f"id {extra}{card} x", f"h{card}", f"{card}abc", f"1.{card}"):
        assert "<card:" not in M.mask_text(text)
    # ...but a separate neighbour number is not part of the card
    assert_masked(f"qty {extra} {{}} ok", card, "card")


@SETTINGS
@given(ibans(), templates)
def test_iban_masked_compact_and_grouped(iban: str, template: str) -> None:
    a = assert_masked(template, iban, "iban")
    b = assert_masked(template, " ".join(iban[i : i + 4] for i in range(0, len(iban), 4)), "iban")
    c = assert_masked(template, iban.lower(), "iban")
    assert a == b == c == M.pseudonym("iban", iban)


@SETTINGS
@given(ibans())
def test_iban_does_not_swallow_the_following_words(iban: str) -> None:
    grouped = " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
    out = M.mask_text(f"IBAN {grouped} EUR 99.90 TEST done")
    assert re.fullmatch(r"IBAN <iban:[0-9a-f]{8}> EUR 99\.90 TEST done", out), out


@SETTINGS
@given(ibans(), templates)
def test_iban_with_a_wrong_check_digit_is_not_masked(iban: str, template: str) -> None:
    bad = iban[:3] + str((int(iban[3]) + 1) % 10) + iban[4:]
    assert "<iban:" not in M.mask_text(template.format(bad))
    assert "<iban:" not in M.mask_text(
        template.format(" ".join(bad[i : i + 4] for i in range(0, len(bad), 4)))
    )


@SETTINGS
@given(emails(), templates)
def test_emails_masked_case_insensitively(email: str, template: str) -> None:
    a = assert_masked(template, email, "email")
    assert assert_masked(template, email.upper(), "email") == a == M.pseudonym("email", email)
    assert assert_masked(template, email.replace("@", "%40"), "email") == a


@SETTINGS
@given(st.integers(1, 9), st.lists(digits(1), min_size=7, max_size=14), templates)
def test_e164_numbers_masked_compact_and_spaced(first: int, rest: list[str], template: str) -> None:
    number = f"+{first}{''.join(rest)}"
    a = assert_masked(template, number, "phone")
    spaced = f"+{first} {''.join(rest[:3])} {''.join(rest[3:])}"
    assert assert_masked(template, spaced, "phone") == a


mobiles = digits(8).map("9".__add__)
landlines = st.tuples(st.sampled_from("2345"), digits(7)).map("".join)


@SETTINGS
@given(st.sampled_from(sorted(BR_DDD)), mobiles | landlines, templates)
def test_brazilian_phones_masked_in_national_forms(ddd: str, number: str, template: str) -> None:
    local = f"{number[:-4]}-{number[-4:]}"
    e164 = M.pseudonym("phone", f"+55{ddd}{number}")
    assert assert_masked(template, f"({ddd}) {local}", "phone") == e164
    assert assert_masked(template, f"{ddd} {local}", "phone") == e164
    assert assert_masked(template, f"+55 {ddd} {local}", "phone") == e164
    assert_masked(template, f"{ddd}{number}", "phone", "cpf")  # 11 bare digits may have CPF check digits


@SETTINGS
@given(st.ip_addresses(), st.sampled_from(["client {} connected", "ip={},", "from {}.", "[{}]:443", "{}"]))
def test_ip_addresses_masked(address: ipaddress.IPv4Address | ipaddress.IPv6Address, template: str) -> None:
    assume(str(address) != "::")  # the unspecified address is a separator in text, and identifies no one
    text = str(address)
    a = assert_masked(template, text, "ip")
    if address.version == 6:  # one address, one pseudonym, however it is written
        assert assert_masked(template, address.exploded, "ip") == a
    off = Masker(MaskerConfig(key=KEY, ip_addresses=False))
    assert off.mask_text(template.format(text)) == template.format(text)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(payload: dict[str, object], header: dict[str, object] | None = None) -> str:
    head = b64url(json.dumps(header or {"alg": "HS256", "typ": "JWT"}).encode())
    return f"{head}.{b64url(json.dumps(payload).encode())}.{b64url(b'signature-bytes-0123456789')}"


@SETTINGS
@given(st.dictionaries(st.text(min_size=1, max_size=5), st.integers(), max_size=4))
def test_jwts_masked_alone_and_as_one_bearer(payload: dict[str, object]) -> None:
    token = make_jwt(payload)
    assert_masked("x-session: {} ok", token, "jwt")
    assert_masked("Authorization: Bearer {}", token, "bearer")
    not_jwt = make_jwt(payload, header={"typ": "JWT"})
    assert M.mask_text(f"x {not_jwt} y") == f"x {not_jwt} y"


@pytest.mark.parametrize(
    ("text", "secret", "kind"),
    [
        ("Authorization: Bearer 8f2a9c1e4b7d6a3f0e5c", "8f2a9c1e4b7d6a3f0e5c", "bearer"),
        ("bearer abc.def-ghi_jkl~123", "abc.def-ghi_jkl~123", "bearer"),
        ("key AKIAIOSFODNN7EXAMPLE used", "AKIAIOSFODNN7EXAMPLE", "apikey"),
        ("ASIAY34FZKBOKMUTVV7A", "ASIAY34FZKBOKMUTVV7A", "apikey"),
        (
            "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "apikey",
        ),
        ('"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"', "EXAMPLEKEY", "apikey"),
        ("token ghp_" + "a1B2" * 9, "ghp_" + "a1B2" * 9, "apikey"),
        ("gho_" + "Z" * 36, "gho_" + "Z" * 36, "apikey"),
        ("github_pat_" + "11ABCDEFG0" * 8 + "xy", "github_pat_", "apikey"),
        ("xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOpQrStUvWx", "AbCdEfGh", "apikey"),
        ("url https://hooks.slack.com/services/T0000/B0000/XXXXXXXXXXXXXXXX ok", "T0000/B0000", "apikey"),
        ("sk-proj-" + "Ab3_" * 10, "Ab3_Ab3_", "apikey"),
        ("sk-ant-api03-" + "x9Y-" * 10, "x9Y-x9Y-", "apikey"),
        ("sk-" + "a" * 20, "a" * 20, "apikey"),
        ("sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc", "4eC39HqLyjWDarjtT1zdp7dc", "apikey"),
        ("AIza" + "SyA-1234567890abcdefghijklmnopqrstu", "SyA-1234567890", "apikey"),
        ("password=hunter2!", "hunter2!", "apikey"),
        ('{"client_secret": "s3cr3t-value"}', "s3cr3t-value", "apikey"),
    ],
)
def test_tokens_and_api_keys(text: str, secret: str, kind: str) -> None:
    out = M.mask_text(text)
    assert secret not in out
    assert f"<{kind}:" in out


@pytest.mark.parametrize(
    "text",
    [
        "order 1234567 and order #A-99812",
        "uuid 550e8400-e29b-41d4-a716-446655440000",
        "2026-11-26T10:52:09.343Z and 2026-11-26 10:52:09 and 26/11/2026",
        "R$ 1.234,56 or $12.50 or EUR 99.90 or R$ 1.234.567,89",
        "v1.2.3, 3.11.7, v1.2.3.4 and rollguard/0.4.1",
        "HTTP/1.1 200 OK in 12.5ms, 503 after 1500ms",
        "request_id=a25ded7a6e30326d4d854e408656cc41 trace=4bf92f3577b34da6a3ce929d0e0e4736",
        "ts 1764154329 ms 1764154329123 pid 12345 port 8080",
        "years 2023 2024 2025 2026 and sizes 21 2345 6789",
        "icon@2x.png, std::vector, a :: b, 10:52:09",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0.0.0 Safari/537.36",
        'missing Bearer token; WWW-Authenticate: Bearer realm="rollguard"',
        "password: must be at least 8 characters",
        "sha256=9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "+0000 +05:30 score +12.5",
    ],
)
def test_readable_values_are_untouched(text: str) -> None:
    assert M.mask_text(text) == text


# ---------------------------------------------------------------------------------------------------
# Neighbours: the separators of paths, queries and lists end a value, whatever follows them.

SEPARATORS = ("/", "?", "&", "=", ",", ";", ":", " ")
NUMBERS = [
    ("cpf", "12345678909"),
    ("cpf", "123.456.789-09"),
    ("cnpj", "11222333000181"),
    ("cnpj", "11.222.333/0001-81"),
    ("cnpj", "12.ABC.345/01DE-35"),
    ("card", "4111111111111111"),
    ("card", "4111 1111 1111 1111"),
    ("phone", "(11) 91234-5678"),
    ("phone", "11 91234-5678"),
    ("phone", "+5511912345678"),
    ("ip", "10.0.0.1"),
    ("ip", "2001:db8::1"),
]


def joins(value: str, separator: str) -> bool:
    """A short number after ``separator`` continues ``value`` by its own syntax: E.164 digits go in
    spaced groups ("+5511912345678 42"), IPv6 groups follow colons ("2001:db8::1:42", "42:2001:db8::1")."""
    return (value.startswith("+") and separator == " ") or ("::" in value and separator == ":")


def test_numbers_masked_between_any_separators_even_next_to_digits() -> None:
    # "/users/12345678909/42", "12345678909,12345678909", "a=1,12345678909&b=2": each side on its own.
    wrong = []
    for kind, value in NUMBERS:
        ps = M.pseudonym(kind, value)
        for number in ("42", "1000000001"):
            for left in ("", *SEPARATORS):
                for right in ("", *SEPARATORS):
                    if len(number) == 2 and (joins(value, right) or (left == ":" and "::" in value)):
                        continue
                    text = f"{number if left else ''}{left}{value}{right}{number if right else ''}"
                    if (out := M.mask_text(text)) != text.replace(value, ps):
                        wrong.append((text, out))
    assert not wrong, wrong


@pytest.mark.parametrize(
    ("text", "planted"),
    [
        ("/users/12345678909/42", [("cpf", "12345678909")]),
        ("/users/123.456.789-09/42/orders", [("cpf", "123.456.789-09")]),
        ("/companies/11.222.333/0001-81/7", [("cnpj", "11.222.333/0001-81")]),
        ("12345678909,12345678909", [("cpf", "12345678909"), ("cpf", "12345678909")]),
        (
            "ids=4111111111111111,5555555555554444",
            [("card", "4111111111111111"), ("card", "5555555555554444")],
        ),
        ("/users/11912345678/2", [("phone", "11912345678")]),
        ("+5511912345678,12345678909", [("phone", "+5511912345678"), ("cpf", "12345678909")]),
        ("client_ip:2001:db8::1 ok", [("ip", "2001:db8::1")]),
        ("11912345678:2001:db8::1", [("phone", "11912345678"), ("ip", "2001:db8::1")]),
        # ipaddress refuses the whole (a group holds 4 hex digits); reading 2001:db8::1191 out of it would
        # cut a number in two, so it is the address 2001:db8:: followed by a phone.
        ("2001:db8::11912345678", [("ip", "2001:db8::"), ("phone", "11912345678")]),
        ("12345678909:::1", [("cpf", "12345678909"), ("ip", "::1")]),
        ("12345678909/10.0.0.1", [("cpf", "12345678909"), ("ip", "10.0.0.1")]),
        ("+61475823 192.0.2.81", [("phone", "+61475823"), ("ip", "192.0.2.81")]),
        ("/users/10.0.0.1/orders", [("ip", "10.0.0.1")]),
        ("maria@x.com/10.0.0.1", [("email", "maria@x.com"), ("ip", "10.0.0.1")]),
        (
            "Bearer 8f2a9c1e4b7d6a3f0e5c=12345678909",
            [("bearer", "8f2a9c1e4b7d6a3f0e5c"), ("cpf", "12345678909")],
        ),
        (
            "Bearer 8f2a9c1e4b7d/Bearer 6a3f0e5c9d8b",
            [("bearer", "8f2a9c1e4b7d/Bearer"), ("bearer", "6a3f0e5c9d8b")],
        ),
    ],
)
def test_values_glued_by_separators(text: str, planted: list[tuple[str, str]]) -> None:
    expected, pos = [], 0
    for kind, value in planted:
        at = text.index(value, pos)
        expected += [text[pos:at], M.pseudonym(kind, value)]
        pos = at + len(value)
    assert M.mask_text(text) == "".join([*expected, text[pos:]])


@pytest.mark.parametrize(
    "text",
    [
        "12345678909.5",  # a decimal
        "1.12345678909",
        "12345678909-1",  # a dashed id
        "A-12345678909",
        "x12345678909",  # inside a word
        "12345678909a",
        "123456789091",  # inside a longer number
        "912345678909",
        "1.123.456.789-09",
        "123.456.789-09.1",
        "123.456.789-09-1",
        "10.0.0.1.5",  # a longer dotted run
        "Chrome/10.0.0.1",  # a version token
        "std::vector Abc::Definitely",
        "+12345678.90 and +1234567.89",  # signed amounts
    ],
)
def test_numbers_inside_longer_tokens_stay_readable(text: str) -> None:
    assert M.mask_text(text) == text


class Fixed:
    """An injected detector that reports the same hits whatever the text."""

    def __init__(self, *hits: Hit) -> None:
        self.hits = list(hits)

    def find(self, text: str) -> list[Hit]:
        return list(self.hits)


def test_overlapping_hits_are_masked_as_their_union_under_the_best_one() -> None:
    text = "0123456789abcdefghij"
    masker = Masker(
        MaskerConfig(key=KEY),
        detectors=[
            Fixed(Hit(0, 5, "phone", "p"), Hit(0, 5, "cpf", "c")),  # same span: the CPF is more specific
            Fixed(Hit(8, 12, "phone", "x"), Hit(9, 15, "email", "e"), Hit(14, 16, "ip", "i")),  # longest
            Fixed(Hit(18, 20, "custom", "z")),  # a kind the masker does not know still gets masked
        ],
    )
    ps = masker.pseudonym
    # the phone at 8-12 and the ip at 14-16 stick out of the longer email at 9-15: all of 8-16 goes
    assert masker.mask_text(text) == f"{ps('cpf', 'c')}567{ps('email', 'e')}gh{ps('custom', 'z')}"
    # a chain: 0-6 and 7-12 do not touch, but 5-8 overlaps both, so none of 0-12 may stay
    chain = Masker(
        MaskerConfig(key=KEY),
        detectors=[Fixed(Hit(0, 6, "cpf", "a"), Hit(5, 8, "ip", "b"), Hit(7, 12, "email", "c"))],
    )
    assert chain.mask_text(text) == f"{ps('cpf', 'a')}cdefghij"
    no_ip = Masker(MaskerConfig(key=KEY, ip_addresses=False), detectors=[Fixed(Hit(0, 4, "ip", "1.2.3.4"))])
    assert no_ip.mask_text(text) == text


@pytest.mark.parametrize(
    ("text", "secrets"),
    [
        # the password runs into the IBAN, the longer hit: the password must not come out raw beside it
        ("?password=NDwUXsK7B2xgRMeP:DE89 3704 0044 0532 0130 00", ["NDwUXsK7B2xgRMeP", "3704"]),
        # an E.164 number that swallows the DDD of the national number after it
        ("+7599580761 91 93911-7908", ["7599580761", "93911-7908"]),
        # two addresses sharing a colon: the first one read out of the run stops inside the second
        ("2001:db8::1:2001:db8::2 ok", ["2001", "::2"]),
    ],
)
def test_overlapping_detectors_leave_nothing_raw(text: str, secrets: list[str]) -> None:
    out = M.mask_text(text)
    assert not [secret for secret in secrets if secret in out], out


# ---------------------------------------------------------------------------------------------------
# Pseudonyms


def test_pseudonyms_are_stable_keyed_and_opaque() -> None:
    other = Masker(MaskerConfig(key=b"another-key-0123456789"))
    for key in (KEY, b"k" * 64, b"a-key-longer-than-one-sha256-block-" * 3):  # the contract, literally
        expected = hmac.new(key, b"email\x00maria@x.com", "sha256").hexdigest()[:8]
        assert Masker(MaskerConfig(key=key)).pseudonym("email", "Maria@X.com") == f"<email:{expected}>"
    assert M.pseudonym("cpf", "123.456.789-09") == M.pseudonym("cpf", "12345678909")
    assert re.fullmatch(r"<cpf:[0-9a-f]{8}>", M.pseudonym("cpf", "12345678909"))
    assert M.pseudonym("cpf", "12345678909") != other.pseudonym("cpf", "12345678909")
    assert M.pseudonym("cpf", "12345678909") != M.pseudonym("phone", "12345678909")  # kind is hashed
    assert M.pseudonym("iban", "de89 3704 0044 0532 0130 00") == M.pseudonym("iban", "DE89370400440532013000")
    assert M.pseudonym("ip", "2001:DB8:0:0::1") == M.pseudonym("ip", "2001:db8::1")
    assert M.pseudonym("card", "4111-1111-1111-1111") == M.pseudonym("card", "4111111111111111")
    assert M.pseudonym("phone", "(11) 91234-5678") == M.pseudonym("phone", "+55 11 91234-5678")
    assert M.mask_text("cpf 123.456.789-09") == M.mask_text("cpf 12345678909")


def test_config_needs_a_real_key_and_pointers_and_hides_the_key() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        MaskerConfig(key=b"short")
    with pytest.raises(ValueError, match="JSON pointer"):
        MaskerConfig(key=KEY, json_fields=("user/email",))
    with pytest.raises(TypeError):
        MaskerConfig(key="a-str-key-that-is-long-enough")  # type: ignore[arg-type]
    assert KEY.decode() not in repr(MaskerConfig(key=KEY)) + repr(M)


# ---------------------------------------------------------------------------------------------------
# A corpus of realistic lines. «kind:value» plants a value; the masked line must equal the line with each
# planted value replaced by its pseudonym, so every other byte (order ids, timestamps, prices, versions,
# request ids, status codes, latencies) stays identical.

JWT = make_jwt({"sub": "1234567890", "name": "Maria Silva", "iat": 1764154329})
CPF2 = fmt_cpf(make_cpf("987654321"))
ELO = group(luhn_complete("636297000045701"), [4, 4, 4, 4], " ")
GH = "ghp_" + "R8xk2PqLm9Zt4Vb7Nc1Wd5Fy3Hj6Gs0Ae2Ko"
GITHUB_PAT = "github_pat_11ABCDE2Y0" + "aB3dE5gH7j" * 7 + "kL"
SK_PROJ = "sk-proj-" + "T3BlbkFJ" * 5
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
REQ = "request_id=a25ded7a6e30326d4d854e408656cc41"
TS = "2026-11-26T10:52:09.343Z"
UUID = "550e8400-e29b-41d4-a716-446655440000"

CORPUS = [
    f"{TS} ERROR checkout falhou para «email:maria.silva@exemplo.com.br» pedido 1234567 total R$ 1.234,56 "
    f"{REQ}",
    f"{TS} WARN payment declined card=«card:4111 1111 1111 1111» order #A-99812 amount $12.50 latency=12.5ms",
    "[support] ticket 88231: John Doe <«email:john.doe+shop@example.com»> called from "
    "«phone:+1 (415) 555-0132» about order 1234567 on 26/11/2026",
    "[suporte] chamado 4521: cliente CPF «cpf:123.456.789-09» telefone «phone:(11) 91234-5678» reclamou do "
    "pedido #A-99812 em 26/11/2026",
    f"auth failed: Authorization: Bearer «bearer:{JWT}» rejected (expired) route=/v1/infer status=401 "
    "latency=3.2ms rollguard/0.4.1",
    f"upstream «ip:10.0.0.12»:8080 refused connection for client «ip:203.0.113.7» {REQ} version=v1.2.3 "
    "after 12.5ms",
    'Traceback (most recent call last):\n  File "/app/billing.py", line 88, in charge\nValueError: customer '
    "«email:suporte@loja.com.br» has no default card (Python 3.11.7)",
    "gateway: boleto gerado para CNPJ «cnpj:11.222.333/0001-81» valor R$ 1.234,56 vencimento 26/11/2026 "
    "pedido 1234567",
    f"gateway: TED para IBAN «iban:DE89 3704 0044 0532 0130 00» EUR 99.90 ref {UUID}",
    f"wire to «iban:GB29 NWBK 6016 1331 9268 19» amount EUR 99.90 at {TS} status=200",
    "pix recebido de CPF «cpf:52998224725» chave «phone:21987654321» valor R$ 1.234,56",
    "x-forwarded-for: «ip:198.51.100.23», «ip:2001:db8::8a2e:370:7334» via proxy v1.2.3 status 200 in 12.5ms",
    f"config: aws_access_key_id=«apikey:AKIAIOSFODNN7EXAMPLE» aws_secret_access_key=«apikey:{AWS_SECRET}» "
    "region=sa-east-1 python 3.11.7",
    f"git clone failed with token «apikey:{GH}» for repo rollguard v1.2.3 (exit 128)",
    f"fine-grained «apikey:{GITHUB_PAT}» expired at {TS}",
    "slack notify «apikey:https://hooks.slack.com/services/T024BE7LD/B024BE7LH/XXXXXXXXXXXXXXXXXXXXXXXX» "
    "failed status=500 latency=120.5ms",
    f"openai call with key «apikey:{SK_PROJ}» returned 429 after 12.5ms {REQ}",
    f"header x-session: «jwt:{JWT}» at {TS}",
    "cartão Mastercard «card:5555-5555-5555-4444» recusado para pedido #A-99812, total R$ 1.234,56",
    "amex «card:3782 822463 10005» approved order 1234567 $12.50",
    "Erro ao validar CNPJ «cnpj:11444777000161» do fornecedor: timeout após 12.5ms (v1.2.3)",
    "IBAN «iban:BR15 0000 0000 0000 1093 2840 814P 2» rejeitado em 26/11/2026",
    f"«iban:FR14 2004 1010 0505 0001 3M02 606» and «iban:NL91ABNA0417164300» in batch {TS}",
    'login ok user=«email:JOAO.SOUZA@EMPRESA.COM» ip=«ip:2001:db8:85a3::8a2e:370:7334» ua="Mozilla/5.0 '
    'Chrome/120.0.0.0 Safari/537.36"',
    "SMS enviado para «phone:+55 21 99876-5432» código expira em 10 min, pedido 1234567",
    "ligação para «phone:11 3456-7890» (fixo) registrada, ticket #A-99812",
    "london office «phone:+44 20 7946 0958» called about invoice 2026-11-26, EUR 99.90",
    "Stripe error: «apikey:sk_live_4eC39HqLyjWDarjtT1zdp7dc» invalid; charge 1234567 of $12.50 failed",
    f"slack bot token «apikey:xoxb-2048-1024-AbCdEfGhIjKlMnOpQrStUvWx» posted in #alerts at {TS}",
    "GET /v1/users?email=«email:maria%40exemplo.com.br»&cpf=«cpf:123.456.789-09»&page=2 200 12.5ms",
    "panic: invalid IBAN «iban:ES91 2100 0418 4502 0005 1332» for «iban:PT50 0002 0123 1234 5678 9015 4» "
    "(rollguard 0.4.1)",
    f"cartão Elo «card:{ELO}» aprovado, pedido 1234567, R$ 1.234,56",
    f"fraude suspeita: CPF «cpf:{CPF2}» e cartão «card:4012888888881881» no pedido 1234567",
    "«iban:IT60 X054 2811 1010 0000 0123 456» bonifico ricevuto 26/11/2026 EUR 99.90",
    f'{{"user":"u-1","api_key":"«apikey:AIzaSyA-1234567890abcdefghijklmnopqrstu»","ts":"{TS}"}}',
    "Authorization: Bearer «bearer:8f2a9c1e4b7d6a3f0e5c» retried 3 times, status 401",
    "nota fiscal emitida para CNPJ «cnpj:12.ABC.345/01DE-35» em 26/11/2026",
    "pedido 1234567: contato «email:maria@loja.com.br», tel «phone:(11) 91234-5678», "
    "cpf «cpf:123.456.789-09», 3 itens, R$ 1.234,56",
    f"{TS} INFO rollguard.access {REQ} route=infer method=POST status=200 role=candidate version=v1.2.3 "
    "latency_ms=12.5 client=«ip:192.0.2.44» ua=curl/8.5.0",
]
_PLANT = re.compile(r"«([a-z]+):(.+?)»")


def test_corpus_is_big_enough() -> None:
    assert len(CORPUS) >= 30


@pytest.mark.parametrize("planted", CORPUS, ids=[f"line{i}" for i in range(len(CORPUS))])
def test_corpus_line(planted: str) -> None:
    line = _PLANT.sub(lambda m: m.group(2), planted)
    values = [m.group(2) for m in _PLANT.finditer(planted)]
    out = M.mask_text(line)
    for value in values:
        assert value not in out, (value, out)
    assert out == _PLANT.sub(lambda m: M.pseudonym(m.group(1), m.group(2)), planted)


# ---------------------------------------------------------------------------------------------------
# Queries


def test_query_values_decoded_masked_and_re_encoded_keys_kept() -> None:
    out = M.mask_query("a=1&email=x%40y.com&page=2")
    assert out == f"a=1&email={M.pseudonym('email', 'x@y.com')}&page=2"


@pytest.mark.parametrize(
    "query",
    [
        "",
        "a=1",
        "q=hello+world&page=2",
        "a&b=&=c",
        "bad=%ZZ%4",
        "nome=Jo%C3%A3o&x=%E9t%E9",
        "v=1.2.3&ts=" + TS,
    ],
)
def test_query_without_pii_is_byte_identical(query: str) -> None:
    assert M.mask_query(query) == query


def test_query_plus_is_both_a_plus_and_a_space() -> None:
    phone = M.pseudonym("phone", "+5511912345678")
    assert M.mask_query("tel=%2B5511912345678") == f"tel={phone}"
    assert M.mask_query("tel=+5511912345678") == f"tel={phone}"
    assert M.mask_query("tel=11+91234-5678&n=Jo%C3%A3o+Silva") == f"tel={phone}&n=Jo%C3%A3o+Silva"
    assert M.mask_query("q=foo+bar%40x.com") in (
        f"q={M.pseudonym('email', 'foo+bar@x.com')}",
        f"q=foo+{M.pseudonym('email', 'bar@x.com')}",
    )


def test_query_credentials_by_name_and_pii_in_keys() -> None:
    out = M.mask_query("access_token=abc&X-Amz-Signature=deadbeef&Password=p%40ss&john%40x.com=1&token=")
    assert out == (
        f"access_token={M.pseudonym('apikey', 'abc')}&X-Amz-Signature={M.pseudonym('apikey', 'deadbeef')}"
        f"&Password={M.pseudonym('apikey', 'p@ss')}&{M.pseudonym('email', 'john@x.com')}=1&token="
    )


def test_query_credential_named_by_the_last_part_of_its_key() -> None:
    secret = M.pseudonym("apikey", "hunter2hunter2")
    assert M.mask_query("user[password]=hunter2hunter2&a=1") == f"user[password]={secret}&a=1"
    assert M.mask_query("/password=hunter2hunter2") == f"/password={secret}"
    assert M.mask_query("auth.token=hunter2hunter2") == f"auth.token={secret}"
    assert M.mask_query("password_hint=blue") == "password_hint=blue"  # the last part is the name


def test_query_keeps_unmasked_bytes_around_a_masked_span() -> None:
    out = M.mask_query("msg=caf%C3%A9%20de%20maria%40x.com%20ok&cpf=123.456.789-09")
    email, cpf = M.pseudonym("email", "maria@x.com"), M.pseudonym("cpf", "12345678909")
    assert out == f"msg=caf%C3%A9%20de%20{email}%20ok&cpf={cpf}"


# ---------------------------------------------------------------------------------------------------
# Headers


def test_headers_credentials_whole_case_insensitive_others_through_text() -> None:
    masker = Masker(MaskerConfig(key=KEY, header_names=("X-Customer-Id",)))
    headers = [
        ("AUTHORIZATION", "Basic dXNlcjpwYXNz"),
        ("Cookie", "session=abc; theme=dark"),
        ("set-cookie", "sid=xyz; HttpOnly"),
        ("X-Rollguard-Token", "op-token"),
        ("x-api-key", "k1"),
        ("Proxy-Authorization", "Bearer t0k3n-abcdef"),
        ("x-customer-id", "cust-42"),
        ("X-Forwarded-For", "203.0.113.7, 10.0.0.1"),
        ("User-Agent", "curl/8.5.0"),
        ("x-request-id", "a25ded7a6e30326d4d854e408656cc41"),
    ]
    out = masker.mask_headers(headers)
    assert [name for name, _ in out] == [name for name, _ in headers]
    for (_, raw), (_, masked) in zip(headers[:7], out[:7], strict=True):
        assert masked == masker.pseudonym("header", raw)
    assert out[7][1] == f"{masker.pseudonym('ip', '203.0.113.7')}, {masker.pseudonym('ip', '10.0.0.1')}"
    assert out[8:] == headers[8:]
    assert M.mask_headers([("x-customer-id", "cust-42")]) == [("x-customer-id", "cust-42")]


# ---------------------------------------------------------------------------------------------------
# JSON


def test_json_pointers_wildcards_nested_lists_and_numbers() -> None:
    masker = Masker(
        MaskerConfig(
            key=KEY, json_fields=("/user/email", "/customer/*/cpf", "/orders/*/payment/card", "/a~1b")
        )
    )
    doc = {
        "user": {"email": "not-an-email-shape", "age": 33, "tags": ["vip", "maria@x.com"]},
        "customer": [{"cpf": 12345678909, "name": "Ana"}, {"cpf": "123.456.789-09"}, {"cpf": None}],
        "orders": [{"id": 1234567, "payment": {"card": 4111111111111111, "amount": 12.5}}],
        "a/b": {"nested": [1, 2]},
        "note": "client 203.0.113.7 paid R$ 1.234,56",
        "count": 4111111111111111,
        "ok": True,
        "password": "hunter2",
        "joao@x.com": 1,
    }
    before = json.dumps(doc, sort_keys=True)
    out = masker.mask_json(doc)
    assert json.dumps(doc, sort_keys=True) == before  # a new structure; the input is untouched
    field = masker.pseudonym
    tags = ["vip", field("email", "maria@x.com")]
    assert out["user"] == {"email": field("field", "not-an-email-shape"), "age": 33, "tags": tags}
    assert out["customer"] == [
        {"cpf": field("field", "12345678909"), "name": "Ana"},
        {"cpf": field("field", "123.456.789-09")},
        {"cpf": None},
    ]
    assert out["orders"] == [
        {"id": 1234567, "payment": {"card": field("field", "4111111111111111"), "amount": 12.5}}
    ]
    assert out["a/b"] == field("field", '{"nested":[1,2]}')
    assert out["note"] == f"client {field('ip', '203.0.113.7')} paid R$ 1.234,56"
    assert out["count"] == 4111111111111111 and out["ok"] is True  # numbers outside pointers are kept
    assert out["password"] == field("apikey", "hunter2")
    assert out[field("email", "joao@x.com")] == 1


def test_json_scalars_and_lists_at_the_top() -> None:
    assert M.mask_json("mail maria@x.com") == f"mail {M.pseudonym('email', 'maria@x.com')}"
    assert M.mask_json([1, None, 2.5, ("a", "b")]) == [1, None, 2.5, ["a", "b"]]
    assert M.mask_json(None) is None


# ---------------------------------------------------------------------------------------------------
# Fail closed


class Boom:
    """A detector with a bug: it raises on any text containing "boom"."""

    def find(self, text: str) -> Iterator[Hit]:
        if "boom" in text:
            raise RuntimeError("detector bug")
        return iter(())


class BuggyMasker(Masker):
    def __init__(self, config: MaskerConfig) -> None:
        super().__init__(config, detectors=[Boom()])


class BadHashMasker(Masker):
    def pseudonym(self, kind: str, value: str) -> str:
        raise RuntimeError("hash failure")


def test_a_raising_detector_masks_the_value_and_never_raises() -> None:
    masker = BuggyMasker(MaskerConfig(key=KEY))
    assert masker.mask_text("boom maria@x.com") == MASK_ERROR
    assert masker.mask_text("fine") == "fine"
    assert masker.mask_query("a=1&b=boom%40x.com&boom=2") == f"a=1&b={MASK_ERROR}&{MASK_ERROR}"
    assert masker.mask_headers([("x-a", "fine"), ("x-b", "boom secret")]) == [
        ("x-a", "fine"),
        ("x-b", MASK_ERROR),
    ]
    # per value: a failing key becomes MASK_ERROR, its (number) value is still fine
    assert masker.mask_json({"ok": "fine", "bad": ["boom secret"], "boom": 1}) == {
        "ok": "fine",
        "bad": [MASK_ERROR],
        MASK_ERROR: 1,
    }


def test_a_raising_pseudonym_fails_closed_everywhere() -> None:
    masker = BadHashMasker(MaskerConfig(key=KEY, json_fields=("/x",)))
    assert masker.mask_text("cpf 123.456.789-09") == MASK_ERROR
    assert masker.mask_text("nothing personal") == "nothing personal"
    assert masker.mask_query("cpf=123.456.789-09&page=2") == f"cpf={MASK_ERROR}&page=2"
    assert masker.mask_headers([("authorization", "Bearer x")]) == [("authorization", MASK_ERROR)]
    assert "123" not in str(masker.mask_json({"x": 12345678909}))


@pytest.mark.parametrize(
    ("call", "arg"),
    [
        ("mask_text", None),
        ("mask_text", b"maria@x.com"),
        ("mask_query", 42),
        ("mask_json", {"a": b"bytes maria@x.com"}),
        ("mask_json", {"a": {1, 2}}),
    ],
)
def test_weird_inputs_never_come_out_raw(call: str, arg: object) -> None:
    out = getattr(M, call)(arg)
    assert "maria" not in str(out)
    assert MASK_ERROR in str(out)


def test_weird_headers_and_deep_documents() -> None:
    out = M.mask_headers([("x-a", "ok"), ("broken",), (b"x-b", "v"), ("x-c", None)])  # type: ignore[list-item]
    assert out == [("x-a", "ok"), (MASK_ERROR, MASK_ERROR), (MASK_ERROR, MASK_ERROR), ("x-c", MASK_ERROR)]
    assert M.mask_headers(None) == [(MASK_ERROR, MASK_ERROR)]  # type: ignore[arg-type]
    deep: object = "maria@x.com"
    for _ in range(5000):
        deep = [deep]
    out = M.mask_json(deep)
    for _ in range(MAX_JSON_DEPTH):
        assert isinstance(out, list) and len(out) == 1
        out = out[0]
    assert out == MASK_ERROR
