"""PII redaction: every text is redacted before it leaves the trainer. Pure.

`redact(text)` replaces each detected span with a placeholder naming its kind (`[EMAIL]`,
`[PHONE]`, `[CARD]`, `[IBAN]`, `[IP]`, `[CREDENTIALS]`, `[SSN]`, `[NINO]`) and reports how many
of each it replaced, so every training example can say which redactions were applied.

Detection favours precision where a checksum or a registry rule exists, so that look-alikes
(order numbers, versions, dates, times) survive:

- payment cards: 12-19 digits (spaces or dashes allowed) with an issuer prefix (Visa,
  Mastercard, Amex, Discover, JCB, Diners, UnionPay, Maestro), a length that issuer uses, and
  the Luhn check;
- IBANs: a known country's exact length and the ISO 13616 mod-97 check;
- IPv4/IPv6: whatever `ipaddress` accepts (so 999.1.1.1 and 10:30:00 are not addresses), not
  preceded by a letter (so `v1.2.3.4` stays a version);
- US SSNs: AAA-GG-SSSS with separators and the SSA's never-issued ranges excluded (000, 666 and
  9xx areas, 00 groups, 0000 serials); UK National Insurance numbers with HMRC's prefix rules;
- URLs with credentials: the `user:password@` part of `scheme://user:password@host`;
- phone numbers have no checksum: an international number (`+` and 8-15 digits), or a national
  one written in groups (`(415) 555-0132`, `415-555-0132`, `030 1234 5678`), 9-15 digits; a bare
  run of digits is not taken for a phone number (it is usually an order or ticket number).

Names are not detected: no dependency does that well offline without a language model.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

Span = tuple[int, int, str]  # start, end, kind


@dataclass(frozen=True)
class Redacted:
    """A redacted text and how many spans of each kind were replaced (kinds sorted)."""

    text: str
    counts: tuple[tuple[str, int], ...]

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(kind for kind, _ in self.counts)


_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}(?![\w-])"
)
_URL_USERINFO = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://(?P<userinfo>[^\s/?#@:]+:[^\s/?#@]*)@")
_CARD = re.compile(r"(?<![\w-])\d(?:[ -]?\d){11,18}(?![\w-])")
_IBAN = re.compile(r"(?<![\w])[A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]){11,30}")
_SSN = re.compile(r"(?<![\w-])(?!000|666|9\d\d)\d{3}([- ])(?!00)\d{2}\1(?!0000)\d{4}(?![\w-])")
_NINO = re.compile(
    r"(?<![\w])(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]"
    r" ?\d{2} ?\d{2} ?\d{2} ?[A-D](?![\w])"
)
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.])")
_IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{0,4})(?![\w:])"
)
_PHONE_INTERNATIONAL = re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,5}\)?){2,6}(?![\w])")
_PHONE_NATIONAL = re.compile(
    r"(?<![\w-])(?:\(\d{2,5}\) ?\d{3,4}[ .-]?\d{3,4}"
    r"|\d{3}[.-]\d{3}[.-]\d{4}"
    r"|\d{3} \d{3} \d{4}"
    r"|0\d{2,4}[ -]\d{3,4}[ -]?\d{3,4})(?![\w-])"
)

_DIGIT_BEFORE = re.compile(r"\d[ .-]$")
_DIGIT_AFTER = re.compile(r"[ .-]\d")

# ISO 13616 registry lengths of the countries whose IBANs are most often seen.
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20,
    "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18,
    "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IS": 26, "IT": 27, "JO": 30,
    "KW": 30, "KZ": 20, "LB": 28, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24,
    "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28,
    "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SE": 24, "SI": 19, "SK": 24,
    "SM": 27, "TN": 24, "TR": 26, "UA": 29, "VG": 24, "XK": 20,
}
# Issuer prefixes and the card lengths each issues (first match wins).
_CARD_BRANDS: tuple[tuple[re.Pattern[str], frozenset[int]], ...] = (
    (re.compile(r"^4"), frozenset({13, 16, 19})),  # Visa
    (re.compile(r"^(?:5[1-5]|2(?:22[1-9]|2[3-9]\d|[3-6]\d\d|7[01]\d|720))"), frozenset({16})),
    (re.compile(r"^3[47]"), frozenset({15})),  # American Express
    (re.compile(r"^(?:6011|64[4-9]|65)"), frozenset(range(16, 20))),  # Discover
    (re.compile(r"^35(?:2[89]|[3-8]\d)"), frozenset(range(16, 20))),  # JCB
    (re.compile(r"^(?:30[0-5]|3[689])"), frozenset(range(14, 20))),  # Diners Club
    (re.compile(r"^62"), frozenset(range(16, 20))),  # UnionPay
    (re.compile(r"^(?:5[06-9]|6[37])"), frozenset(range(12, 20))),  # Maestro
)


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def iban_valid(compact: str) -> bool:
    """ISO 13616: the country's length, and the rearranged number is 1 modulo 97."""
    compact = compact.upper()
    if IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact.isalnum():
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def _emails(text: str) -> Iterator[Span]:
    for match in _EMAIL.finditer(text):
        yield match.start(), match.end(), "EMAIL"


