"""The trainer's reads other services may use: the review queue, reviews and labels.

The review queue is the responses of a tenant with low signals: current thumbs down, ratings
1-2, corrections and replays (an agent's reply beside the AI's). It reads the newest
matching signals (8 per response asked for) through the partial index of migration 0015,
groups them by response and counts each chosen response's signals in the range, so a page
costs about the same whatever the tenant's history holds (a filter that matches few signals
reads further back: up to all of the range's matches).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import asyncpg

# The training-data export's reads: the examples a selection matches and the down-voted replies
# (their SQL sits beside the write path it mirrors; this module is the door other services use).
from services.trainer.repository import ExampleFilter as ExampleFilter
from services.trainer.repository import count_examples as count_examples
from services.trainer.repository import down_voted_replies as down_voted_replies
from services.trainer.repository import stream_examples as stream_examples

QueueSignal = Literal["all", "down", "low", "corrected"]
QueueStatus = Literal["all", "open", "reviewed"]

_SIGNAL_CLAUSES: dict[str, str] = {
    "all": "(f.thumb = 'down' OR f.rating <= 2 OR f.kind IN ('correction', 'replay'))",
    "down": "f.thumb = 'down'",
    "low": "f.rating <= 2",
    "corrected": "(f.kind = 'correction' OR (f.kind = 'replay' AND f.replay ? 'agent_reply'))",
}
_STATUS_CLAUSES: dict[str, str] = {
    "all": "true",
    "open": "s.reviewed_at IS NULL",
    "reviewed": "s.reviewed_at IS NOT NULL",
}


@dataclass(frozen=True)
class QueueFilter:
    tenant_id: str
    since: datetime
    until: datetime
    signal: QueueSignal = "all"
    status: QueueStatus = "all"
    action_type: str | None = None
    model: str | None = None
    response_id: str | None = None
    limit: int = 25

    @property
    def scan(self) -> int:
        """How many of the newest matching signals are read to find `limit` responses."""
        return self.limit * 8


async def review_queue(
    pool: asyncpg.Pool | asyncpg.Connection, selection: QueueFilter
) -> list[asyncpg.Record]:
    """The queue's responses, most recent low signal first, each with its prompt, the AI's
    reply, the latest agent reply (a correction or a replay's), the latest failure
    explanation, the review state and how many of each signal it has in the range."""
    signal = _SIGNAL_CLAUSES[selection.signal]
    status = _STATUS_CLAUSES[selection.status]
    return await pool.fetch(
        f"""
        WITH recent AS (
            SELECT f.response_id, f.occurred_at
            FROM trainer.feedback f
            LEFT JOIN trainer.responses r USING (tenant_id, response_id)
            LEFT JOIN trainer.review_states s USING (tenant_id, response_id)
            WHERE f.tenant_id = $1 AND f.current
              AND (f.thumb = 'down' OR f.rating <= 2 OR f.kind IN ('correction', 'replay'))
              AND {signal} AND {status}
              AND f.occurred_at >= $2 AND f.occurred_at < $3
              AND ($4::text IS NULL OR r.action_type = $4
                   OR (r.response_id IS NULL AND f.inline_action_type = $4))
              AND ($5::text IS NULL OR r.model = $5
                   OR (r.response_id IS NULL AND f.inline_model = $5))
              AND ($6::text IS NULL OR f.response_id = $6)
            ORDER BY f.occurred_at DESC
            LIMIT $8
        ), hits AS (
            SELECT response_id, max(occurred_at) AS last_at
            FROM recent GROUP BY response_id
            ORDER BY last_at DESC, response_id
            LIMIT $7
        )
        SELECT h.response_id, h.last_at, c.down_votes, c.low_ratings, c.corrections, c.replays,
               r.response_id IS NOT NULL AS response_logged,
               COALESCE(r.prompt, i.inline_prompt, CASE WHEN a.message IS NOT NULL THEN
                   jsonb_build_array(jsonb_build_object('role', 'user', 'content', a.message))
               END) AS prompt,
               COALESCE(r.output, i.inline_output, a.replay_ai_reply) AS output,
               COALESCE(r.model, i.inline_model) AS model,
               COALESCE(r.action_type, i.inline_action_type) AS action_type,
               a.agent_reply, a.agent_kind, a.agent_at,
               e.explanation,
               s.reviewed_by_name, s.reviewed_at, s.assignee, s.assigned_by_name, s.assigned_at
        FROM hits h
        LEFT JOIN trainer.responses r ON r.tenant_id = $1 AND r.response_id = h.response_id
        LEFT JOIN trainer.review_states s
            ON s.tenant_id = $1 AND s.response_id = h.response_id
        CROSS JOIN LATERAL (
            SELECT count(*) FILTER (WHERE g.thumb = 'down') AS down_votes,
                   count(*) FILTER (WHERE g.rating <= 2) AS low_ratings,
                   count(*) FILTER (WHERE g.kind = 'correction') AS corrections,
                   count(*) FILTER (WHERE g.kind = 'replay') AS replays
            FROM trainer.feedback g
            WHERE g.tenant_id = $1 AND g.response_id = h.response_id AND g.current
              AND g.occurred_at >= $2 AND g.occurred_at < $3
        ) c
        LEFT JOIN LATERAL (
            SELECT g.inline_prompt, g.inline_output, g.inline_model, g.inline_action_type
            FROM trainer.feedback g
            WHERE g.tenant_id = $1 AND g.response_id = h.response_id
              AND (g.inline_prompt IS NOT NULL OR g.inline_output IS NOT NULL)
            ORDER BY g.occurred_at DESC LIMIT 1
        ) i ON r.response_id IS NULL
        LEFT JOIN LATERAL (
            SELECT COALESCE(g.correction, g.replay ->> 'agent_reply') AS agent_reply,
                   g.kind AS agent_kind, g.occurred_at AS agent_at,
                   g.replay ->> 'ai_reply' AS replay_ai_reply,
                   g.replay ->> 'message' AS message
            FROM trainer.feedback g
            WHERE g.tenant_id = $1 AND g.response_id = h.response_id AND g.current
              AND (g.kind = 'correction' OR (g.kind = 'replay' AND g.replay ? 'agent_reply'))
            ORDER BY g.occurred_at DESC, g.event_id DESC LIMIT 1
        ) a ON true
        LEFT JOIN LATERAL (
            SELECT x.explanation FROM trainer.failure_explanations x
            WHERE x.tenant_id = $1 AND x.response_id = h.response_id
              AND x.status = 'explained'
            ORDER BY x.updated_at DESC LIMIT 1
        ) e ON true
        ORDER BY h.last_at DESC, h.response_id
        LIMIT $7
        """,
        selection.tenant_id, selection.since, selection.until, selection.action_type,
        selection.model, selection.response_id, selection.limit, selection.scan,
    )


async def review_labels(
    pool: asyncpg.Pool | asyncpg.Connection, *, tenant_id: str, response_ids: Sequence[str]
) -> list[asyncpg.Record]:
    """Every reviewer's current answers on these responses."""
    return await pool.fetch(
        """
        SELECT response_id, reviewer, reviewer_name, label, value, note, occurred_at
        FROM trainer.review_labels
        WHERE tenant_id = $1 AND response_id = ANY($2::text[])
        ORDER BY response_id, label, reviewer
        """,
        tenant_id, list(response_ids),
    )


async def label_answers(
    pool: asyncpg.Pool | asyncpg.Connection, *, tenant_id: str, limit: int = 100_000
) -> list[asyncpg.Record]:
    """The tenant's current answers of every reviewer, for agreement (at most `limit`)."""
    return await pool.fetch(
        """
        SELECT label, response_id, reviewer, reviewer_name, value
        FROM trainer.review_labels WHERE tenant_id = $1
        ORDER BY label, response_id, reviewer
        LIMIT $2
        """,
        tenant_id, limit,
    )


def prompt_text(prompt: Any) -> str:
    """A prompt (chat messages) as the reviewer reads it: each message on its own."""
    if not isinstance(prompt, list):
        return ""
    return "\n\n".join(
        f"{message.get('role', 'user')}: {message.get('content', '')}"
        for message in prompt
        if isinstance(message, dict)
    )
