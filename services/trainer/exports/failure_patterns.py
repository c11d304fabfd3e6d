"""Failure patterns: down-voted replies grouped by (action type, prompt, reply), near duplicates
together, most frequent first. Pure.

Two down-votes are one pattern when they have the same action type and their last user
message plus reply are near duplicates (`dedupe.NEAR_DUPLICATE_JACCARD` on 5-shingles, so
"Add milk to my list" and "add milk to my list!" with the same reply are one). A pattern shows
its first member's texts, PII redacted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.trainer.examples import dedupe
from services.trainer.examples.redaction import redact

MAX_EXPLANATIONS = 3
MAX_RESPONSE_IDS = 10


@dataclass(frozen=True)
class DownVote:
    response_id: str
    occurred_at: datetime
    prompt: list[dict[str, Any]]
    output: str
    action_type: str
    explanation: str | None


@dataclass
class FailurePattern:
    action_type: str
    prompt: str
    output: str
    count: int
    first_seen: datetime
    last_seen: datetime
    response_ids: list[str] = field(default_factory=list)
    explanations: list[str] = field(default_factory=list)


def _user_message(prompt: Sequence[dict[str, Any]]) -> str:
    users = [str(message.get("content", "")) for message in prompt if message.get("role") == "user"]
    return users[-1] if users else ""


def group_failures(
    down_votes: Sequence[DownVote],
    *,
    min_count: int = 3,
    max_response_ids: int | None = MAX_RESPONSE_IDS,
) -> list[FailurePattern]:
    """Patterns seen at least `min_count` times, most frequent first (then most recent), each
    with up to `max_response_ids` of its responses (None: all)."""
    patterns: list[FailurePattern] = []
    sketches: list[tuple[int, ...]] = []
    by_key: dict[tuple[str, int], list[int]] = {}
    for vote in down_votes:
        text = f"{_user_message(vote.prompt)}\n{vote.output}"
        signature = dedupe.sketch(text)
        index = next(
            (
                candidate
                for key in dedupe.candidate_keys(signature)
                for candidate in by_key.get((vote.action_type, key), [])
                if dedupe.is_near_duplicate(signature, sketches[candidate])
            ),
            None,
        )
        if index is None:
            index = len(patterns)
            patterns.append(FailurePattern(
                action_type=vote.action_type,
                prompt=redact(_user_message(vote.prompt)).text,
                output=redact(vote.output).text,
                count=0, first_seen=vote.occurred_at, last_seen=vote.occurred_at,
            ))
            sketches.append(signature)
            for key in dedupe.candidate_keys(signature):
                by_key.setdefault((vote.action_type, key), []).append(index)
        pattern = patterns[index]
        pattern.count += 1
        pattern.first_seen = min(pattern.first_seen, vote.occurred_at)
        pattern.last_seen = max(pattern.last_seen, vote.occurred_at)
        room = max_response_ids is None or len(pattern.response_ids) < max_response_ids
        if room and vote.response_id not in pattern.response_ids:
            pattern.response_ids.append(vote.response_id)
        if vote.explanation:
            explanation = redact(vote.explanation).text
            if explanation not in pattern.explanations and len(pattern.explanations) < MAX_EXPLANATIONS:
                pattern.explanations.append(explanation)
    frequent = [pattern for pattern in patterns if pattern.count >= min_count]
    return sorted(frequent, key=lambda pattern: (-pattern.count, -pattern.last_seen.timestamp()))
