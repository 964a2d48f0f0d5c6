"""The PII validators' contract, edge by edge: what each check accepts at its limits and what it refuses
although the arithmetic alone would pass it (a letter, a non-ASCII digit, one character too many).

A validator that says yes too often masks order ids and prices; one that says no too often leaks a real
identifier. The values here are built by each algorithm, so a refusal is the rule's, not a typo's.
"""

from __future__ import annotations

import operator
from collections.abc import Callable

import pytest

from proxy.content.pii_validators import (
    br_phone_valid,
    card_iin_plausible,
    card_valid,
    cnpj_valid,
    cpf_valid,
    iban_valid,
    jwt_header_valid,
    luhn_valid,
)


def mod11(values: list[int], weights: tuple[int, ...]) -> int:
    rest = sum(map(operator.mul, values, weights)) % 11
    return 0 if rest < 2 else 11 - rest


def with_cpf_checks(body: str) -> str:
    """``body`` and the two check digits the CPF rule computes for it, counting each char as ord - 48."""
    v = [ord(c) - 48 for c in body]
    d1 = mod11(v, (10, 9, 8, 7, 6, 5, 4, 3, 2))
    return body + str(d1) + str(mod11([*v, d1], (11, 10, 9, 8, 7, 6, 5, 4, 3, 2)))


def with_cnpj_checks(body: str) -> str:
    v = [ord(c) - 48 for c in body]
    d1 = mod11(v, (5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2))
    return body + str(d1) + str(mod11([*v, d1], (6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2)))


def with_luhn_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return body + str((10 - total % 10) % 10)


def with_iban_checks(country: str, bban: str) -> str:
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    return f"{country}{98 - int(numeric) % 97:02d}{bban}"


def mod97_holds(iban: str) -> bool:
    return int("".join(str(int(c, 36)) for c in iban[4:] + iban[:4])) % 97 == 1


ARABIC_ONE = "\u0661"  # a digit to str.isdigit, not an ASCII one


Check = Callable[[str], bool]


@pytest.mark.parametrize(
    ("check", "value", "ok"),
    [
        # CPF: the check digits of a body with a letter work out, but a letter is not a digit.
        (cpf_valid, with_cpf_checks("12345678a"), False),
        (cpf_valid, with_cpf_checks("123456789"), True),
        # CNPJ: upper-case letters only (the 2026 alphanumeric form), ASCII only, exactly 14 characters.
        (cnpj_valid, with_cnpj_checks("12ABC34501DE"), True),
        (cnpj_valid, with_cnpj_checks("12abc34501de"), False),
        (cnpj_valid, with_cnpj_checks("11222333000" + ARABIC_ONE), False),
        (cnpj_valid, "1122233300018", False),  # a valid CNPJ's first 13 characters
        (cnpj_valid, "112223330001811", False),  # and one character more
        # Cards: 13 to 19 digits, ASCII digits, an issuer's prefix.
        (card_valid, with_luhn_digit("4" * 11), False),  # 12 digits
        (card_valid, with_luhn_digit("4" * 12), True),  # 13
        (card_valid, with_luhn_digit("4" * 18), True),  # 19
        (card_valid, with_luhn_digit("4" * 19), False),  # 20
        (card_valid, with_luhn_digit("4" * 15)[:-1] + ARABIC_ONE, False),
        (card_valid, with_luhn_digit("272000000000000"), True),  # Mastercard's 2-series ends at 2720
        (card_valid, with_luhn_digit("272100000000000"), False),
        (card_valid, with_luhn_digit("222100000000000"), True),
        (card_valid, with_luhn_digit("222000000000000"), False),
        (card_valid, with_luhn_digit("358900000000000"), True),  # JCB 3528-3589
        (card_valid, with_luhn_digit("359000000000000"), False),
        (card_valid, with_luhn_digit("352800000000000"), True),
        (card_valid, with_luhn_digit("352700000000000"), False),
        (card_valid, with_luhn_digit("141111111111111"), False),  # "4" second is Amex's only after a 3
        (card_valid, with_luhn_digit("341111111111111"), True),
        # IBAN: 15 (Norway) to 34 characters, compact upper-case ASCII, letters then check digits.
        (iban_valid, with_iban_checks("NO", "86011117947"), True),
        (iban_valid, with_iban_checks("ZZ", "1" * 30), True),  # 34, a country not in the registry
        (iban_valid, "de89370400440532013000", False),
        (iban_valid, "DE89370400440532013000", True),
        (iban_valid, "DE893704004405320130\u0660\u0660", False),  # Arabic zeros for the last two
        (iban_valid, "DE8937040044053201300-", False),
        (iban_valid, "DECZ370400440532013000", False),  # mod 97 holds; "CZ" are not check digits
        (iban_valid, "DEK2370400440532013000", False),
        (iban_valid, "5289370400440532013000", False),  # mod 97 holds; "52" is not a country
        (iban_valid, with_iban_checks("DE", "1" * 19), False),  # Germany's are 22, this is 23
        # JWT headers: padding restored whatever the length; not base64 JSON is not a header.
        (jwt_header_valid, "eyJhbGciOiJ4In0.e30.sig", True),  # {"alg":"x"}, 15 characters
        (jwt_header_valid, "eyJhbGciOiJIIn0.e30.sig", True),
        (jwt_header_valid, "eyJhbGciOi.e30.sig", False),  # '{"alg":' alone
        (jwt_header_valid, "eyJ!!!!.e30.sig", False),
        # Brazilian phones: a real area code, then a mobile (9 + 8 digits) or a landline (2-5 + 7).
        (br_phone_valid, "11912345678", True),
        (br_phone_valid, "1121234567", True),
        (br_phone_valid, "1151234567", True),
        (br_phone_valid, "10912345678", False),  # area code 10 does not exist
        (br_phone_valid, "1191234567", False),  # a landline cannot start with 9
        (br_phone_valid, "1161234567", False),  # nor with 6
        (br_phone_valid, "1112345678", False),  # nor with 1
        (br_phone_valid, "11812345678", False),  # a mobile starts with 9
    ],
)
def test_validator_edges(check: Check, value: str, ok: bool) -> None:
    assert check(value) is ok, value


def test_the_refused_values_are_refused_by_the_rule_not_the_arithmetic() -> None:
    # Without these, a refusal above could come from a wrong check digit rather than the rule tested.
    for iban in ("DECZ370400440532013000", "DEK2370400440532013000", "5289370400440532013000"):
        assert mod97_holds(iban)
    assert mod97_holds(with_iban_checks("ZZ", "1" * 31)) and len(with_iban_checks("ZZ", "1" * 31)) == 35
    assert luhn_valid(with_luhn_digit("4" * 19)) and luhn_valid(with_luhn_digit("272100000000000"))


def test_an_iban_of_35_characters_is_too_long_whatever_its_checksum() -> None:
    assert not iban_valid(with_iban_checks("ZZ", "1" * 31))


@pytest.mark.parametrize("prefix", ["4", "5", "6", "30", "34", "36", "37", "38", "39", "2221", "2720"])
def test_issuer_prefixes(prefix: str) -> None:
    assert card_iin_plausible(prefix + "0" * (16 - len(prefix)))


@pytest.mark.parametrize("prefix", ["1", "7", "8", "9", "0", "31", "32", "33", "35", "2220", "2721"])
def test_not_issuer_prefixes(prefix: str) -> None:
    assert not card_iin_plausible(prefix + "0" * (16 - len(prefix)))
