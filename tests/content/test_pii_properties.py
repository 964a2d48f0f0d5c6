"""The PII masker against adversarial neighbours: valid values of every detector kind, glued together
with the separators of paths, queries and lists, never come out raw from any of the ways the proxy
masks text (log text and paths, query strings, JSON bodies).

Values are built by the algorithms themselves (check digits, Luhn, mod 97), not by the validators under
test. ``ROLLGUARD_FUZZ_EXAMPLES`` sets the example count, for a longer run than the default.
"""

from __future__ import annotations

import json
import os
import re
from typing import NamedTuple

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.content.pii import Masker, MaskerConfig
from proxy.content.pii_validators import BR_DDD
from tests.content.test_pii import (
    cards,
    cnpjs,
    cpfs,
    emails,
    fmt_cnpj,
    fmt_cpf,
    group,
    ibans,
    landlines,
    make_cnpj,
    make_jwt,
    mobiles,
    not_repeated,
)

KEY = b"rollguard-property-key-0123456789"
M = Masker(MaskerConfig(key=KEY))
EXAMPLES = int(os.environ.get("ROLLGUARD_FUZZ_EXAMPLES", "300"))

# Where one value ends and the next begins in paths, queries, lists and prose.
SEPARATORS = ("/", "?", "&", "=", ",", ";", ":", " ")
_PSEUDONYM = re.compile(r"<[a-z]+:[0-9a-f]{8}>")


class Planted(NamedTuple):
    """``text`` goes into the line; ``secret`` (all of ``text`` or the credential inside it) must not
    come out."""

    kind: str
    text: str
    secret: str


def whole(kind: str, texts: st.SearchStrategy[str]) -> st.SearchStrategy[Planted]:
    """Values whose whole text is the secret."""
    return texts.map(lambda text: Planted(kind, text, text))


ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
UPPER_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def text_of(alphabet: str, size: int) -> st.SearchStrategy[str]:
    return st.text(alphabet, min_size=size, max_size=size)


ddds = st.sampled_from(sorted(BR_DDD))
br_numbers = st.tuples(ddds, mobiles | landlines)


def br_phone_forms(ddd_number: tuple[str, str]) -> list[str]:
    ddd, number = ddd_number
    local = f"{number[:-4]}-{number[-4:]}"
    return [f"{ddd}{number}", f"({ddd}) {local}", f"{ddd} {local}", f"+55 {ddd} {local}", f"+55{ddd}{number}"]


@st.composite
def phones(draw: st.DrawFn) -> Planted:
    if draw(st.booleans()):
        text = draw(st.sampled_from(br_phone_forms(draw(br_numbers))))
    else:  # any country, compact E.164
        text = f"+{draw(st.integers(1, 9))}{draw(st.text('0123456789', min_size=7, max_size=14))}"
    return Planted("phone", text, text)


@st.composite
def printed_cards(draw: st.DrawFn) -> Planted:
    card = draw(cards())
    sep = draw(st.sampled_from([" ", "-"]))
    sizes = {15: [4, 6, 5], 16: [4, 4, 4, 4], 19: [4, 4, 4, 4, 3]}.get(len(card))
    text = group(card, sizes, sep) if sizes is not None and draw(st.booleans()) else card
    return Planted("card", text, text)


@st.composite
def printed_ibans(draw: st.DrawFn) -> Planted:
    iban = draw(ibans())
    text = " ".join(iban[i : i + 4] for i in range(0, len(iban), 4)) if draw(st.booleans()) else iban
    return Planted("iban", text, text)


@st.composite
def ipv6s(draw: st.DrawFn) -> Planted:
    address = draw(st.ip_addresses(v=6).filter(lambda a: a.compressed != "::"))
    text = address.exploded if draw(st.booleans()) else address.compressed
    return Planted("ip", text, text)


@st.composite
def jwts(draw: st.DrawFn) -> Planted:
    payload = draw(st.dictionaries(st.text(ALNUM, min_size=1, max_size=5), st.integers(), max_size=3))
    token = make_jwt(payload)
    return Planted("jwt", token, token)


