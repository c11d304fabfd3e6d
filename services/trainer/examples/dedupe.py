"""Fingerprints for exact and near-duplicate training examples. Pure.

- Exact duplicates: the SHA-256 of the example's normalized content (case-folded, punctuation
  dropped, whitespace collapsed), so "Hello, World!" and "hello world" are one example.
- Near duplicates: a bottom-k MinHash sketch (k = 64) of the normalized text's character
  5-shingles. Two examples are near duplicates when the estimated Jaccard similarity of their
  shingle sets is at least `NEAR_DUPLICATE_JACCARD` (0.85). Candidates are found through the
  `CANDIDATE_KEYS` smallest hashes (an example whose sketch shares none of them with another is
  almost never 0.85-similar to it), then confirmed with the full sketch.

The sketch costs one 64-bit BLAKE2b hash per shingle, so a 200,000-character text takes well
under a second.
"""

from __future__ import annotations

import hashlib
import heapq
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol, TypeVar
from uuid import UUID

SKETCH_SIZE = 64
SHINGLE_CHARS = 5
NEAR_DUPLICATE_JACCARD = 0.85
CANDIDATE_KEYS = 16

T = TypeVar("T")

_NOT_WORD = re.compile(r"[\W_]+")


def normalize(text: str) -> str:
    """Case-folded, accents kept, punctuation and runs of whitespace made one space."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return _NOT_WORD.sub(" ", text).strip()


def content_hash(parts: Sequence[str]) -> str:
    """Exact-duplicate key of content made of several texts (order matters)."""
    joined = "\x1f".join(normalize(part) for part in parts)
    return hashlib.sha256(joined.encode()).hexdigest()


def _hash64(shingle: str) -> int:
    digest = hashlib.blake2b(shingle.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)  # fits PostgreSQL bigint


def sketch(text: str) -> tuple[int, ...]:
    """Bottom-k MinHash sketch: the `SKETCH_SIZE` smallest shingle hashes, ascending."""
    normalized = normalize(text)
    if len(normalized) <= SHINGLE_CHARS:
        shingles = {normalized}
    else:
        shingles = {
            normalized[i : i + SHINGLE_CHARS] for i in range(len(normalized) - SHINGLE_CHARS + 1)
        }
    return tuple(heapq.nsmallest(SKETCH_SIZE, {_hash64(shingle) for shingle in shingles}))


def estimated_jaccard(first: Sequence[int], second: Sequence[int]) -> float:
    """Broder's bottom-k estimate: of the k smallest hashes of the union, the share in both."""
    if not first or not second:
        return 0.0
    union_bottom = heapq.nsmallest(SKETCH_SIZE, set(first) | set(second))
    both = set(first) & set(second)
    return sum(1 for value in union_bottom if value in both) / len(union_bottom)


def is_near_duplicate(first: Sequence[int], second: Sequence[int]) -> bool:
    return first_near_duplicate(first, [(True, second)]) is not None


def first_near_duplicate(
    signature: Sequence[int], candidates: Iterable[tuple[T, Sequence[int]]]
) -> T | None:
    """The first candidate `(key, sketch)` whose sketch is a near duplicate of `signature`.

    The estimate counts values of the union's bottom k found in both sketches, so it cannot reach
    the threshold when the sketches share fewer values than that: most candidates (they only
    share a key) are ruled out by one set intersection. Sketches hold distinct values."""
    mine = set(signature)
    for key, other in candidates:
        shared = len(mine.intersection(other))
        union = min(SKETCH_SIZE, len(mine) + len(other) - shared)
        if shared >= NEAR_DUPLICATE_JACCARD * union and (
            estimated_jaccard(signature, other) >= NEAR_DUPLICATE_JACCARD
        ):
            return key
    return None


def candidate_keys(signature: Sequence[int]) -> list[int]:
    return list(signature[:CANDIDATE_KEYS])


class Deduplicated(Protocol):
    """What deduplication reads of an example (`examples.build.TrainingExample` has it)."""

    @property
    def example_id(self) -> UUID: ...
    @property
    def tenant_id(self) -> str: ...
    @property
    def dedupe_group(self) -> str: ...
    @property
    def content_hash(self) -> str: ...
    @property
    def sketch(self) -> Sequence[int]: ...


def batch_originals(
    examples: Sequence[Deduplicated],
    exact: Mapping[int, UUID],
    stored_candidates: Mapping[int, list[tuple[UUID, Sequence[int]]]],
    *,
    limit: int,
) -> list[UUID | None]:
    """For each example in order, the original it repeats, or None: `exact` and
    `stored_candidates` (by position) are what the store holds; originals earlier in
    `examples` count as if they had been stored one by one (newer than any stored), at most
    `limit` near candidates compared per example."""
    originals: list[UUID | None] = []
    # The batch's originals so far: the first of each content hash, and per group oldest first.
    first_with_hash: dict[tuple[str, str, str], UUID] = {}
    earlier: dict[tuple[str, str], list[Deduplicated]] = {}
    for i, example in enumerate(examples):
        group = (example.tenant_id, example.dedupe_group)
        original = exact.get(i) or first_with_hash.get((*group, example.content_hash))
        if original is None:
            own_keys = set(candidate_keys(example.sketch))
            candidates: list[tuple[UUID, Sequence[int]]] = []
            for other in reversed(earlier.get(group, [])):
                if len(candidates) == limit:
                    break
                if not own_keys.isdisjoint(other.sketch):
                    candidates.append((other.example_id, other.sketch))
            candidates += stored_candidates.get(i, [])
            original = first_near_duplicate(
                example.sketch, candidates[:limit]
            )
        originals.append(original)
        if original is None:
            earlier.setdefault(group, []).append(example)
            first_with_hash.setdefault((*group, example.content_hash), example.example_id)
    return originals
