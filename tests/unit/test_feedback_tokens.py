"""Signed feedback tokens, pure: what a token grants, and every way one is refused."""

from __future__ import annotations

import pytest

from feedbackloop.http.tokens import (
    TOKEN_PREFIX,
    FeedbackTokenSigner,
    InvalidFeedbackToken,
    derived_token_secret,
)

SECRET = b"unit-secret-0123456789abcdef0123456789"


def signer(now: float = 1_000_000.0) -> FeedbackTokenSigner:
    return FeedbackTokenSigner(SECRET, clock=lambda: now)


def test_a_token_grants_its_tenant_and_response_until_it_expires() -> None:
    token, expires_at = signer().mint("acme", "r-1", 60)
    assert token.startswith(TOKEN_PREFIX)
    assert expires_at == 1_000_060
    grant = signer(1_000_059).verify(token)
    assert (grant.tenant_id, grant.response_id, grant.expires_at) == ("acme", "r-1", 1_000_060)


def test_an_expired_token_is_refused() -> None:
    token, _ = signer().mint("acme", "r-1", 60)
    with pytest.raises(InvalidFeedbackToken, match="expired"):
        signer(1_000_060).verify(token)


@pytest.mark.parametrize("mangle", [
    lambda t: t[:-2] + ("AA" if t[-2:] != "AA" else "BB"),
    lambda t: t.replace(t.split(".")[1], signer().mint("other", "r-1", 60)[0].split(".")[1]),
    lambda t: t.split(".", 1)[1],
    lambda t: "fbt1.e30." + t.rsplit(".", 1)[1],
    lambda t: "fbt1.",
])
def test_a_changed_token_is_refused(mangle) -> None:  # type: ignore[no-untyped-def]
    token, _ = signer().mint("acme", "r-1", 60)
    with pytest.raises(InvalidFeedbackToken):
        signer().verify(mangle(token))


def test_another_secret_signs_tokens_this_one_refuses() -> None:
    token, _ = FeedbackTokenSigner(b"x" * 40, clock=lambda: 1_000_000.0).mint("acme", "r-1", 60)
    with pytest.raises(InvalidFeedbackToken, match="signature"):
        signer().verify(token)


def test_no_secret_no_signer() -> None:
    with pytest.raises(ValueError):
        FeedbackTokenSigner(b"")


def test_the_derived_key_is_stable_and_not_the_user_id_key() -> None:
    assert derived_token_secret(SECRET) == derived_token_secret(SECRET)
    assert derived_token_secret(SECRET) not in (SECRET, derived_token_secret(SECRET + b"x"))


def test_a_token_may_bind_a_user_hash_which_it_carries_signed() -> None:
    token, _ = signer().mint("acme", "r-1", 60, user_hash="h" * 32)
    assert signer().verify(token).user_hash == "h" * 32
    assert signer().verify(signer().mint("acme", "r-1", 60)[0]).user_hash is None
    unbound = signer().mint("acme", "r-1", 60)[0]
    # Grafting a bound token's claims onto an unbound token's signature is refused.
    grafted = f"{token.rsplit('.', 1)[0]}.{unbound.rsplit('.', 1)[1]}"
    with pytest.raises(InvalidFeedbackToken, match="signature"):
        signer().verify(grafted)
