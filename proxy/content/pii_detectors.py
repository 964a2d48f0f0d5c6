"""PII detectors: precompiled candidate patterns plus real validators (pure; no I/O).

A detector yields the :class:`Hit` s it finds in a text and never looks at other detectors' hits; the
masker (:mod:`proxy.content.pii`) resolves overlaps. Patterns are loose where the validator is strong (check
digits, Luhn, mod 97, ``ipaddress``, a JWT header) and strict about boundaries: a digit detector never
matches inside a longer run of digits or word characters, so order ids, hex ids, UUIDs, versions and
decimals keep their digits. For speed, one regex finds the numeric runs of a line and the numeric
patterns run inside those alone; text detectors first test for a substring they cannot match without.
Detectors may raise on inputs nobody anticipated: the masker fails closed around them.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from typing import Final, NamedTuple, Protocol

from proxy.content.pii_validators import (
    IBAN_LENGTHS,
    br_phone_valid,
    card_valid,
    cnpj_valid,
    cpf_valid,
    iban_valid,
    jwt_header_valid,
)


class Hit(NamedTuple):
    """``text[start:end]`` is a value of ``kind``; ``value`` is what gets hashed (before normalization)."""

    start: int
    end: int
    kind: str
    value: str


class Detector(Protocol):
    """Finds personal data in a text. Pure; may raise (the masker fails closed)."""

    def find(self, text: str) -> Iterable[Hit]: ...


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
    *,
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
    return m.start(), m.end(), "+" + _digits(m.group())


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
    if "A" in text and ("AKIA" in text or "ASIA" in text or "AIza" in text):
        return True
    if "_" in text and ("gh" in text or "github_pat_" in text or "k_live_" in text or "k_test_" in text):
        return True
    return "xox" in text or "sk-" in text or "hooks.slack.com" in text


# Secrets known by their label, not their shape (AWS secret access keys, passwords): "label=value"
# anywhere, "label: value" only quoted (JSON/YAML), since prose says "password: too short".
_LABELLED = re.compile(
    r"(?i)(?<![a-z0-9])(?:(?:aws_?)?secret_?(?:access_?)?key|client_?secret|secret|password|passwd|pwd"
    r"|api_?key|access_?token|refresh_?token|auth_?token|private_?key)"
    r"""(?:["']?\s*=\s*["']?|["']\s*:\s*["']|:\s*["'])([^\s"'&,;<>]{4,})"""
)


def _maybe_labelled(text: str) -> bool:
    low = text.lower()
    if "secret" in low or "passw" in low or "pwd" in low:
        return True
    return "api" in low or "token" in low or "private" in low


_CNPJ_ALNUM = re.compile(
    r"(?<![\w.,-])[0-9A-Z]{2}\.[0-9A-Z]{3}\.[0-9A-Z]{3}/[0-9A-Z]{4}-\d{2}(?![\w]|[.,/-]\d)"
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
    # replace() beats str.translate and re.sub on these short runs; rarer whitespace falls to the regex.
    if text.isdigit():
        return text
    for separator in ".- /()":
        text = text.replace(separator, "")
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
    """The dotted quad without leading zeros, or None when an octet is above 255. Not ``ipaddress``: it
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
                _scan(hits, "cnpj", _CNPJ, _cnpj, text, pos=start, end=upto)
                _scan(hits, "cpf", _CPF, _cpf, text, pos=start, end=upto)
                paren = start > 0 and text[start - 1] == "("  # "(11) 91234-5678" opens before the run
                _scan(hits, "phone", _BR_PHONE, _br_phone, text, pos=start - paren, end=upto)
                if digits >= 13:
                    _cards(text, start, upto, hits)
            if self._ip and run.group().count(".") >= 3:
                _scan(hits, "ip", _IPV4, _ipv4, text, pos=start, end=upto)
        if long_run:
            _ibans(text, hits)
        return hits


def default_detectors(*, ip_addresses: bool = True) -> tuple[Detector, ...]:
    """The built-in detectors (IPv4 and IPv6 only when ``ip_addresses``)."""
    return (BuiltinDetector(ip_addresses=ip_addresses),)
