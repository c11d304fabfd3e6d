"""Exact and near-duplicate fingerprints over a labeled set of support replies.

Figures on this set (asserted): every normalization-only variant has the same content hash;
every one-word edit of a reply of 150+ characters is a near duplicate (estimated Jaccard of
5-shingles >= 0.85); no two distinct replies are, even those sharing a template.
"""

from __future__ import annotations

import itertools
import random
import time
from collections import Counter

from services.trainer.examples import dedupe
from services.trainer.examples.dedupe import (
    NEAR_DUPLICATE_JACCARD,
    candidate_keys,
    content_hash,
    estimated_jaccard,
    is_near_duplicate,
    normalize,
    sketch,
)

REPLIES = [
    "Thanks for reaching out! I checked your order and the refund of 42 euros was issued "
    "yesterday; it usually shows on your statement within three to five business days.",
    "I'm sorry the package arrived damaged. I have arranged a free replacement that ships "
    "tomorrow morning, and you do not need to send the broken item back to us.",
    "Your subscription renews on the first of every month. You can switch to yearly billing "
    "from the account page under Plans, which saves two months compared with monthly billing.",
    "I reset the two-factor authentication on your account. Next time you sign in you will be "
    "asked to scan a new QR code with your authenticator app before you can continue.",
    "The delivery is delayed because of weather at the regional hub. The new estimated arrival "
    "is Thursday, and you will get a tracking update by text message when it leaves the hub.",
    "Thanks for reaching out! I checked your order and the replacement was shipped yesterday; "
    "tracking should become active within a day, and delivery takes two to three days.",
    "Added milk, eggs and two loaves of bread to your groceries list, and moved the coffee "
    "beans to next week's list because you said you still have half a bag at home.",
    "Your appointment with Dr. Patel is confirmed for Tuesday at 3 pm at the Main Street "
    "clinic. Please arrive ten minutes early and bring your insurance card and a photo id.",
]


def _one_word_edit(text: str) -> str:
    words = text.split()
    words[len(words) // 2] = "really"
    return " ".join(words)


def test_normalization_makes_exact_duplicates() -> None:
    assert normalize("  Hello,   WORLD!\n") == "hello world"
    for reply in REPLIES:
        variant = reply.upper().replace(",", " ,").replace(".", "")
        assert content_hash(["prompt", variant]) == content_hash(["Prompt.", reply])
    assert content_hash(["a", "b"]) != content_hash(["b", "a"])


def test_near_duplicates_are_found_and_distinct_replies_are_not() -> None:
    for reply in REPLIES:
        edited = _one_word_edit(reply)
        appended = reply + " Have a nice day."
        assert is_near_duplicate(sketch(reply), sketch(edited)), reply
        assert is_near_duplicate(sketch(reply), sketch(appended)), reply
        assert set(candidate_keys(sketch(reply))) & set(sketch(edited)), "not a candidate"
    scores = [
        estimated_jaccard(sketch(a), sketch(b)) for a, b in itertools.combinations(REPLIES, 2)
    ]
    assert max(scores) < NEAR_DUPLICATE_JACCARD
    # Sharing the "Thanks for reaching out! I checked your order" template is not enough.
    assert estimated_jaccard(sketch(REPLIES[0]), sketch(REPLIES[5])) < 0.5


def test_sketch_of_a_long_text_is_fast_and_bounded() -> None:
    text = " ".join(REPLIES) * 200  # ~280,000 characters
    started = time.perf_counter()
    signature = sketch(text)
    assert time.perf_counter() - started < 2.0
    assert len(signature) == 64 and list(signature) == sorted(signature)
    assert sketch("ok") == sketch("OK!") and len(sketch("ok")) == 1


def test_the_shared_values_bound_never_changes_the_verdict() -> None:
    """`is_near_duplicate` rules pairs out by how many values they share before estimating:
    on texts from near copies to strangers, it agrees with the estimate on every pair."""
    rng = random.Random(5)
    words = [f"w{i}" for i in range(40)]
    texts = [" ".join(rng.choices(words, k=rng.randint(1, 30))) for _ in range(150)]
    texts += [text + " x" for text in texts[:60]] + [text[:-2] for text in texts[:60]]
    sketches = [dedupe.sketch(text) for text in texts]
    verdicts: Counter[bool] = Counter()
    for first in sketches:
        for second in sketches:
            expected = dedupe.estimated_jaccard(first, second) >= dedupe.NEAR_DUPLICATE_JACCARD
            assert dedupe.is_near_duplicate(first, second) == expected
            verdicts[expected] += 1
    assert verdicts[True] > len(sketches) and verdicts[False] > 0  # both kinds were exercised
