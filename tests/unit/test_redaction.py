"""PII redaction over a labeled set of PII strings and non-PII look-alikes.

The set is small and hand-made: each case is a sentence with the exact PII substrings it holds
and their kind. Recall counts labeled PII found with the right kind; precision counts detected
spans that are labeled PII. Figures on this set (asserted below): recall 1.00, precision 1.00.
The hand-written phone patterns this replaced found 2 of the 9 national and extension formats
at the end of the set; Google's libphonenumber (the `phonenumbers` package) finds all 9.
"""

from __future__ import annotations

import pytest

from services.trainer.examples.redaction import find_pii, iban_valid, luhn_valid, redact

# (text, [(kind, pii substring), ...])
LABELED: list[tuple[str, list[tuple[str, str]]]] = [
    ("Mail me at jane.doe@example.com please", [("EMAIL", "jane.doe@example.com")]),
    ("cc: j.smith+promo@mail.co.uk, thanks", [("EMAIL", "j.smith+promo@mail.co.uk")]),
    ("Contact: ops-team@acme-corp.io.", [("EMAIL", "ops-team@acme-corp.io")]),
    ("My card is 4111 1111 1111 1111, exp 12/28", [("CARD", "4111 1111 1111 1111")]),
    ("charge 5500-0000-0000-0004 now", [("CARD", "5500-0000-0000-0004")]),
    ("amex 3782 822463 10005", [("CARD", "3782 822463 10005")]),
    ("discover 6011111111111117.", [("CARD", "6011111111111117")]),
    ("jcb 3530111333300000 and mc 2223003122003222",
     [("CARD", "3530111333300000"), ("CARD", "2223003122003222")]),
    ("IBAN DE89 3704 0044 0532 0130 00 for the refund",
     [("IBAN", "DE89 3704 0044 0532 0130 00")]),
    ("pay GB82 WEST 1234 5698 7654 32 today", [("IBAN", "GB82 WEST 1234 5698 7654 32")]),
    ("FR14 2004 1010 0505 0001 3M02 606", [("IBAN", "FR14 2004 1010 0505 0001 3M02 606")]),
    ("account NL91ABNA0417164300", [("IBAN", "NL91ABNA0417164300")]),
    ("es ES9121000418450200051332 ch CH9300762011623852957",
     [("IBAN", "ES9121000418450200051332"), ("IBAN", "CH9300762011623852957")]),
    ("Call +1 415 555 0132 tomorrow", [("PHONE", "+1 415 555 0132")]),
    ("London office +44 20 7946 0958", [("PHONE", "+44 20 7946 0958")]),
    ("US: (415) 555-0132 or 415-555-0199", [("PHONE", "(415) 555-0132"), ("PHONE", "415-555-0199")]),
    ("Berlin +49 30 1234 5678, locally 030 1234 5678",
     [("PHONE", "+49 30 1234 5678"), ("PHONE", "030 1234 5678")]),
    ("Paris +33 1 42 68 53 00", [("PHONE", "+33 1 42 68 53 00")]),
    ("ring 020 7946 0958 after 5", [("PHONE", "020 7946 0958")]),
    ("from 192.168.1.20 and 8.8.8.8", [("IP", "192.168.1.20"), ("IP", "8.8.8.8")]),
    ("v6 2001:db8::ff00:42:8329 seen", [("IP", "2001:db8::ff00:42:8329")]),
    ("link-local fe80::1 and mapped ::ffff:192.0.2.128",
     [("IP", "fe80::1"), ("IP", "::ffff:192.0.2.128")]),
    ("dsn postgres://admin:s3cret@db.internal:5432/app",
     [("CREDENTIALS", "admin:s3cret")]),
    ("open https://bob:hunter2@example.com/x", [("CREDENTIALS", "bob:hunter2")]),
    ("SSN 512-34-6789 on file", [("SSN", "512-34-6789")]),
    ("ssn 536 22 1234.", [("SSN", "536 22 1234")]),
    ("NI number AB 12 34 56 C", [("NINO", "AB 12 34 56 C")]),
    ("nino JG103759A", [("NINO", "JG103759A")]),
    ("email a@b.io phone +1 212 555 0100 card 4012888888881881",
     [("EMAIL", "a@b.io"), ("PHONE", "+1 212 555 0100"), ("CARD", "4012888888881881")]),
    ("reach me: maria.garcia@empresa.es", [("EMAIL", "maria.garcia@empresa.es")]),
    ("Sydney desk +61 2 9374 4000.", [("PHONE", "+61 2 9374 4000")]),
    ("Belgian account BE68 5390 0754 7034", [("IBAN", "BE68 5390 0754 7034")]),
    ("diners 30569309025904 expired", [("CARD", "30569309025904")]),
    ("the VPN gave me 10.0.0.5", [("IP", "10.0.0.5")]),
    # National formats that need a country's numbering plan (libphonenumber's metadata).
    ("call 0044 20 7946 0958 from abroad", [("PHONE", "0044 20 7946 0958")]),
    ("Tokyo office 03-1234-5678", [("PHONE", "03-1234-5678")]),
    ("Madrid 912 34 56 78", [("PHONE", "912 34 56 78")]),
    ("Roma 06 6982 0000", [("PHONE", "06 6982 0000")]),
    ("Dublin 01 234 5678", [("PHONE", "01 234 5678")]),
    ("Paris 01 42 68 53 00", [("PHONE", "01 42 68 53 00")]),
    ("desk +1-415-555-0132 ext. 12", [("PHONE", "+1-415-555-0132 ext. 12")]),
    ("India +91 98765 43210", [("PHONE", "+91 98765 43210")]),
    ("+33 (0)1 42 68 53 00 is the front desk", [("PHONE", "+33 (0)1 42 68 53 00")]),
]

