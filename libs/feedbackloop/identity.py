"""User-id pseudonymisation and API-key hashing."""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets

API_KEY_PREFIX = "fbl_"


def hash_user_id(secret: bytes, tenant_id: str, user_id: str) -> str:
    """The tenant-keyed HMAC-SHA256 of a user id, hex. The raw id is never stored or published.

    The key is derived per tenant, so the same user id in two tenants gives unrelated hashes.
    """
    mac = _tenant_mac(secret, tenant_id).copy()
    mac.update(user_id.encode())
    return mac.hexdigest()


def hash_feedback_key(secret: bytes, tenant_id: str, feedback_key: str) -> str:
    """The tenant-keyed HMAC-SHA256 of an anonymous person's feedback key, hex: published and
    stored instead of the key, like a user id. Keyed apart from user ids (another derived key),
    so a feedback key never hashes to the same value as an equal user id."""
    mac = _tenant_mac(secret, _FEEDBACK_KEY_DOMAIN + tenant_id).copy()
    mac.update(feedback_key.encode())
    return mac.hexdigest()


# Tenant ids are identifiers that never start with a NUL, so this derived key is never a tenant's.
_FEEDBACK_KEY_DOMAIN = "\x00feedback_key\x00"


@functools.lru_cache(maxsize=4096)
def _tenant_mac(secret: bytes, tenant_id: str) -> hmac.HMAC:
    """The HMAC keyed for one tenant, before any message: copied per user id, which halves the
    cost of hashing (ingest hashes every event's user id)."""
    tenant_key = hmac.new(secret, tenant_id.encode(), hashlib.sha256).digest()
    return hmac.new(tenant_key, digestmod=hashlib.sha256)


def generate_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    """Keys are 256-bit random tokens, so one SHA-256 suffices at rest (no password stretching)."""
    return hashlib.sha256(key.encode()).hexdigest()
