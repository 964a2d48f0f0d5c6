"""PII detectors: precompiled candidate patterns plus real validators (pure; no I/O).

A detector yields the :class:`Hit` s it finds in a text and never looks at other detectors' hits; the
masker (:mod:`proxy.pii`) resolves overlaps. Patterns are loose where the validator is strong (check
digits, Luhn, mod 97, ``ipaddress``, a JWT header) and strict about boundaries: a digit detector never
matches inside a longer run of digits or word characters, so order ids, hex ids, UUIDs, versions and
decimals keep their digits. For speed, one regex finds the numeric runs of a line and the numeric
patterns run inside those alone; text detectors first test for a substring they cannot match without.
Detectors may raise on inputs nobody anticipated: the masker fails closed around them.
"""

from __future__ import annotations

import base64
import ipaddress
import operator
import re
from collections.abc import Callable, Iterable
from typing import Final, NamedTuple, Protocol

import orjson


class Hit(NamedTuple):
    """``text[start:end]`` is a value of ``kind``; ``value`` is what gets hashed (before normalization)."""

    start: int
    end: int
    kind: str
    value: str


class Detector(Protocol):
    """Finds personal data in a text. Pure; may raise (the masker fails closed)."""

    def find(self, text: str) -> Iterable[Hit]: ...


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


# ---------------------------------------------------------------------------------------------------
# Candidate patterns and validators: a validator maps a match to (start, end, value), or None.

Span = tuple[int, int, str]
Validate = Callable[[re.Match[str]], "Span | None"]


def _scan(
    hits: list[Hit],
    kind: str,
    pattern: re.Pattern[str],
    check: Validate,
    text: str,
    pos: int = 0,
    end: int = -1,
) -> None:
    for m in pattern.finditer(text, pos, len(text) if end < 0 else end):
        if (span := check(m)) is not None:
            hits.append(Hit(span[0], span[1], kind, span[2]))


def _whole(m: re.Match[str]) -> Span:
    return m.start(), m.end(), m.group()


def _group1(m: re.Match[str]) -> Span:
    return m.start(1), m.end(1), m.group(1)


