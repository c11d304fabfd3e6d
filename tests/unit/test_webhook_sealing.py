"""Endpoint secrets at rest: sealed with AES-256-GCM, bound to their endpoint; the plaintext
form of before still read; a malformed key refused with the setting's name, in production at
settings time."""

from __future__ import annotations

import base64
import secrets
import traceback
import uuid

import pytest
from pydantic import ValidationError

from feedbackloop.settings import Settings
from services.webhooks.admin import generate_secret
from services.webhooks.sealing import SecretBox, UnreadableSecret, derived_secret_key

HMAC = "unit-sealing-0123456789abcdef0123456789abcdef"
KEY = base64.b64encode(secrets.token_bytes(32)).decode()


def _settings(**values: object) -> Settings:
    return Settings(**{"user_id_hmac_secret": HMAC} | values)  # type: ignore[arg-type]


def test_a_sealed_secret_opens_for_its_endpoint_only() -> None:
    box = SecretBox(secrets.token_bytes(32))
    secret, endpoint, other = generate_secret(), uuid.uuid4(), uuid.uuid4()
    sealed = box.seal(endpoint, secret)
    assert sealed.startswith("enc1:") and secret not in sealed
    assert secret.removeprefix("whsec_") not in sealed
    assert box.seal(endpoint, secret) != sealed  # a fresh nonce each time
    assert box.open(endpoint, sealed) == secret
    with pytest.raises(UnreadableSecret, match="sealed for another endpoint") as raised:
        box.open(other, sealed)
    assert secret not in str(raised.value) and sealed not in str(raised.value)
    with pytest.raises(UnreadableSecret, match="another FEEDBACKLOOP_WEBHOOKS_SECRET_KEY"):
        SecretBox(secrets.token_bytes(32)).open(endpoint, sealed)


def test_the_plaintext_form_of_before_is_read_and_anything_else_refused() -> None:
    box = SecretBox(secrets.token_bytes(32))
    endpoint = uuid.uuid4()
    secret = generate_secret()
    assert box.open(endpoint, secret) == secret
    sealed = box.seal(endpoint, secret)
    raw = base64.b64decode(sealed.removeprefix("enc1:"))
    flipped = "enc1:" + base64.b64encode(raw[:-1] + bytes([raw[-1] ^ 1])).decode()
    for stored, reason in [
        ("", "unknown form"), ("enc2:AAAA", "unknown form"), ("plain", "unknown form"),
        ("enc1:not base64!", "not valid base64"), ("enc1:" + base64.b64encode(raw[:20]).decode(),
                                                   "truncated"),
        (flipped, "does not decrypt"),
    ]:
        with pytest.raises(UnreadableSecret, match=reason):
            box.open(endpoint, stored)


def test_the_key_is_the_setting_or_derived_from_the_hmac_secret() -> None:
    endpoint, secret = uuid.uuid4(), generate_secret()
    derived = SecretBox.from_settings(_settings())
    assert derived_secret_key(HMAC.encode()) != HMAC.encode()[:32]
    assert SecretBox(derived_secret_key(HMAC.encode())).open(
        endpoint, derived.seal(endpoint, secret)) == secret
    # Stable: another process with the same settings opens what this one sealed.
    assert SecretBox.from_settings(_settings()).open(endpoint, derived.seal(endpoint, secret))
    configured = SecretBox.from_settings(_settings(webhooks_secret_key=KEY))
    assert SecretBox(base64.b64decode(KEY)).open(
        endpoint, configured.seal(endpoint, secret)) == secret
    with pytest.raises(UnreadableSecret):
        derived.open(endpoint, configured.seal(endpoint, secret))
    assert "<key>" in repr(configured) and KEY not in repr(configured)


@pytest.mark.parametrize("key", [
    "short", base64.b64encode(b"x" * 16).decode(), base64.b64encode(b"x" * 33).decode(),
    base64.b64encode(bytes(32)).decode(), "changeme", "not*base64*" * 4,
])
def test_a_malformed_key_is_refused_with_the_settings_name(key: str) -> None:
    with pytest.raises(ValueError, match="FEEDBACKLOOP_WEBHOOKS_SECRET_KEY"):
        SecretBox.from_settings(_settings(webhooks_secret_key=key))
    with pytest.raises(ValidationError, match="FEEDBACKLOOP_WEBHOOKS_SECRET_KEY"):
        _settings(environment="production", webhooks_secret_key=key, database_url="postgresql://x",
                  kafka_bootstrap_servers="kafka:9092")


def test_production_accepts_a_real_key_or_none() -> None:
    for key in (KEY, ""):
        settings = _settings(environment="production", webhooks_secret_key=key,
                             database_url="postgresql://x", kafka_bootstrap_servers="kafka:9092")
        assert SecretBox.from_settings(settings)


def test_without_any_key_material_a_box_is_refused() -> None:
    with pytest.raises(ValueError, match="FEEDBACKLOOP_USER_ID_HMAC_SECRET"):
        SecretBox.from_settings(Settings(user_id_hmac_secret=""))


