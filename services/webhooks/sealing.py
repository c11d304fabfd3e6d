"""Endpoint secrets at rest: AES-256-GCM under FEEDBACKLOOP_WEBHOOKS_SECRET_KEY.

A stored secret is `enc1:<base64 of the 12-byte nonce and the ciphertext with its tag>`, with
the endpoint's id as associated data: a ciphertext copied onto another endpoint's row does not
decrypt there. A row still holding the plaintext form of before (`whsec_...`) is read as it is.
Nothing here logs or repeats a secret or a key, in an error message or a repr.

Secrets are sealed under the current key. When FEEDBACKLOOP_WEBHOOKS_SECRET_KEY is empty it is
derived from the user-id HMAC secret under a label of its own, so the query service, the CLI
and the webhooks service agree wherever they run, and neither key reveals the other. Opening
tries the current key, then each of FEEDBACKLOOP_WEBHOOKS_PREVIOUS_SECRET_KEYS in order, then,
when a key is set and so is the HMAC secret, the derived key (what a system that ran without a
key sealed under): the stored form names no key, and GCM's tag tells a wrong one. A row in the
plaintext form or sealed under a key other than the current one is stale (`needs_resealing`).
The delivery job seals only the plaintext form (`repository.seal_plaintext_rows`): a row
sealed under a previous key is sealed again by `feedbackloop webhooks reseal` alone
(`repository.reseal_stale_rows`), run once every replica has the new settings, since a replica
still on older ones would seal it back.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Sequence
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from feedbackloop.settings import (
    Settings,
    webhooks_previous_secret_keys,
    webhooks_secret_key_is_valid,
)

SEALED_PREFIX = "enc1:"
PLAINTEXT_PREFIX = "whsec_"
_NONCE_BYTES = 12
_KEY_LABEL = b"feedbackloop webhook endpoint secrets v1"


class UnreadableSecret(ValueError):
    """A stored secret that does not decrypt for its endpoint; `str()` says why, never what."""


def derived_secret_key(user_id_hmac_secret: bytes) -> bytes:
    """The encryption key when none is configured: derived from the user-id HMAC secret."""
    return hmac.new(user_id_hmac_secret, _KEY_LABEL, hashlib.sha256).digest()


def _associated_data(endpoint_id: UUID) -> bytes:
    return b"webhooks.endpoints.secret\x00" + endpoint_id.bytes


class SecretBox:
    """Seals endpoint secrets under the current AES-256-GCM key; opens those sealed under it or
    under one of the previous keys."""

    def __init__(self, key: bytes, previous: Sequence[bytes] = ()) -> None:
        if any(len(k) != 32 for k in (key, *previous)):
            raise ValueError("an endpoint secret key is 32 bytes (AES-256)")
        self._aead = AESGCM(key)
        self._previous = tuple(AESGCM(k) for k in previous)

    def __repr__(self) -> str:
        return "SecretBox(<key>)"

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        """The box of FEEDBACKLOOP_WEBHOOKS_SECRET_KEY (or of the key derived from
        FEEDBACKLOOP_USER_ID_HMAC_SECRET when it is empty) and of
        FEEDBACKLOOP_WEBHOOKS_PREVIOUS_SECRET_KEYS, then of the derived key when a key is set
        (blanks around every key ignored). Raises ValueError naming the setting (and
        the position of a previous key, never its value) when a key is malformed, or when
        neither the key nor the HMAC secret is set."""
        previous = []
        entries = webhooks_previous_secret_keys(settings.webhooks_previous_secret_keys.get_secret_value())
        for position, entry in enumerate(entries, start=1):
            if not webhooks_secret_key_is_valid(entry):
                raise ValueError(
                    f"key {position} of FEEDBACKLOOP_WEBHOOKS_PREVIOUS_SECRET_KEYS must be 32 "
                    "random bytes in base64, like FEEDBACKLOOP_WEBHOOKS_SECRET_KEY"
                )
            previous.append(base64.b64decode(entry))
        configured = settings.webhooks_secret_key.get_secret_value().strip()
        hmac_secret = settings.user_id_hmac_secret.get_secret_value()
        if configured:
            if not webhooks_secret_key_is_valid(configured):
                raise ValueError(
                    "FEEDBACKLOOP_WEBHOOKS_SECRET_KEY must be 32 random bytes in base64 "
                    "(openssl rand -base64 32), or empty"
                )
            if hmac_secret:
                # Secrets sealed before the key was set stay readable until resealed.
                previous.append(derived_secret_key(hmac_secret.encode()))
            return cls(base64.b64decode(configured), previous)
        if not hmac_secret:
            raise ValueError(
                "endpoint secrets need FEEDBACKLOOP_WEBHOOKS_SECRET_KEY or "
                "FEEDBACKLOOP_USER_ID_HMAC_SECRET"
            )
        return cls(derived_secret_key(hmac_secret.encode()), previous)

    def seal(self, endpoint_id: UUID, secret: str) -> str:
        """The stored form of one endpoint's secret (a fresh nonce each time)."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, secret.encode(), _associated_data(endpoint_id))
        return SEALED_PREFIX + base64.b64encode(nonce + sealed).decode()

    def open(self, endpoint_id: UUID, stored: str) -> str:
        """The secret of a stored form: sealed for this endpoint under the current key or a
        previous one, or the plaintext form of before. Raises UnreadableSecret for anything
        else."""
        return self._open(endpoint_id, stored)[0]

    def needs_resealing(self, endpoint_id: UUID, stored: str) -> bool:
        """Whether a stored form is to be sealed again under the current key: the plaintext
        form, or sealed under a previous key (the derived one included). False for one no key
        opens."""
        try:
            return not self._open(endpoint_id, stored)[1]
        except UnreadableSecret:
            return False

    def _open(self, endpoint_id: UUID, stored: str) -> tuple[str, bool]:
        """The secret, and whether it was sealed under the current key."""
        if stored.startswith(PLAINTEXT_PREFIX):
            return stored, False
        if not stored.startswith(SEALED_PREFIX):
            raise UnreadableSecret(
                "the endpoint's stored secret is in an unknown form (neither enc1: nor whsec_)"
            )
        try:
            raw = base64.b64decode(stored.removeprefix(SEALED_PREFIX), validate=True)
        except (ValueError, binascii.Error):
            raise UnreadableSecret("the endpoint's stored secret is not valid base64") from None
        if len(raw) <= _NONCE_BYTES + 16:
            raise UnreadableSecret("the endpoint's stored secret is truncated")
        for aead in (self._aead, *self._previous):
            try:
                opened = aead.decrypt(
                    raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _associated_data(endpoint_id)
                )
            except InvalidTag:
                continue
            try:
                return opened.decode(), aead is self._aead
            except UnicodeDecodeError:
                raise UnreadableSecret("the endpoint's stored secret is not text") from None
        raise UnreadableSecret(
            "the endpoint's stored secret does not decrypt: it was sealed for another "
            "endpoint or under another FEEDBACKLOOP_WEBHOOKS_SECRET_KEY (neither the current "
            "key nor a previous one opens it)"
        )


def is_plaintext(stored: str) -> bool:
    """The form of before sealing, which the delivery job seals by itself."""
    return stored.startswith(PLAINTEXT_PREFIX)
