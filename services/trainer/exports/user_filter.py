"""Which users' rows a part of an object export may hold, kept in its manifest so an erasure
downloads only the parts that may hold an erased user's rows. Pure.

A Bloom filter over the users' digests (the SHA-256 of the tenant-keyed HMAC, as
`trainer.erased_users` keeps them): no false negatives, so a part that holds a user's rows is
always found; about 1% false positives (a part downloaded and found to hold nothing). Ten bits
per user: a part of 50,000 users adds about 80 KB of base64 to its manifest. It names nobody
by itself; a part rewritten after an erasure gets a filter of the users it still holds.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from typing import Any

_HASHES = 7
_BITS_PER_USER = 10


def _positions(digest: str, bits: int) -> list[int]:
    # Hashed again so any text works as a digest; seven 4-byte slices of one SHA-256.
    raw = hashlib.sha256(digest.encode()).digest()
    return [int.from_bytes(raw[4 * n:4 * n + 4], "big") % bits for n in range(_HASHES)]


def user_filter(digests: Iterable[str]) -> dict[str, Any]:
    """The filter of `digests`, as it is written in a manifest."""
    users = set(digests)
    bits = max(64, -(-len(users) * _BITS_PER_USER // 8) * 8)
    field = bytearray(bits // 8)
    for digest in users:
        for position in _positions(digest, bits):
            field[position // 8] |= 1 << (position % 8)
    return {"bloom": base64.b64encode(bytes(field)).decode(), "hashes": _HASHES}


def may_hold(written: dict[str, Any], digests: Iterable[str]) -> bool:
    """False only when the filter proves none of `digests` is in it."""
    field = base64.b64decode(written["bloom"])
    if written.get("hashes") != _HASHES or not field:
        return True  # a filter this code did not write: assume it may
    bits = len(field) * 8
    return any(all(field[p // 8] >> (p % 8) & 1 for p in _positions(digest, bits))
               for digest in digests)