def test_a_previous_key_opens_what_it_sealed_and_marks_it_for_resealing() -> None:
    old, new, other = (base64.b64encode(secrets.token_bytes(32)).decode() for _ in range(3))
    endpoint, secret = uuid.uuid4(), generate_secret()
    under_old = SecretBox.from_settings(_settings(webhooks_secret_key=old)).seal(endpoint, secret)
    rotated = SecretBox.from_settings(_settings(
        webhooks_secret_key=new, webhooks_previous_secret_keys=f" {other} ,{old},"))
    assert rotated.open(endpoint, under_old) == secret
    assert rotated.needs_resealing(endpoint, under_old)
    resealed = rotated.seal(endpoint, secret)
    assert not rotated.needs_resealing(endpoint, resealed)
    # Sealed under the new key: the old one alone no longer opens it, the new one alone does.
    assert SecretBox(base64.b64decode(new)).open(endpoint, resealed) == secret
    with pytest.raises(UnreadableSecret):
        SecretBox(base64.b64decode(old)).open(endpoint, resealed)
    # The plaintext form of before is stale too; what no key opens is not, and stays refused.
    assert rotated.needs_resealing(endpoint, secret)
    stranger = SecretBox(secrets.token_bytes(32)).seal(endpoint, secret)
    assert not rotated.needs_resealing(endpoint, stranger)
    assert not rotated.needs_resealing(uuid.uuid4(), under_old)  # another endpoint's
    with pytest.raises(UnreadableSecret, match="neither the current key nor a previous one"):
        rotated.open(endpoint, stranger)
    # The derived key (no FEEDBACKLOOP_WEBHOOKS_SECRET_KEY) takes previous keys as well.
    derived = SecretBox.from_settings(_settings(webhooks_previous_secret_keys=old))
    assert derived.open(endpoint, under_old) == secret
    assert KEY not in repr(rotated) and old not in repr(rotated)


@pytest.mark.parametrize("entry", [
    "short", base64.b64encode(b"x" * 33).decode(), base64.b64encode(bytes(32)).decode(), "changeme",
])
def test_a_malformed_previous_key_is_refused_by_position_never_by_value(entry: str) -> None:
    keys = f"{KEY},{entry}"
    with pytest.raises(ValueError, match="key 2 of FEEDBACKLOOP_WEBHOOKS_PREVIOUS_SECRET_KEYS") as raised:
        SecretBox.from_settings(_settings(webhooks_previous_secret_keys=keys))
    assert entry not in str(raised.value) and KEY not in str(raised.value)
    with pytest.raises(ValidationError, match="FEEDBACKLOOP_WEBHOOKS_PREVIOUS_SECRET_KEYS") as invalid:
        _settings(environment="production", webhooks_previous_secret_keys=keys,
                  database_url="postgresql://x", kafka_bootstrap_servers="kafka:9092")
    assert KEY not in str(invalid.value)
    settings = _settings(webhooks_previous_secret_keys=KEY)
    assert KEY not in repr(settings) and KEY not in str(settings.model_dump())


def _substrings(value: str, size: int = 8) -> set[str]:
    return {value[i:i + size] for i in range(len(value) - size + 1)}


@pytest.mark.parametrize(("failure", "named"), [
    ({"FEEDBACKLOOP_KAFKA_PARTITIONS": "0"}, "kafka_partitions"),  # a field of its own
    # The production check, of the whole model: no database URL.
    ({"FEEDBACKLOOP_ENVIRONMENT": "production"}, "FEEDBACKLOOP_DATABASE_URL"),
])
def test_an_invalid_setting_never_shows_the_keys_in_its_error(
    failure: dict[str, str], named: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    current, previous = (base64.b64encode(secrets.token_bytes(32)).decode() for _ in range(2))
    for name, value in {"FEEDBACKLOOP_WEBHOOKS_SECRET_KEY": current,
                        "FEEDBACKLOOP_WEBHOOKS_PREVIOUS_SECRET_KEYS": previous,
                        "FEEDBACKLOOP_USER_ID_HMAC_SECRET": HMAC, **failure}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as raised:
        Settings()
    # What a service that fails to start shows: the error's text, its repr, the traceback.
    shown = " ".join([str(raised.value), repr(raised.value),
                      *traceback.format_exception(raised.value)])
    assert named in shown
    leaked = {part for part in _substrings(current) | _substrings(previous) if part in shown}
    assert not leaked


def test_a_key_set_where_none_was_still_opens_what_the_derived_key_sealed() -> None:
    """Upgrading: secrets sealed under the key derived from the HMAC secret stay readable once
    FEEDBACKLOOP_WEBHOOKS_SECRET_KEY is set (tried last, after the previous keys), and are
    stale until `feedbackloop webhooks reseal` moves them; without the HMAC secret there is no
    derived key to try."""
    endpoint, secret = uuid.uuid4(), generate_secret()
    under_derived = SecretBox.from_settings(_settings()).seal(endpoint, secret)
    other = base64.b64encode(secrets.token_bytes(32)).decode()
    explicit = SecretBox.from_settings(_settings(webhooks_secret_key=KEY,
                                                 webhooks_previous_secret_keys=other))
    assert explicit.open(endpoint, under_derived) == secret
    assert explicit.needs_resealing(endpoint, under_derived)
    assert not explicit.needs_resealing(endpoint, explicit.seal(endpoint, secret))
    with pytest.raises(UnreadableSecret):
        SecretBox.from_settings(_settings(webhooks_secret_key=KEY, user_id_hmac_secret="")).open(
            endpoint, under_derived)
    # Blanks around the current key (a key file's newline) are ignored, as around previous ones.
    padded = SecretBox.from_settings(_settings(webhooks_secret_key=f" {KEY}\n"))
    assert SecretBox(base64.b64decode(KEY)).open(endpoint, padded.seal(endpoint, secret)) == secret
    assert _settings(environment="production", webhooks_secret_key=f"{KEY}\n",
                     database_url="postgresql://x", kafka_bootstrap_servers="kafka:9092")
