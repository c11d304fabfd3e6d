"""The load generator only produces events the contract accepts, in realistic proportions."""

from __future__ import annotations

import random
from collections import Counter

from feedbackloop.contract.requests import REQUEST_KINDS
from feedbackloop.contract.strict import unknown_fields
from services.cli.loadgen import mixed_events


def test_every_generated_event_is_valid_and_the_mix_is_realistic() -> None:
    rng = random.Random(7)
    kinds: Counter[str] = Counter()
    for _ in range(2_000):
        for event_type, fields in mixed_events(rng):
            kind = REQUEST_KINDS[event_type]
            assert unknown_fields(kind.request, fields) == []
            kind.request.model_validate(fields)
            kinds[event_type] += 1
    assert set(kinds) == set(REQUEST_KINDS) - {"user.consent_changed", "user.erasure_requested"}
    assert kinds["response.logged"] > kinds["recommendation.session_started"] > 0
    assert 0.8 < kinds["feedback.submitted"] / kinds["response.logged"] < 1.0