# An address is read from its "@" ("%40" in URLs): the domain forward, the local part backward, so only
# the neighbourhood of an "@" is ever scanned. "icon@2x.png" is an asset, not an address.
_DOMAIN = re.compile(r"(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+([^\W\d_]{2,63})(?![\w-])")
_LOCAL_PUNCTUATION: Final = frozenset("._%+-")
_NOT_TLDS: Final = frozenset({"png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "bmp", "css", "js", "map"})


def _emails(text: str, hits: list[Hit]) -> None:
    for sign in ("@", "%40"):
        at = text.find(sign)
        while at >= 0:
            _email_at(text, at, at + len(sign), hits)
            at = text.find(sign, at + 1)


def _email_at(text: str, at: int, after: int, hits: list[Hit]) -> None:
    domain = _DOMAIN.match(text, after)
    if domain is None or domain.group(1).lower() in _NOT_TLDS:
        return
    start, stop = at, max(0, at - 64)
    while start > stop and (text[start - 1].isalnum() or text[start - 1] in _LOCAL_PUNCTUATION):
        start -= 1
    # "see...maria@x.com": what follows the last ".." is the address; leading dots are punctuation.
    local = text[start:at]
    local = local[local.rfind("..") + 2 :].lstrip(".") if ".." in local else local.lstrip(".")
    if local:
        hits.append(Hit(at - len(local), domain.end(), "email", text[at - len(local) : domain.end()]))


# "+" and 8-15 digits; not a "+" inside a word, not followed by more digits or a decimal part.
_E164 = re.compile(r"\+(?<![\w+]\+)[1-9](?:[ .()-]{0,2}\d){7,14}(?!\d|[.,]\d)")
_DECIMALS = re.compile(r"[.,]\d{1,2}$")


def _e164(m: re.Match[str]) -> Span | None:
    if _DECIMALS.search(m.group()):  # "+1234567.89" is a signed amount
        return None
    return m.start(), m.end(), "+" + "".join(c for c in m.group() if c.isdigit())


_JWT = re.compile(r"eyJ(?<![\w-]eyJ)[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]*){2,4}(?![\w-])")


def _jwt(m: re.Match[str]) -> Span | None:
    return _whole(m) if jwt_header_valid(m.group()) else None


# The token68 of "Bearer <token>". Prose is not a credential ("missing Bearer token", "Bearer realm="):
# it needs 8+ characters and a non-letter, or 20+ letters.
_BEARER = re.compile(r"(?<![\w-])[Bb](?i:earer)\s+([A-Za-z0-9._~+/-]+=*)(?![\w\"=])")


def _bearer(m: re.Match[str]) -> Span | None:
    token = m.group(1)
    return None if len(token) < 8 or (token.isalpha() and len(token) < 20) else _group1(m)


_API_KEY = re.compile(
    r"(?<![\w-])(?:(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])"
    r"|gh[pousr]_[A-Za-z0-9]{36}(?![A-Za-z0-9])"
    r"|github_pat_[A-Za-z0-9_]{82}(?![A-Za-z0-9_])"
    r"|xox[abprs]-[A-Za-z0-9-]{10,}"
    r"|https://hooks\.slack\.com/services/[A-Za-z0-9/_-]+"
    r"|sk-[A-Za-z0-9_-]{20,}"
    r"|[sr]k_(?:live|test)_[A-Za-z0-9]{16,}"
    r"|AIza[A-Za-z0-9_-]{35}(?![A-Za-z0-9_-]))"
)


def _maybe_api_key(text: str) -> bool:
    # One-character tests cost a tenth of substring ones: gate the prefixes behind them.
    return (
        ("A" in text and ("AKIA" in text or "ASIA" in text or "AIza" in text))
        or ("_" in text and ("gh" in text or "github_pat_" in text or "k_live_" in text or "k_test_" in text))
        or "xox" in text
        or "sk-" in text
        or "hooks.slack.com" in text
    )


# Secrets known by their label, not their shape (AWS secret access keys, passwords): "label=value"
# anywhere, "label: value" only quoted (JSON/YAML), since prose says "password: too short".
_LABELLED = re.compile(
    r"(?i)(?<![a-z0-9])(?:(?:aws_?)?secret_?(?:access_?)?key|client_?secret|secret|password|passwd|pwd"
    r"|api_?key|access_?token|refresh_?token|auth_?token|private_?key)"
    r"""(?:["']?\s*=\s*["']?|["']\s*:\s*["']|:\s*["'])([^\s"'&,;<>]{4,})"""
)


def _maybe_labelled(text: str) -> bool:
    lowered = text.lower()
    return (
        "secret" in lowered
        or "passw" in lowered
        or "pwd" in lowered
        or "api" in lowered
        or "token" in lowered
        or "private" in lowered
    )


_CNPJ_ALNUM = re.compile(
    r"(?<![\w.,/-])[0-9A-Z]{2}\.[0-9A-Z]{3}\.[0-9A-Z]{3}/[0-9A-Z]{4}-\d{2}(?![\w]|[.,/-]\d)"
)
_CNPJ_ALNUM_HINT = re.compile(r"/[0-9A-Z]{4}-\d\d")


def _cnpj_alnum(m: re.Match[str]) -> Span | None:
    chars = "".join(c for c in m.group() if c.isalnum())
    return (m.start(), m.end(), chars) if cnpj_valid(chars) else None


_IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{1,4})?(?![\w]|\.\w)"
)


def _ipv6(m: re.Match[str]) -> Span | None:
    text = m.group()
    if text.endswith(":") and not text.endswith("::"):  # "2001:db8::1: connection refused"
        text = text[:-1]
    colons = text.count(":")
    # Clock times ("10:52:09") and "::" separators are the usual candidates; reject them cheaply.
    if ("::" not in text and colons != 7 and not (colons == 6 and "." in text)) or text.strip(":") == "":
        return None
    try:
        return m.start(), m.start() + len(text), str(ipaddress.IPv6Address(text))
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------------
# Numeric values. Lookarounds: "(?<![\w.,/-])" keeps a match from starting inside a word, a number, a
# decimal or a dashed id; "(?![\w]|[.,/-]\d)" keeps it from ending inside one.

# Where numeric PII can be: 7+ characters of digits and separators, starting and ending with a digit.
_RUN = re.compile(r"[0-9][0-9\s.()/-]{5,}[0-9]")
_NON_DIGITS = re.compile(r"[^0-9]+")


def _digits(text: str) -> str:
    # Chained replace() beats both str.translate and re.sub on these short runs; tabs and other
    # whitespace, rarer, fall through to the regex.
    if text.isdigit():
        return text
    text = (
        text.replace(".", "")
        .replace("-", "")
        .replace(" ", "")
        .replace("/", "")
        .replace("(", "")
        .replace(")", "")
    )
    return text if text.isdigit() else _NON_DIGITS.sub("", text)


