"""The trainer's write path: the SQL that applies the consumer's effects to the trainer
schema (responses, feedback, consent, erasure, reviews), and the SQL fragments of consent at
read time that its rooms share. Building examples is not done here (`examples.rebuild`)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from feedbackloop.pipeline.consumer import grouped_runs
from feedbackloop.postgres import mark_current_signals
from services.trainer.examples import store
from services.trainer.processing import (
    ConsentSet,
    FeedbackStored,
    ResponseStored,
    TrainerEffect,
    UserErased,
)
from services.trainer.reviews.effects import ReviewRecorded
from services.trainer.reviews.store import write_reviews

# The prompt and the AI reply a down-vote is about: the logged response's, else what the
# feedback carried inline (a replay carries the customer message and the AI reply).
# Neither the person who voted nor the one whose conversation it was has opted out of training
# use, now: consent is read at the time of the query, so an opt-out after the vote hides it too.
_NOBODY_OPTED_OUT = """NOT EXISTS (
    SELECT 1 FROM trainer.consent c
    WHERE c.tenant_id = f.tenant_id AND NOT c.training_allowed
      AND c.user_id IN (f.user_id, r.user_id))"""

_REPLY_COLUMNS = """COALESCE(r.prompt, f.inline_prompt,
        CASE WHEN f.replay ->> 'message' IS NOT NULL THEN jsonb_build_array(
            jsonb_build_object('role', 'user', 'content', f.replay ->> 'message'))
        END) AS prompt,
    COALESCE(f.replay ->> 'ai_reply', r.output, f.inline_output) AS output"""


async def store_effects(
    connection: asyncpg.Connection, effects: Sequence[TrainerEffect]
) -> list[tuple[str, str]]:
    """Applies the effects in order; returns every `(tenant_id, response_id)` whose training
    examples must be rebuilt in the same transaction (`handlers.write_effects` does)."""
    touched: dict[tuple[str, str], None] = {}
    # Responses and feedback commute (inserts that skip conflicts, `current` recomputed from
    # the stored rows, examples rebuilt at the end); consent, erasure and reviews stay in place.
    for kind, run in grouped_runs(effects, barriers=(ConsentSet, UserErased, ReviewRecorded)):
        if kind in (ResponseStored, FeedbackStored):
            touched.update(dict.fromkeys((e.tenant_id, e.response_id) for e in run))
        if kind is ResponseStored:
            await _store_responses(connection, run)
        elif kind is FeedbackStored:
            await _store_feedback(connection, run)
        elif kind is ReviewRecorded:
            await write_reviews(connection, run)
        elif kind is ConsentSet:
            touched.update(dict.fromkeys(await _set_consent(connection, run)))
        elif kind is UserErased:
            await _erase_users(connection, run)
    return list(touched)


async def _store_responses(connection: asyncpg.Connection, run: list[ResponseStored]) -> None:
    await connection.executemany(
        """
        INSERT INTO trainer.responses (tenant_id, response_id, event_id, user_id, prompt,
            context, output, model, action_type, action_data, feature, language,
            prompt_version, experiment, variant, occurred_at, session_id)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
            $17)
        ON CONFLICT DO NOTHING
        """,
        [
            (
                e.tenant_id, e.response_id, e.event_id, e.user_id, e.prompt, e.context,
                e.output, e.model, e.action_type, e.action_data, e.feature, e.language,
                e.prompt_version, e.experiment, e.variant, e.occurred_at, e.session_id,
            )
            for e in run
        ],
    )


async def _store_feedback(connection: asyncpg.Connection, run: list[FeedbackStored]) -> None:
    await connection.executemany(
        """
        INSERT INTO trainer.feedback (tenant_id, event_id, response_id, user_id, kind,
            thumb, rating, comment, correction, replay, inline_prompt, inline_output,
            inline_model, inline_action_type, occurred_at, session_id, person,
            retraction, current)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
            $17, $18, NOT $18)
        ON CONFLICT DO NOTHING
        """,
        [
            (
                e.tenant_id, e.event_id, e.response_id, e.user_id, e.kind, e.thumb,
                e.rating, e.comment, e.correction, e.replay, e.inline_prompt,
                e.inline_output, e.inline_model, e.inline_action_type, e.occurred_at,
                e.session_id, e.person, e.retraction,
            )
            for e in run
        ],
    )
    await _mark_current(connection, run)


async def _set_consent(
    connection: asyncpg.Connection, run: list[ConsentSet]
) -> list[tuple[str, str]]:
    """Stores the latest consent of each user; returns the responses to build again."""
    await connection.executemany(
        """
        INSERT INTO trainer.consent (tenant_id, user_id, training_allowed, changed_at)
        VALUES ($1, $2, $3, $4)
        ON CONFLICT (tenant_id, user_id) DO UPDATE SET
            training_allowed = EXCLUDED.training_allowed,
            changed_at = EXCLUDED.changed_at
        WHERE trainer.consent.changed_at <= EXCLUDED.changed_at
        """,
        [(e.tenant_id, e.user_id, e.training_allowed, e.changed_at) for e in run],
    )
    users = [(e.tenant_id, e.user_id) for e in run]
    await store.remove_opted_out_examples(connection, users=users)
    # Opting back in: the user's responses are built again with their feedback.
    return await store.responses_of_users(connection, users=users)


async def _erase_users(connection: asyncpg.Connection, run: list[UserErased]) -> None:
    users = [(e.tenant_id, e.user_id) for e in run]
    # Tombstones: the user's earlier events arriving later are dropped (migration 0011).
    await connection.executemany(
        """
        INSERT INTO trainer.erased_users (tenant_id, user_digest, erased_at)
        VALUES ($1, public.erased_user_digest($2), $3)
        ON CONFLICT (tenant_id, user_digest) DO UPDATE
        SET erased_at = GREATEST(trainer.erased_users.erased_at, EXCLUDED.erased_at)
        """,
        [(e.tenant_id, e.user_id, e.erased_at) for e in run],
    )
    await store.remove_user_examples(connection, users=users, reason="erasure")
    await store.retract_erased_again(connection, users=users)
    # Snapshots of exports keep nothing of an erased user either.
    await connection.executemany(
        "DELETE FROM trainer.snapshot_examples "
        "WHERE tenant_id = $1 AND user_ids @> ARRAY[$2::text]",
        users,
    )
    # Reviews of the user's responses (labels and notes quote them) go with them too.
    for table in ("review_labels", "review_states"):
        await connection.executemany(
            f"""
            DELETE FROM trainer.{table} x USING trainer.responses r
            WHERE r.tenant_id = $1 AND r.user_id = $2
              AND x.tenant_id = r.tenant_id AND x.response_id = r.response_id
            """,
            users,
        )
    # Explanations quote the prompt: they go with the user's responses too.
    await connection.executemany(
        """
        DELETE FROM trainer.failure_explanations e USING trainer.responses r
        WHERE r.tenant_id = $1 AND r.user_id = $2
          AND e.tenant_id = r.tenant_id AND e.response_id = r.response_id
        """,
        users,
    )
    for table in ("failure_explanations", "feedback", "responses", "consent"):
        await connection.executemany(
            f"DELETE FROM trainer.{table} WHERE tenant_id = $1 AND user_id = $2", users
        )


async def _mark_current(connection: asyncpg.Connection, run: list[FeedbackStored]) -> None:
    """Of each signal the run touched, exactly the latest event by (occurred_at, event_id) is
    current, unless it is a retraction; recomputed from the stored rows, so any arrival order
    gives the same result (the per-response lock serializes one response's feedback)."""
    signals = sorted({(e.tenant_id, e.response_id, e.person, e.kind) for e in run
                      if e.person is not None})
    await mark_current_signals(connection, "trainer.feedback",
                               ("tenant_id", "response_id", "person", "kind"), signals)