LOOK_ALIKES: list[str] = [
    "ping @jane on slack",
    "5@10 each, i.e. 50",
    "card 4111 1111 1111 1112 fails Luhn",
    "order 1234567890123 shipped",
    "order 20261120 and invoice 998877665544",
    "DE89 3704 0044 0532 0130 01 has a bad check",
    "GB82 WEST is the start of an IBAN",
    "meeting at 10:30:00 on 2026-11-20",
    "version 1.2.3, build v1.2.3.4, and 999.10.1.1",
    "std::vector<int> and a::b are C++",
    "pi is 3.14159 and e is 2.71828",
    "https://example.com/path?x=1 and https://docs.python.org/3/",
    "invalid SSNs 000-12-3456 666-12-3456 900-12-3456 123-00-4567 123-45-0000",
    # Numbers printed in advertisements and on sample cards, which the SSA never issued.
    "the sample cards read 078-05-1120 and 219-09-9999",
    "BG123456A and QQ123456C are not NI numbers",
    "ticket #123-456 reopened",
    "ISBN 978-3-16-148410-0",
    "total 1,234,567.89 USD",
    "tracking 1Z999AA10123456784",
    "call extension 4521",
    "the SKU is AB-1234-XY",
    "invoice INV-2026-000123",
    "order #A-2026-11-20-0042",
    "between 2026-11-20 and 2026-12-01",
    "room 1234 5678 is booked",
    "at 12:30 on 11/20/2026",
]


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def _score() -> tuple[int, int, int, int, list[str]]:
    labeled = found = detected = correct = 0
    misses: list[str] = []
    for text, pii in LABELED:
        spans = find_pii(text)
        truth = []
        for kind, substring in pii:
            start = text.index(substring)
            truth.append((start, start + len(substring), kind))
        labeled += len(truth)
        for start, end, kind in truth:
            if any(k == kind and s <= start and e >= end for s, e, k in spans):
                found += 1
            else:
                misses.append(f"missed {kind} {text[start:end]!r}")
        detected += len(spans)
        for s, e, k in spans:
            if any(_overlaps((s, e), (ts, te)) and tk == k for ts, te, tk in truth):
                correct += 1
            else:
                misses.append(f"false {k} {text[s:e]!r}")
    for text in LOOK_ALIKES:
        spans = find_pii(text)
        detected += len(spans)
        misses += [f"false {k} {text[s:e]!r}" for s, e, k in spans]
    return labeled, found, detected, correct, misses


def test_recall_and_precision_on_the_labeled_set() -> None:
    labeled, found, detected, correct, misses = _score()
    recall, precision = found / labeled, correct / detected
    print(f"redaction: {labeled} labeled PII, recall {recall:.2f}, precision {precision:.2f}")
    assert labeled >= 40
    assert recall == 1.0 and precision == 1.0, misses


def test_redact_replaces_spans_and_counts_kinds() -> None:
    result = redact("Write to jane@example.com or +44 20 7946 0958; card 4111-1111-1111-1111.")
    assert result.text == "Write to [EMAIL] or [PHONE]; card [CARD]."
    assert result.counts == (("CARD", 1), ("EMAIL", 1), ("PHONE", 1))
    assert redact("nothing to hide here").counts == ()


def test_url_credentials_keep_the_host() -> None:
    result = redact("postgres://admin:s3cret@db.internal:5432/app")
    assert result.text == "postgres://[CREDENTIALS]@db.internal:5432/app"


def test_iban_is_cut_at_the_registered_length() -> None:
    result = redact("DE89 3704 0044 0532 0130 00 FOR ORDER 7")
    assert result.text == "[IBAN] FOR ORDER 7"


@pytest.mark.parametrize(
    ("digits", "valid"),
    [("4111111111111111", True), ("4111111111111112", False), ("79927398713", True)],
)
def test_luhn(digits: str, valid: bool) -> None:
    assert luhn_valid(digits) is valid


