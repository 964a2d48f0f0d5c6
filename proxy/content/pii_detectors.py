"""PII detectors: precompiled candidate patterns plus real validators (pure; no I/O).

A detector yields the :class:`Hit` s it finds in a text and never looks at other detectors' hits; the
masker (:mod:`proxy.content.pii`) resolves overlaps. Patterns are loose where the validator is strong (check
digits, Luhn, mod 97, ``ipaddress``, a JWT header) and strict about boundaries: a digit detector never
matches inside a longer run of digits or word characters, so order ids, hex ids, UUIDs, versions and
decimals keep their digits, while the separators of paths, queries and lists (``/ ? & = , ; :`` and
spaces) end a value whatever follows them ("/users/12345678909/42"). For speed, one regex finds the
numeric runs of a line and the numeric patterns run inside those alone; text detectors first test for a
substring they cannot match without.
Detectors may raise on inputs nobody anticipated: the masker fails closed around them.
"""

from __future__ import annotations

import bisect
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


# "+" and 8-15 digits; not a "+" inside a word, not followed by more digits or a decimal part (a comma
# after that many digits separates values, as for the national numbers below). It never ends in one
# either: "+1234567.89" is a signed amount, and in "+61475823 192.0.2.81" the number stops before the
# address, where it would stop if the address were not there.
_E164 = re.compile(r"\+(?<![\w+]\+)[1-9](?:[ .()-]{0,2}\d){7,14}(?<!\.\d)(?<!\.\d\d)(?!\d|\.\d)")


def _e164(m: re.Match[str]) -> Span:
    return m.start(), m.end(), "+" + _digits(m.group())


_JWT = re.compile(r"eyJ(?<![\w-]eyJ)[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]*){2,4}(?![\w-])")


def _jwt(m: re.Match[str]) -> Span | None:
    return _whole(m) if jwt_header_valid(m.group()) else None


# The token68 of "Bearer <token>". Prose is not a credential ("missing Bearer token", "Bearer realm=",
# "Bearer error_uri="): it needs 8+ characters and something but letters and "_", or 20+ of those. A "="
# the padding cannot account for starts a neighbour ("Bearer <token>=12345678909").
_BEARER = re.compile(r"(?<![\w-])[Bb](?i:earer)\s+([A-Za-z0-9._~+/-]+=*)(?![\w\"])")


def _bearers(text: str, hits: list[Hit]) -> None:
    # "/" is a token68 character, so a token can run into the next "Bearer" ("<token>/Bearer <token>"):
    # each search resumes inside the last token, not after it.
    m = _BEARER.search(text)
    while m is not None:
        token = m.group(1)
        if len(token) >= 8 and (len(token) >= 20 or not token.replace("_", "").isalpha()):
            hits.append(Hit(m.start(1), m.end(1), "bearer", token))
        m = _BEARER.search(text, m.start(1))


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


_CNPJ_ALNUM = re.compile(r"(?<![\w.-])[0-9A-Z]{2}\.[0-9A-Z]{3}\.[0-9A-Z]{3}/[0-9A-Z]{4}-\d{2}(?![\w]|[.-]\d)")
_CNPJ_ALNUM_HINT = re.compile(r"/[0-9A-Z]{4}-\d\d")


def _cnpj_alnum(m: re.Match[str]) -> Span | None:
    chars = "".join(c for c in m.group() if c.isalnum())
    return (m.start(), m.end(), chars) if cnpj_valid(chars) else None


# Where IPv6 addresses can be: whole runs of hex digits, colons and dots (the look-behind keeps a hex blob
# from being rescanned from each of its characters).
_IPV6_RUN = re.compile(r"(?<![0-9A-Fa-f.:])[0-9A-Fa-f.:]{2,}")
_IPV6_MAX = 45  # "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
_GAP_BEFORE_NUMBER = re.compile(r"::(?=\d{5,}(?!\w))")  # "2001:db8::11912345678": see _ipv6s


def _word_char(c: str) -> bool:
    return c == "_" or c.isalnum()