_CPF = re.compile(r"(?<![\w.,-])\d{3}\.?\d{3}\.?\d{3}-?\d{2}(?![\w]|[.,/-]\d)")
_CNPJ = re.compile(r"(?<![\w.,-])\d{2}\.?\d{3}\.?\d{3}/?\d{4}-?\d{2}(?![\w]|[.,/-]\d)")
# National forms only; "DDD number" needs a dash or nothing inside the number, so runs of small numbers
# ("21 2345 6789") stay numbers. International ones are E.164.
_BR_PHONE = re.compile(
    r"(?<![\w+.,-])(?:\(\d{2}\)\s?(?:9\s?\d{4}|[2-5]\d{3})[\s-]?\d{4}"
    r"|\d{2}[\s-](?:9\s?\d{4}|[2-5]\d{3})-?\d{4}|\d{2}(?:9\d{8}|[2-5]\d{7}))(?![\w-]|[.,/]\d)"
)
# Four octets, not glued to a word, a longer dotted run, or a version token ("Chrome/120.0.0.0").
_IPV4 = re.compile(r"(?<![\w.])(?<!\w/)(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\w)")
# 13+ digits with single spaces or dashes between groups: where cards can be.
_CARD_RUN = re.compile(r"(?<![\w.,])\d(?:[ -]?\d){12,}(?![\w]|[.,]\d)")
_GROUP = re.compile(r"\d+")
_IBAN_HEAD = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}")
_IBAN_BODY = re.compile(r"[A-Za-z0-9]+(?: [A-Za-z0-9]+){0,12}")


def _cpf(m: re.Match[str]) -> Span | None:
    value = _digits(m.group())
    return (m.start(), m.end(), value) if cpf_valid(value) else None


def _cnpj(m: re.Match[str]) -> Span | None:
    value = _digits(m.group())
    return (m.start(), m.end(), value) if cnpj_valid(value) else None


def _br_phone(m: re.Match[str]) -> Span | None:
    value = _digits(m.group())
    return (m.start(), m.end(), "+55" + value) if br_phone_valid(value) else None


def _ipv4(m: re.Match[str]) -> Span | None:
    canonical = ipv4_canonical(m.group())
    return None if canonical is None else (m.start(), m.end(), canonical)


_DOTTED_QUAD = re.compile(r"([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})")


def ipv4_canonical(text: str) -> str | None:
    """ "a.b.c.d" with each octet <= 255, without leading zeros; None otherwise. Not ``ipaddress``: that
    refuses "010.000.000.001", which is still somebody's address, written with zeros."""
    quad = _DOTTED_QUAD.fullmatch(text)
    if quad is None:
        return None
    octets = [int(octet) for octet in quad.groups()]
    return ".".join(map(str, octets)) if max(octets) <= 255 else None


def _card_shape(lengths: list[int], seps: list[str]) -> bool:
    # One bare group, or printed groups 4-4-4-4(-3), 4-6-5, 4-6-4 with one kind of separator.
    return len(lengths) == 1 or (
        len(set(seps)) == 1
        and lengths[0] == 4
        and all(4 <= k <= 6 for k in lengths[1:-1])
        and lengths[-1] >= 3
    )


def _cards(text: str, start: int, end: int, hits: list[Hit]) -> None:
    """Cards in the digit runs of ``text[start:end]``: windows of whole groups, leftmost then longest,
    so "qty 3 4111 1111 1111 1111" finds the card and a window never splits a group."""
    for run in _CARD_RUN.finditer(text, start, end):
        groups = list(_GROUP.finditer(text, run.start(), run.end()))
        lengths = [g.end() - g.start() for g in groups]
        seps = [text[a.end() : b.start()] for a, b in zip(groups, groups[1:], strict=False)]
        i = 0
        while i < len(groups):
            if lengths[i] != 4 and not 13 <= lengths[i] <= 19:  # starts neither a printed nor a bare card
                i += 1
                continue
            last, total = i, lengths[i]
            while last + 1 < len(groups) and total + lengths[last + 1] <= 19:
                last += 1
                total += lengths[last]
            found = None
            for j in range(last, i - 1, -1):
                if total < 13:
                    break
                if _card_shape(lengths[i : j + 1], seps[i:j]):
                    digits = "".join(g.group() for g in groups[i : j + 1])
                    if card_valid(digits):
                        found = j
                        hits.append(Hit(groups[i].start(), groups[j].end(), "card", digits))
                        break
                total -= lengths[j]
            i = i + 1 if found is None else found + 1