def test_iban_checksum_and_length() -> None:
    assert iban_valid("GB82WEST12345698765432")
    assert not iban_valid("GB82WEST12345698765433")
    assert not iban_valid("GB82WEST1234569876543")  # one short


# Names, where support chats say them. The first part was written before the cues; the part
# after HELD_OUT was written after them and never tuned against.
NAMES: list[tuple[str, list[str]]] = [
    ('Hi, my name is Sarah Johnson and I need help with my order.', ['Sarah Johnson']),
    ('This is Tom from accounting, can you reset my password?', ['Tom']),
    ('Please forward this to Maria Garcia in the billing team.', ['Maria Garcia']),
    ('My husband David placed the order last week.', ['David']),
    ('Thanks Priya, that fixed it!', ['Priya']),
    ('Can you ask Mr. Okafor to call me back?', ['Okafor']),
    ('I spoke with an agent called Kevin yesterday and he said it would ship Monday.', ['Kevin']),
    ('The package was signed for by J. Williams.', ['J. Williams']),
    ('Dear Anna, your refund has been processed.', ['Anna']),
    ("Hello, I'm Li Wei and my account is locked.", ['Li Wei']),
    ('Send the invoice to Hans Müller, Berliner Str. 5.', ['Hans Müller']),
    ("My daughter Emily can't log in to her tablet.", ['Emily']),
    ('Ask Dr. Patel whether the prescription was sent.', ['Patel']),
    ('Order for Jean-Pierre Dubois, delivery to Lyon.', ['Jean-Pierre Dubois']),
    ('Hi Carlos, here is the tracking link you asked for.', ['Carlos']),
    ('It was delivered to my neighbour Mrs. Thompson instead.', ['Thompson']),
    ('I am writing on behalf of my mother, Fatima Al-Sayed.', ['Fatima Al-Sayed']),
    ('Yuki Tanaka here, following up on ticket 4471.', ['Yuki Tanaka']),
    ("Could you cancel the subscription for Michael O'Brien?", ["Michael O'Brien"]),
    ('Our CEO, Rebecca Stone, wants a copy of the contract.', ['Rebecca Stone']),
    ("My name's Olu and I was charged twice.", ['Olu']),
    ('Please update the account holder to Sven Lindqvist.', ['Sven Lindqvist']),
    ('I talked to Jessica on chat and she promised a discount.', ['Jessica']),
    ('The booking is under the name Aleksandra Nowak.', ['Aleksandra Nowak']),
    ('Hi there, Ben here again about the broken charger.', ['Ben']),
    ('Gift for my friend Chloe, can you wrap it?', ['Chloe']),
    ('hey its mark, why is my order late', ['mark']),
    ('please help, this is john smith, acct locked', ['john smith']),
    ('Rahul Sharma and Neha Gupta both need access to the dashboard.', ['Rahul Sharma', 'Neha Gupta']),
    ('Tell Sophie and Lucas that the meeting moved to Friday.', ['Sophie', 'Lucas']),
    ('I bought it for my son, Noah, for his birthday.', ['Noah']),
    ('The technician, Mr Ahmed Hassan, never showed up.', ['Ahmed Hassan']),
    ('Best regards, Katarzyna', ['Katarzyna']),
    ('Cheers, Dave', ['Dave']),
    ('Sincerely, Elizabeth Warren-Clarke', ['Elizabeth Warren-Clarke']),
    ('Can Giulia Rossi pick up the parcel instead of me?', ['Giulia Rossi']),
    ('My landlord Peter Novak needs a receipt.', ['Peter Novak']),
    ('Your colleague Amanda said I could return it after 30 days.', ['Amanda']),
    ('Account name: Oluwaseun Adeyemi', ['Oluwaseun Adeyemi']),
    ("Hi, I'm Zoe. The app keeps crashing on login.", ['Zoe']),
]
HELD_OUT_NAMES: list[tuple[str, list[str]]] = [
    ('Hello, this is Grace Kim, I never received my confirmation email.', ['Grace Kim']),
    ('My wife Ingrid ordered the wrong size.', ['Ingrid']),
    ('Please let Marcus know the delivery window changed.', ['Marcus']),
    ("I'm Tomasz and I'd like to change my address.", ['Tomasz']),
    ('Regards, Helena Sousa', ['Helena Sousa']),
    ('Hi Aisha, thanks for the quick reply.', ['Aisha']),
    ('The parcel was left with Mr. Brennan next door.', ['Brennan']),
    ('Can you transfer the licence to Daniel Cohen?', ['Daniel Cohen']),
    ("It's Laura again, the coupon still doesn't work.", ['Laura']),
    ('My son Mateo broke the screen.', ['Mateo']),
    ('Your agent Steve hung up on me.', ['Steve']),
    ('Booked under Nguyen Van An, arriving Tuesday.', ['Nguyen Van An']),
    ('Dear Mrs. Alvarez, we have updated your plan.', ['Alvarez']),
    ('Thanks a lot, Ravi!', ['Ravi']),
    ('Kind regards, Martin', ['Martin']),
    ("i'm jake and my card got charged 3 times", ['jake']),
    ('Ask Dr. Yamamoto to sign the form.', ['Yamamoto']),
    ('Our accountant Beatrice Moreau needs the VAT invoice.', ['Beatrice Moreau']),
    ('Could Samuel collect the order on my behalf?', ['Samuel']),
    ('name: Ibrahim Diallo', ['Ibrahim Diallo']),
]
NAME_LOOK_ALIKES: list[str] = [
    'I want to return my Nike Air Jordan shoes.',
    "The Dell laptop won't turn on after the update.",
    'Do you ship to Paris or only within Georgia?',
    "My Amazon order from May hasn't arrived.",
    'Can I pay with Apple Pay or PayPal?',
    'The Samsung Galaxy screen is cracked.',
    'I need the Windows 11 license key resent.',
    'Is the Tesla charger compatible with the Model 3?',
    'Please deliver before Christmas, not on Sunday.',
    'We use Slack and Microsoft Teams for support.',
    'The Jordan River tour was cancelled.',
    'Can you check the status of order 4471?',
    'My Visa card was declined at checkout.',
    'The Hilton in Chicago has my reservation.',
    'Is Black Friday pricing still available?',
    'Where is the nearest store in Phoenix?',
    'I ordered the Harry Potter box set.',
    "The Alexa speaker won't connect to wifi.",
    'Please cancel my Netflix and Spotify bundle.',
    'Ship it with FedEx or UPS, whichever is faster.',
    'The Victoria line was closed so I missed the delivery.',
    'My Ford Focus needs new tyres.',
    'Is the Lincoln Center event refundable?',
    'I get an error in Chrome but not in Firefox.',
    'The Grace period ends on Monday.',
    'Please add me to the Premium plan.',
    'Do you have the Kindle Paperwhite in stock?',
    'Our office moved from Austin to Denver.',
    'The Mercedes dealer sent the wrong part.',
    'Can I get the Marshall amplifier in black?',
    'The Garmin watch stopped syncing.',
    'I flew with Emirates to Dubai last week.',
    'Is the Sony camera covered by warranty?',
    'The Target store in Houston had no stock.',
    'My Lenovo ThinkPad keyboard is broken.',
    'Please send it to the Amsterdam office.',
    'We switched from Zoom to Google Meet.',
    'The Ikea delivery is booked for Thursday.',
    'Can I upgrade to the Pro plan in June?',
    'The Honda Civic recall letter arrived.',
]