def _ipv6s(text: str, hits: list[Hit]) -> None:
    """IPv6 addresses, cut out of the runs of hex digits, colons and dots at field boundaries only.

    An address starts where its run does (past leading dots, and not when a word is glued to it: "std::")
    or just after a colon ("client_ip:2001:db8::1", "11912345678:2001:db8::1"). It ends where its run does
    (before trailing dots, and not when a word follows), just before a colon ("[2001:db8::1]:443",
    "2001:db8::1: refused"), or just after a "::" that a number too long to be a group follows:
    ``ipaddress`` refuses "2001:db8::11912345678" (a group holds 4 hex digits), and reading 2001:db8::1191
    out of it would cut the number in two, so that is the address 2001:db8:: and then a phone. At each
    start the longest valid address wins; a later start may find one that overlaps it and goes further
    ("2001:db8::1:2001:db8::2" holds two, sharing a colon), and the masker merges what overlaps.
    """
    for run in _IPV6_RUN.finditer(text):
        chunk = run.group()
        if "::" not in chunk and chunk.count(":") < 6:  # clock times, "a:b" labels, MAC addresses
            continue
        first, last = run.start(), run.end()
        colons = [first + i for i, c in enumerate(chunk) if c == ":"]
        starts = [at + 1 for at in colons]
        ends = colons + [gap.end() for gap in _GAP_BEFORE_NUMBER.finditer(text, first, last + 1)]
        if first == 0 or not _word_char(text[first - 1]):
            starts.insert(0, first + len(chunk) - len(chunk.lstrip(".")))
        if last == len(text) or not _word_char(text[last]):
            ends.append(last - (len(chunk) - len(chunk.rstrip("."))))
        ends.sort()
        reach = 0  # where the last address found ends: a later one may overlap it, but must go past it
        for start in starts:
            if reach >= ends[-1]:
                break
            head = text[start : start + 3]
            if head[:1] == ":" and (head[:2] != "::" or head == ":::"):
                continue  # an address starts with a hex digit or with one "::"
            # An address has 7 colons and one "::" at most: end by the 8th colon and the second "::", so
            # a run of thousands of colons costs a few candidates per start.
            limit = start + _IPV6_MAX
            if (eighth := bisect.bisect_left(colons, start) + 7) < len(colons):
                limit = min(limit, colons[eighth])
            if (gap := text.find("::", start, limit)) >= 0 and (
                again := text.find("::", gap + 1, limit)
            ) >= 0:
                limit = again + 1
            for k in range(bisect.bisect_right(ends, limit) - 1, -1, -1):
                if ends[k] <= max(start, reach):
                    break
                if _ipv6_valid(candidate := text[start : ends[k]]):
                    hits.append(Hit(start, ends[k], "ip", candidate))  # normalize() compresses it
                    reach = ends[k]
                    break


def _ipv6_valid(candidate: str) -> bool:
    # Cheap refusals first, so that runs of colons seldom reach ipaddress (which refuses by raising).
    if (candidate[0] == ":" and candidate[:2] != "::") or (candidate[-1] == ":" and candidate[-2:] != "::"):
        return False
    if "::" in candidate:
        if candidate.count("::") > 1 or candidate.strip(":") == "":  # "::" alone separates, "a :: b"
            return False
    elif (colons := candidate.count(":")) != 7 and not (colons == 6 and "." in candidate):
        return False
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------------------------------
# Numeric values. Lookarounds: "(?<![\w.-])" keeps a match from starting inside a word, a number, a
# dotted number or a dashed id; "(?![\w]|[.-]\d)" keeps it from ending inside one. A comma or a slash
# belongs to none of these numbers (the CNPJ's own "/" is inside its pattern), so next to one it
# separates values: "/users/12345678909/42", "12345678909,12345678909". Nobody prints an amount with
# 10+ digits on one side of a decimal comma, so that comma is not read as one.

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


_CPF = re.compile(r"(?<![\w.-])\d{3}\.?\d{3}\.?\d{3}-?\d{2}(?![\w]|[.-]\d)")
_CNPJ = re.compile(r"(?<![\w.-])\d{2}\.?\d{3}\.?\d{3}/?\d{4}-?\d{2}(?![\w]|[.-]\d)")
# National forms only; "DDD number" needs a dash or nothing inside the number, so runs of small numbers
# ("21 2345 6789") stay numbers. International ones are E.164.
_BR_PHONE = re.compile(
    r"(?<![\w+.-])(?:\(\d{2}\)\s?(?:9\s?\d{4}|[2-5]\d{3})[\s-]?\d{4}"
    r"|\d{2}[\s-](?:9\s?\d{4}|[2-5]\d{3})-?\d{4}|\d{2}(?:9\d{8}|[2-5]\d{7}))(?![\w-]|\.\d)"
)
# Four octets, not glued to a word or a longer dotted run.
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\w)")
# A product token before a version ("Chrome/120.0.0.0"): a short name of letters that starts a word.
# After any other "x/" four octets are an address ("/users/10.0.0.1", "maria@x.com/10.0.0.1").
_PRODUCT = re.compile(r"(?:^|(?<=[\s(\"';]))[A-Za-z][A-Za-z-]{1,15}/\Z")
# 13+ digits with single spaces or dashes between groups: where cards can be.
_CARD_RUN = re.compile(r"(?<![\w.])\d(?:[ -]?\d){12,}(?![\w]|\.\d)")
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
    start = m.start()
    if start and m.string[start - 1] == "/" and _PRODUCT.search(m.string, max(0, start - 17), start):
        return None
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
            _bearers(text, hits)
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
        if self._ip and ("::" in text or text.count(":") >= 6):
            _ipv6s(text, hits)
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
