"""PII redaction: every text is redacted before it leaves the trainer. Pure.

`redact(text)` replaces each detected span with a placeholder naming its kind (`[EMAIL]`,
`[PHONE]`, `[CARD]`, `[IBAN]`, `[IP]`, `[CREDENTIALS]`, `[SSN]`, `[NINO]`, `[NAME]`) and reports how many
of each it replaced, so every training example can say which redactions were applied.

Detection favours precision where a checksum or a registry rule exists, so that look-alikes
(order numbers, versions, dates, times) survive; the rules come from maintained libraries where
one does the job:

- payment cards: 12-19 digits (spaces or dashes allowed) with an issuer prefix (Visa,
  Mastercard, Amex, Discover, JCB, Diners, UnionPay, Maestro), a length that issuer uses, and
  the Luhn check (python-stdnum);
- IBANs: the country's registered structure and length and the ISO 13616 mod-97 check
  (python-stdnum);
- IPv4/IPv6: whatever `ipaddress` accepts (so 999.1.1.1 and 10:30:00 are not addresses), not
  preceded by a letter (so `v1.2.3.4` stays a version);
- US SSNs: AAA-GG-SSSS with dashes or spaces that python-stdnum accepts (no 000, 666 or 9xx
  area, 00 group or 0000 serial, and not the numbers printed on sample cards and in ads); UK
  National Insurance numbers with HMRC's prefix rules;
- URLs with credentials: the `user:password@` part of `scheme://user:password@host`;
- phone numbers: what Google's libphonenumber (`phonenumbers`) finds valid and written in its
  country's grouping, with a country code from anywhere or without one in `PHONE_REGIONS`; not
  a bare run of digits (usually an order or ticket number), not an SSN's shape, and not one
  group of a longer run of digit groups.

- names: only where the text says it is a person's name, by the cues support chats use
  ("my name is ...", "this is ...", "I'm ...", "Hi ...,", "Dear ...", sign-offs such as
  "Regards, ...", titles such as "Mrs. ...", "my husband ...", "spoke with ...", "under the
  name ..."). No dependency does this well offline: a statistical English model (spaCy's small
  English pipeline) found 0.81 of the names with 0.81 precision on the labeled set and cost
  500 times as much per text; the cues find most of the names people write about themselves
  and others in a support chat, and leave brands, products and places alone (see the tests).
"""

from __future__ import annotations

import bisect
import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import phonenumbers
from stdnum import iban, luhn
from stdnum.us import ssn

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
_URL_USERINFO = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]{0,31}://(?P<userinfo>[^\s/?#@:]+:[^\s/?#@]*)@")
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
_DIGIT_BEFORE = re.compile(r"\d[ .-]$")
_DIGIT_AFTER = re.compile(r"[ .-]\d")
# A US SSN's shape (3-2-4 digits, one separator): never taken for a phone number, valid or not.
_SSN_SHAPE = re.compile(r"^\d{3}([- ])\d{2}\1\d{4}$")
# Where a number written without a country code is looked up. A number counts when it is valid
# in one of these and written with that country's grouping.
PHONE_REGIONS = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "BE", "CH", "AT", "IE", "AU", "CA",
                 "IN", "JP", "BR", "MX")
_PHONE_MIN_DIGITS = 7
_PHONE_MAX_NATIONAL = 200
_DATE_SHAPE = re.compile(r"^(?:\d{4}([-/.])\d{1,2}\1\d{1,2}|\d{1,2}([-/.])\d{1,2}\2\d{2,4})$")
_PHONE_CANDIDATE = re.compile(
    r"(?<![\w+])(?:\+|00)?\(?\d[\d ()./-]{5,30}\d(?: ?(?:ext\.?|x) ?\d{1,6})?(?![\w])"
)

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
    return bool(luhn.is_valid(digits))


