"""Endpoint secrets at rest: AES-256-GCM under FEEDBACKLOOP_WEBHOOKS_SECRET_KEY.

A stored secret is `enc1:<base64 of the 12-byte nonce and the ciphertext with its tag>`, with
the endpoint's id as associated data: a ciphertext copied onto another endpoint's row does not
decrypt there. A row still holding the plaintext form of before (`whsec_...`) is read as it is,
and sealed by `repository.seal_plaintext_rows` (the delivery job runs it when it starts, and
again whenever it claims such a row). Nothing here logs or repeats a secret, in an error message
or a repr.

One key is active. When FEEDBACKLOOP_WEBHOOKS_SECRET_KEY is empty the key is derived from the
user-id HMAC secret under a label of its own, so the query service, the CLI and the webhooks
service agree wherever they run, and neither key reveals the other.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from feedbackloop.settings import Settings, webhooks_secret_key_is_valid

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
    """Seals and opens endpoint secrets under one AES-256-GCM key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("an endpoint secret key is 32 bytes (AES-256)")
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "SecretBox(<key>)"

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        """The box of FEEDBACKLOOP_WEBHOOKS_SECRET_KEY, or of the key derived from
        FEEDBACKLOOP_USER_ID_HMAC_SECRET when it is empty. Raises ValueError naming the setting
        when the key is malformed or neither is set."""
        configured = settings.webhooks_secret_key.get_secret_value()
        if configured:
            if not webhooks_secret_key_is_valid(configured):
                raise ValueError(
                    "FEEDBACKLOOP_WEBHOOKS_SECRET_KEY must be 32 random bytes in base64 "
                    "(openssl rand -base64 32), or empty"
                )
            return cls(base64.b64decode(configured))
        hmac_secret = settings.user_id_hmac_secret.get_secret_value()
        if not hmac_secret:
            raise ValueError(
                "endpoint secrets need FEEDBACKLOOP_WEBHOOKS_SECRET_KEY or "
                "FEEDBACKLOOP_USER_ID_HMAC_SECRET"
            )
        return cls(derived_secret_key(hmac_secret.encode()))

    def seal(self, endpoint_id: UUID, secret: str) -> str:
        """The stored form of one endpoint's secret (a fresh nonce each time)."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, secret.encode(), _associated_data(endpoint_id))
        return SEALED_PREFIX + base64.b64encode(nonce + sealed).decode()

    def open(self, endpoint_id: UUID, stored: str) -> str:
        """The secret of a stored form: sealed for this endpoint, or the plaintext form of
        before. Raises UnreadableSecret for anything else."""
        if stored.startswith(PLAINTEXT_PREFIX):
            return stored
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
        try:
            opened = self._aead.decrypt(
                raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _associated_data(endpoint_id)
            )
        except InvalidTag:
            raise UnreadableSecret(
                "the endpoint's stored secret does not decrypt: it was sealed for another "
                "endpoint or under another FEEDBACKLOOP_WEBHOOKS_SECRET_KEY"
            ) from None
        try:
            return opened.decode()
        except UnicodeDecodeError:
            raise UnreadableSecret("the endpoint's stored secret is not text") from None


def is_plaintext(stored: str) -> bool:
    return stored.startswith(PLAINTEXT_PREFIX)