@st.composite
def bearers(draw: st.DrawFn) -> Planted:
    token = draw(text_of(ALNUM + "._~+/-", 24)) + draw(st.sampled_from(["", "=", "=="]))
    return Planted("bearer", f"{draw(st.sampled_from(['Bearer', 'bearer']))} {token}", token)


@st.composite
def api_keys(draw: st.DrawFn) -> Planted:
    key = draw(
        st.one_of(
            text_of(UPPER_ALNUM, 16).map("AKIA".__add__),
            text_of(ALNUM, 36).map("ghp_".__add__),
            text_of(ALNUM + "_", 82).map("github_pat_".__add__),
            text_of(ALNUM, 24).map("xoxb-1234-5678-".__add__),
            text_of(ALNUM + "_-", 32).map("sk-proj-".__add__),
            text_of(ALNUM, 24).map("sk_live_".__add__),
            text_of(ALNUM + "_-", 35).map("AIza".__add__),
        )
    )
    return Planted("apikey", key, key)


@st.composite
def labelled_secrets(draw: st.DrawFn) -> Planted:
    label = draw(st.sampled_from(["password", "api_key", "client_secret", "access_token"]))
    # No "%": in a query it starts an escape, so the query would carry some other secret.
    secret = draw(text_of(ALNUM + "!#$*-_.", 16))
    text = draw(st.sampled_from([f"{label}={secret}", f'"{label}": "{secret}"']))
    return Planted("apikey", text, secret)


def alnum_cnpj(body: str) -> str:
    return fmt_cnpj(make_cnpj(body))


PLANTED = st.one_of(
    whole("cpf", cpfs),
    whole("cpf", cpfs.map(fmt_cpf)),
    whole("cnpj", cnpjs),
    whole("cnpj", cnpjs.map(fmt_cnpj)),
    whole("cnpj", text_of(UPPER_ALNUM, 12).filter(not_repeated).map(alnum_cnpj)),
    printed_cards(),
    printed_ibans(),
    phones(),
    whole("email", emails()),
    whole("ip", st.ip_addresses(v=4).map(str)),
    ipv6s(),
    jwts(),
    bearers(),
    api_keys(),
    labelled_secrets(),
)


@st.composite
def lines(draw: st.DrawFn) -> tuple[str, list[Planted]]:
    """1-5 values, one separator between each two, and a separator or nothing at either end."""
    values = draw(st.lists(PLANTED, min_size=1, max_size=5))
    edges = st.sampled_from(("", *SEPARATORS))
    parts = [draw(edges), values[0].text]
    for value in values[1:]:
        parts += [draw(st.sampled_from(SEPARATORS)), value.text]
    parts.append(draw(edges))
    return "".join(parts), values


def assert_nothing_raw(values: list[Planted], line: str, masked: str) -> None:
    for value in values:
        assert value.secret not in masked, f"{value.kind} {value.secret!r} left raw in {line!r}: {masked!r}"
    # Nor a piece of one: outside the pseudonyms only separators and labels remain, and no label holds
    # five digits in a row.
    rest = _PSEUDONYM.sub(" ", masked)
    assert not re.search(r"\d{5}", rest), f"part of a number left raw in {line!r}: {masked!r}"


FUZZ = settings(max_examples=EXAMPLES, deadline=None)


@FUZZ
@given(lines())
def test_no_value_survives_in_text_and_paths(line: tuple[str, list[Planted]]) -> None:
    text, values = line
    assert_nothing_raw(values, text, M.mask_text(text))


@FUZZ
@given(lines())
def test_no_value_survives_in_a_query_string(line: tuple[str, list[Planted]]) -> None:
    text, values = line
    assert_nothing_raw(values, text, M.mask_query(text))


@FUZZ
@given(lines())
def test_no_value_survives_in_json_keys_and_values(line: tuple[str, list[Planted]]) -> None:
    text, values = line
    masked = M.mask_json({"note": text, "items": [text], text: 1})
    assert_nothing_raw(values, text, json.dumps(masked, ensure_ascii=False))
