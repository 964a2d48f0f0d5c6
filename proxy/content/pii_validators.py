"""Validators behind the PII detectors (pure): check digits, Luhn, mod 97, JWT headers, phone plans.

A candidate pattern finds something shaped like an identifier; these decide whether it really is one,
which is what keeps order ids, prices and versions readable.

These are not python-stdnum's: measured on one machine (stdnum 2.2, Python 3.11), its br.cpf, br.cnpj,
luhn and iban checks take 1.7-5.5x as long per call (an IBAN 26 µs against 6, a rejected CPF 11-14 µs
against 3-4: they clean the input again and reject by raising), which made benchmarks/bench_pii.py's
rows that validate a CPF 8-11% slower (mask_query 60.6 -> 67.2 µs); its CPF also accepts "11111111111".
"""

from __future__ import annotations

import base64
import operator
from typing import Final

import orjson


def _mod11(values: list[int], weights: tuple[int, ...]) -> int:
    rest = sum(map(operator.mul, values, weights)) % 11
    return 0 if rest < 2 else 11 - rest


def cpf_valid(digits: str) -> bool:
    """11 ASCII digits whose two mod-11 check digits match; repeated-digit strings are not CPFs."""
    if len(digits) != 11 or not (digits.isascii() and digits.isdigit()) or len(set(digits)) == 1:
        return False
    v = [ord(c) - 48 for c in digits]
    d1 = _mod11(v[:9], (10, 9, 8, 7, 6, 5, 4, 3, 2))
    return v[9] == d1 and v[10] == _mod11([*v[:9], d1], (11, 10, 9, 8, 7, 6, 5, 4, 3, 2))


def cnpj_valid(chars: str) -> bool:
    """12 upper-case alphanumerics and 2 check digits, both mod 11; repeated characters rejected.

    Since July 2026 the first 12 may be letters; every character counts as ``ord(c) - 48`` (Receita
    Federal's rule, which is the digit's value for digits).
    """
    if len(chars) != 14 or not chars.isascii() or not chars[12:].isdigit() or len(set(chars)) == 1:
        return False
    if not all(c.isdigit() or "A" <= c <= "Z" for c in chars[:12]):
        return False
    v = [ord(c) - 48 for c in chars]
    d1 = _mod11(v[:12], (5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2))
    return v[12] == d1 and v[13] == _mod11([*v[:12], d1], (6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2))


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check over ASCII digits."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i & 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def card_iin_plausible(digits: str) -> bool:
    """A prefix some scheme issues: Mastercard 2221-2720 and 50-59, Amex/Diners/JCB 30/34/36-39 and
    3528-3589, Visa and Elo 4, Discover/UnionPay/Maestro/Elo/Hipercard 6. A year like 2024 is not one."""
    first = digits[:1]
    if first in ("4", "5", "6"):
        return True
    if first == "2":
        return 2221 <= int(digits[:4]) <= 2720
    return first == "3" and (digits[1] in "046789" or 3528 <= int(digits[:4]) <= 3589)


def card_valid(digits: str) -> bool:
    """13-19 ASCII digits, a plausible issuer prefix and a correct Luhn digit."""
    ok = 13 <= len(digits) <= 19 and digits.isascii() and digits.isdigit()
    return ok and card_iin_plausible(digits) and luhn_valid(digits)


# The SWIFT IBAN registry's lengths. A listed country must match exactly, which also tells where a
# printed IBAN ends; unlisted ones must be upper-case, compact or in strict groups of 4.
IBAN_LENGTHS: Final[dict[str, int]] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21,
    "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28,
    "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22,
    "RU": 33, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25,
    "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip


def iban_valid(iban: str) -> bool:
    """A compact upper-case IBAN: 2 letters, 2 check digits, 11-30 alphanumerics, the listed country's
    length, and mod 97 == 1 over the rearranged number."""
    if not (15 <= len(iban) <= 34 and iban.isascii() and iban.isalnum() and iban == iban.upper()):
        return False
    if not (iban[:2].isalpha() and iban[2:4].isdigit()):
        return False
    if IBAN_LENGTHS.get(iban[:2], len(iban)) != len(iban):
        return False
    return int("".join(str(int(c, 36)) for c in iban[4:] + iban[:4])) % 97 == 1


def jwt_header_valid(token: str) -> bool:
    """The first dot-separated segment is base64url for a JSON object that names an ``alg``."""
    head = token.split(".", 1)[0]
    try:
        obj = orjson.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except ValueError:  # binascii.Error, UnicodeDecodeError and orjson.JSONDecodeError all are
        return False
    return isinstance(obj, dict) and isinstance(obj.get("alg"), str)


# Brazil's area codes (DDD), per Anatel.
BR_DDD: Final = frozenset(
    "11 12 13 14 15 16 17 18 19 21 22 24 27 28 31 32 33 34 35 37 38 41 42 43 44 45 46 47 48 49 "
    "51 53 54 55 61 62 63 64 65 66 67 68 69 71 73 74 75 77 79 81 82 83 84 85 86 87 88 89 "
    "91 92 93 94 95 96 97 98 99".split()
)


def br_phone_valid(digits: str) -> bool:
    """A national Brazilian number: a valid DDD, then a 9-digit mobile starting with 9 or an 8-digit
    landline starting with 2-5."""
    rest = digits[2:]
    return digits[:2] in BR_DDD and (
        (len(rest) == 9 and rest[0] == "9") or (len(rest) == 8 and "2" <= rest[0] <= "5")
    )