def _ibans(text: str, hits: list[Hit]) -> None:
    """IBANs, compact or printed in groups ("DE89 3704 0044 0532 0130 00", "BR15 ... 814 P2").

    A candidate starts at a country-and-check head; the tokens after it are cut where the country's
    length says the IBAN ends, so a following word is never swallowed; mod 97 decides.
    """
    done = 0
    for head in _IBAN_HEAD.finditer(text):
        if head.start() < done:
            continue
        body = _IBAN_BODY.match(text, head.start())
        found = _iban_cut(body.group()) if body is not None else None
        if found is not None:
            done = head.start() + found[0]
            hits.append(Hit(head.start(), done, "iban", found[1]))


def _iban_cut(candidate: str) -> tuple[int, str] | None:
    """(length of the IBAN at the start of ``candidate``, compact upper-case IBAN), or None."""
    expected = IBAN_LENGTHS.get(candidate[:2].upper())
    if expected is None and not candidate[:2].isupper():
        return None
    tokens = candidate.split(" ")
    count = pos = 0
    cuts: list[tuple[int, int]] = []  # (characters so far, end offset) after each token
    for k, token in enumerate(tokens):
        count += len(token)
        pos += len(token) + (k > 0)
        if count > 34:
            break
        cuts.append((count, pos))
    for k in range(len(cuts) - 1, -1, -1):
        count, pos = cuts[k]
        if count < 15:
            return None
        if expected is None:
            # Unknown country: compact, or strictly 4-character groups, and upper-case.
            grouped = all(len(t) == 4 for t in tokens[:k]) and len(tokens[k]) <= 4
            if not ((k == 0 or grouped) and candidate[:pos].isupper()):
                continue
        elif count != expected:
            continue
        compact = candidate[:pos].replace(" ", "").upper()
        if iban_valid(compact):
            return pos, compact
    return None


class BuiltinDetector:
    """Every built-in kind in one pass over a text.

    Cheap tests decide which patterns run: a substring each text pattern cannot match without, and one
    regex for the numeric runs long enough to hold a CPF, CNPJ, card, phone, IBAN (its account part) or
    IPv4 address; the numeric patterns then run inside those runs alone.
    """

    __slots__ = ("_ip",)

    def __init__(self, *, ip_addresses: bool = True) -> None:
        self._ip = ip_addresses

    def __repr__(self) -> str:
        return f"BuiltinDetector(ip_addresses={self._ip})"

    def find(self, text: str) -> list[Hit]:
        hits: list[Hit] = []
        if len(text) < 20 and text.isalpha():  # a word: shorter than any key, no digits, "@", "." or "="
            return hits
        if "earer" in text or "EARER" in text:
            _scan(hits, "bearer", _BEARER, _bearer, text)
        if "eyJ" in text:
            _scan(hits, "jwt", _JWT, _jwt, text)
        if _maybe_api_key(text):
            _scan(hits, "apikey", _API_KEY, _whole, text)
        if _maybe_labelled(text):
            _scan(hits, "apikey", _LABELLED, _group1, text)
        if "@" in text or "%40" in text:
            _emails(text, hits)
        if "+" in text:
            _scan(hits, "phone", _E164, _e164, text)
        if "/" in text and _CNPJ_ALNUM_HINT.search(text):
            _scan(hits, "cnpj", _CNPJ_ALNUM, _cnpj_alnum, text)
        if self._ip and ("::" in text or text.count(":") >= 7):
            _scan(hits, "ip", _IPV6, _ipv6, text)
        long_run = False
        for run in _RUN.finditer(text):
            start, end = run.span()
            upto = min(len(text), end + 2)  # the look-aheads see two characters past the run
            digits = len(_digits(run.group()))
            if digits >= 10:
                long_run = True
                _scan(hits, "cnpj", _CNPJ, _cnpj, text, start, upto)
                _scan(hits, "cpf", _CPF, _cpf, text, start, upto)
                paren = start > 0 and text[start - 1] == "("  # "(11) 91234-5678" opens before the run
                _scan(hits, "phone", _BR_PHONE, _br_phone, text, start - paren, upto)
                if digits >= 13:
                    _cards(text, start, upto, hits)
            if self._ip and run.group().count(".") >= 3:
                _scan(hits, "ip", _IPV4, _ipv4, text, start, upto)
        if long_run:
            _ibans(text, hits)
        return hits


def default_detectors(*, ip_addresses: bool = True) -> tuple[Detector, ...]:
    """The built-in detectors (IPv4 and IPv6 only when ``ip_addresses``)."""
    return (BuiltinDetector(ip_addresses=ip_addresses),)
