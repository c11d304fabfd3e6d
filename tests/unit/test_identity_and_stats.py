"""User-id pseudonymisation, API-key hashing and the Wilson interval."""

from __future__ import annotations

import pytest

from feedbackloop.identity import generate_api_key, hash_api_key, hash_user_id
from services.cli.admin import parse_scopes
from services.query.processing import approval_rate, wilson_interval


def test_user_hash_is_tenant_keyed_and_stable() -> None:
    secret = b"s" * 32
    assert hash_user_id(secret, "a", "u1") == hash_user_id(secret, "a", "u1")
    assert hash_user_id(secret, "a", "u1") != hash_user_id(secret, "b", "u1")
    assert hash_user_id(secret, "a", "u1") != hash_user_id(b"t" * 32, "a", "u1")
    assert "u1" not in hash_user_id(secret, "a", "u1")


def test_api_keys_are_random_and_hashed() -> None:
    first, second = generate_api_key(), generate_api_key()
    assert first != second and first.startswith("fbl_")
    assert hash_api_key(first) != first and len(hash_api_key(first)) == 64


@pytest.mark.parametrize(
    ("successes", "total", "low", "high"),
    [
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
        (5, 10, 0.2366, 0.7634),
        (81, 263, 0.2553, 0.3662),
    ],
)
def test_wilson_interval_matches_reference_values(
    successes: int, total: int, low: float, high: float
) -> None:
    got_low, got_high = wilson_interval(successes, total)
    assert got_low == pytest.approx(low, abs=1e-4)
    assert got_high == pytest.approx(high, abs=1e-4)


def test_no_votes_means_unknown() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert approval_rate(0, 0) is None
    assert approval_rate(3, 1) == 0.75


def test_scopes_are_checked() -> None:
    assert parse_scopes("ingest, read") == ["ingest", "read"]
    with pytest.raises(ValueError, match="unknown scopes"):
        parse_scopes("ingest,write")