def iban_valid(compact: str) -> bool:
    """ISO 13616 as python-stdnum checks it: the country's registered structure and length,
    and the mod-97 check (not each country's own bank-code rules, which would miss the IBANs of
    banks its registry does not list)."""
    return bool(iban.is_valid(compact, check_country=False))


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
        # The pattern may run on into the next word (or IBAN): the IBAN is the shortest run of
        # it that validates (a country's length is fixed), and the search goes on after it.
        position = match.start() + 1
        compact = ""
        for index in range(match.start(), match.end()):
            if text[index] == " ":
                continue
            compact += text[index]
            if len(compact) >= 15 and iban_valid(compact):
                position = index + 1
                yield match.start(), index + 1, "IBAN"
                break


def _ssns(text: str) -> Iterator[Span]:
    for match in _SSN.finditer(text):
        if ssn.is_valid(match.group().replace(" ", "-")):
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
    """Numbers Google's libphonenumber finds valid, in their country's grouping: one with a
    country code wherever it is from, one without in any of `PHONE_REGIONS`.

    libphonenumber reads only the runs of digits and separators a phone number could be (a
    quick pattern first): a run with a country code once, a national one in each region, and
    not a bare run of digits or a date. A text with more national candidates than
    `_PHONE_MAX_NATIONAL` (a table of numbers) has only its first ones checked against every
    region, which bounds the cost of any text."""
    national = 0
    for candidate in _PHONE_CANDIDATE.finditer(text):
        piece = candidate.group()
        if sum(char.isdigit() for char in piece) < _PHONE_MIN_DIGITS:
            continue
        regions: tuple[str | None, ...]
        if piece.startswith("+"):
            regions = (None,)
        elif piece.startswith("00"):
            regions = ("DE",)  # 00 is the international prefix there, as in most of the world
        elif piece.isdigit() or _DATE_SHAPE.match(piece) or national >= _PHONE_MAX_NATIONAL:
            continue
        else:
            national += 1
            regions = PHONE_REGIONS
        offset = candidate.start()
        for region in regions:
            found = [
                match for match in phonenumbers.PhoneNumberMatcher(
                    piece, region, leniency=phonenumbers.Leniency.STRICT_GROUPING)
                if _stands_alone(text, offset + match.start, offset + match.end, match.raw_string)
            ]
            for match in found:
                yield offset + match.start, offset + match.end, "PHONE"
            if found:
                break


def _stands_alone(text: str, start: int, end: int, raw: str) -> bool:
    """A phone number is written as one: not a bare run of digits (usually an order or ticket
    number), not an SSN's shape, and not one group of a longer run of digit groups (an account
    or a card)."""
    if raw.isdigit() or _SSN_SHAPE.match(raw):
        return False
    return not (_DIGIT_BEFORE.search(text, max(0, start - 2), start)
                or _DIGIT_AFTER.match(text, end))