def _name_score(cases: list[tuple[str, list[str]]]) -> tuple[float, float, list[str]]:
    labeled = found = detected = correct = 0
    misses: list[str] = []
    for text, names in cases:
        spans = [(s, e) for s, e, kind in find_pii(text) if kind == "NAME"]
        truth = [(text.index(name), text.index(name) + len(name)) for name in names]
        labeled += len(truth)
        found += sum(any(s <= ts and e >= te for s, e in spans) for ts, te in truth)
        detected += len(spans)
        correct += sum(any(s < te and ts < e for ts, te in truth) for s, e in spans)
        misses += [f"false NAME {text[s:e]!r}" for s, e in spans
                   if not any(s < te and ts < e for ts, te in truth)]
    return found / labeled, correct / max(detected, 1), misses


def test_names_are_redacted_where_the_text_says_they_are_names() -> None:
    recall, precision, misses = _name_score(NAMES)
    held_recall, held_precision, held_misses = _name_score(HELD_OUT_NAMES)
    print(f"names: recall {recall:.2f} precision {precision:.2f}; held out: recall "
          f"{held_recall:.2f} precision {held_precision:.2f}")
    assert (round(recall, 2), precision) == (0.86, 1.0), misses
    assert (round(held_recall, 2), held_precision) == (0.70, 1.0), held_misses
    for text in NAME_LOOK_ALIKES + LOOK_ALIKES:
        assert [k for _, _, k in find_pii(text) if k == "NAME"] == [], text
    assert redact("Hi Anna, this is Tom from billing. Regards, Tom").text == (
        "Hi [NAME], this is [NAME] from billing. Regards, [NAME]")


def test_redaction_stays_linear_on_long_hostile_texts() -> None:
    import time

    for text in ("Aa-" * 30_000, "Hi Anna, " * 20_000, "1234 5678 " * 20_000,
                 "(415) 555-0132 or " * 2_000, "x://" * 50_000):
        started = time.perf_counter()
        find_pii(text)
        assert time.perf_counter() - started < 10, text[:20]