def _url_credentials(text: str) -> Iterator[Span]:
    for match in _URL_USERINFO.finditer(text):
        yield match.start("userinfo"), match.end("userinfo"), "CREDENTIALS"


def card_valid(digits: str) -> bool:
    """An issuer prefix, a length that issuer uses, and the Luhn check."""
    lengths = next(
        (lengths for prefix, lengths in _CARD_BRANDS if prefix.match(digits)), None
    )
    return lengths is not None and len(digits) in lengths and luhn_valid(digits)


def _cards(text: str) -> Iterator[Span]:
    for match in _CARD.finditer(text):
        if card_valid(re.sub(r"[ -]", "", match.group())):
            yield match.start(), match.end(), "CARD"


def _ibans(text: str) -> Iterator[Span]:
    position = 0
    while match := _IBAN.search(text, position):
        # The pattern may run on into the next word (or IBAN): cut at the country's length,
        # and search on from where the IBAN really ends.
        position = match.start() + 1
        expected = IBAN_LENGTHS.get(match.group()[:2].upper())
        if expected is None:
            continue
        compact, end = "", match.start()
        for index in range(match.start(), match.end()):
            if text[index] != " ":
                compact += text[index]
                end = index + 1
                if len(compact) == expected:
                    break
        if iban_valid(compact):
            position = end
            yield match.start(), end, "IBAN"


def _ssns(text: str) -> Iterator[Span]:
    for match in _SSN.finditer(text):
        yield match.start(), match.end(), "SSN"


def _ninos(text: str) -> Iterator[Span]:
    for match in _NINO.finditer(text):
        yield match.start(), match.end(), "NINO"


def _ip_addresses(text: str) -> Iterator[Span]:
    # IPv6 first, so an IPv4-mapped address is one span; an IPv6 candidate without a digit
    # (`a::b`, `dead::beef`) is far more often code than an address.
    for pattern in (_IPV6, _IPV4):
        for match in pattern.finditer(text):
            candidate = match.group()
            if not any(char.isdigit() for char in candidate):
                continue
            try:
                ipaddress.ip_address(candidate)
            except ValueError:
                continue
            yield match.start(), match.end(), "IP"


def _phones(text: str) -> Iterator[Span]:
    for pattern in (_PHONE_INTERNATIONAL, _PHONE_NATIONAL):
        for match in pattern.finditer(text):
            digits = sum(char.isdigit() for char in match.group())
            low = 8 if pattern is _PHONE_INTERNATIONAL else 9
            # A phone number stands alone: digit groups that run on are an account or a card.
            runs_on = _DIGIT_BEFORE.search(text, 0, match.start()) or _DIGIT_AFTER.match(
                text, match.end()
            )
            if low <= digits <= 15 and not runs_on:
                yield match.start(), match.end(), "PHONE"


# Earlier detectors win overlaps: a checksum-validated card beats the phone pattern that
# the same digits also fit, and the credentials of a URL beat the email they resemble.
DETECTORS: tuple[Callable[[str], Iterator[Span]], ...] = (
    _url_credentials, _emails, _ibans, _cards, _ssns, _ninos, _ip_addresses, _phones,
)


def find_pii(text: str) -> list[Span]:
    """Non-overlapping PII spans in `text`, in order of position."""
    chosen: list[Span] = []
    for detector in DETECTORS:
        for start, end, kind in detector(text):
            if all(end <= other_start or start >= other_end for other_start, other_end, _ in chosen):
                chosen.append((start, end, kind))
    return sorted(chosen)


def redact(text: str) -> Redacted:
    """Replaces every PII span with `[KIND]`; the counts say what was replaced."""
    spans = find_pii(text)
    if not spans:
        return Redacted(text, ())
    parts: list[str] = []
    counts: dict[str, int] = {}
    cursor = 0
    for start, end, kind in spans:
        parts.append(text[cursor:start])
        parts.append(f"[{kind}]")
        counts[kind] = counts.get(kind, 0) + 1
        cursor = end
    parts.append(text[cursor:])
    return Redacted("".join(parts), tuple(sorted(counts.items())))