# Bounded repetitions, so a long run of capitalized words cannot make matching quadratic.
_NAME_WORD = r"[A-Z][a-zà-ÿ]{1,24}(?:['-][A-Za-zà-ÿ]{1,24}){0,2}"
_NAME = rf"(?:[A-Z]\. )?{_NAME_WORD}(?: {_NAME_WORD}){{0,2}}"
_LOWERCASE_NAME = r"[a-zà-ÿ]{1,24}(?:['-][a-zà-ÿ]{1,24}){0,2}(?: [a-zà-ÿ]{1,24})?"
_RELATIONS = (
    r"husband|wife|partner|son|daughter|mother|mom|mum|father|dad|friend|colleague|neighbou?r"
    r"|landlord|boss|brother|sister|manager|technician|agent|assistant|accountant|CEO|CTO"
)
# Capitalized words that follow the cues without being names.
_NOT_NAMES = frozenset({
    "I", "The", "A", "An", "This", "That", "It", "We", "You", "He", "She", "They", "Please",
    "Thanks", "Hi", "Hello", "Dear", "Team", "Support", "Sir", "Madam", "All", "There",
    "Everyone", "Again", "Mr", "Mrs", "Ms", "Miss", "Dr", "Prof", "Monday", "Tuesday",
    "Wednesday", "Thursday", "Friday", "Saturday", "Sunday", "January", "February", "March",
    "April", "May", "June", "July", "August", "September", "October", "November", "December",
})
_NAME_CUES = tuple(re.compile(pattern) for pattern in (
    rf"\b(?:Mr|Mrs|Ms|Miss|Dr|Prof)\.?\s+(?P<name>{_NAME})",
    rf"\b(?:[Mm]y name is|[Mm]y name's|[Nn]ame:|under the name|[Aa]ccount (?:holder|name)"
    rf"(?: to| is|:)?)\s+(?P<name>{_NAME})",
    # Lowercase only after the plainest cue: "this is fine" and "its way" are not names.
    rf"\b[Mm]y name(?: is|'s)\s+(?P<name>{_LOWERCASE_NAME})(?=[,.!?]| and\b|$)",
    rf"\b(?:I'm|I am|[Tt]his is)\s+(?P<name>{_NAME})(?=[,.!?]| from\b| here\b| and\b"
    r"| following\b)",
    rf"(?:^|[.!?]\s+)(?P<name>{_NAME}) here\b",
    rf"\b(?:Hi|Hello|Hey|Dear|Thanks|Thank you|Cheers|Regards|Best regards|Kind regards"
    rf"|Sincerely|Best|Many thanks),?\s+(?P<name>{_NAME})(?=\s*[,.!?]|\s*$)",
    rf"\b(?:[Mm]y|[Yy]our|[Oo]ur|the)\s+(?:{_RELATIONS}),?\s+(?P<name>{_NAME})",
    rf"\b(?:called|named|spoke with|spoke to|talked to|forward this to|[Aa]sk|[Tt]ell"
    rf"|signed for by|[Oo]rder for|behalf of my \w+,?)\s+(?P<name>{_NAME})(?=\s|[,.!?]|$)",
    rf"\b(?P<name>{_NAME}) and (?P<other>{_NAME}) (?:both|need|are|were|said|want)",
    rf"\b(?:[Cc]an|[Cc]ould) (?P<name>{_NAME}) (?:pick|come|call|sign|collect)",
))


def _names(text: str) -> Iterator[Span]:
    for cue in _NAME_CUES:
        for match in cue.finditer(text):
            for group in ("name", "other"):
                if match.groupdict().get(group) and match.group(group).split()[0] not in _NOT_NAMES:
                    yield match.start(group), match.end(group), "NAME"


# Earlier detectors win overlaps: a checksum-validated card beats the phone pattern that
# the same digits also fit, and the credentials of a URL beat the email they resemble.
DETECTORS: tuple[Callable[[str], Iterator[Span]], ...] = (
    _url_credentials, _emails, _ibans, _cards, _ssns, _ninos, _ip_addresses, _phones, _names,
)


def find_pii(text: str) -> list[Span]:
    """Non-overlapping PII spans in `text`, in order of position."""
    starts: list[int] = []  # of the chosen spans, kept sorted
    chosen: list[Span] = []
    for detector in DETECTORS:
        for start, end, kind in detector(text):
            index = bisect.bisect_right(starts, start)
            # Free when the span before ends by `start` and the one after starts at `end` or later.
            if index and chosen[index - 1][1] > start:
                continue
            if index < len(chosen) and chosen[index][0] < end:
                continue
            starts.insert(index, start)
            chosen.insert(index, (start, end, kind))
    return chosen


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


class Redactor:
    """Redacts texts, chat messages (tool-call arguments too) and JSON values, and tallies what
    it replaced, for one example's provenance."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def text(self, value: str) -> str:
        result = redact(value)
        self.counts.update(dict(result.counts))
        return result.text

    def messages(self, messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        return [self._message(message) for message in messages]

    def _message(self, message: dict[str, Any]) -> dict[str, Any]:
        redacted = message | {"content": self.text(message.get("content") or "")}
        if message.get("tool_calls"):
            redacted["tool_calls"] = [
                call | {"function": call["function"]
                        | {"arguments": self.text(str(call["function"].get("arguments", "")))}}
                for call in message["tool_calls"]
            ]
        return redacted

    def json(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.json(item) for item in value]
        if isinstance(value, dict):
            return {key: self.json(item) for key, item in value.items()}
        return value
