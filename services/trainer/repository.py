"""All SQL of the trainer schema."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from feedbackloop.pipeline.consumer import grouped_runs
from services.trainer import dedupe
from services.trainer.examples import (
    FeedbackRecord,
    ResponseRecord,
    TrainingExample,
    build_examples,
    published_document,
)
from services.trainer.processing import (
    ConsentSet,
    FeedbackStored,
    ResponseStored,
    TrainerEffect,
    UserErased,
)
from services.trainer.review_repository import write_reviews
from services.trainer.reviews import ReviewRecorded

# Feedback kinds that can give an example (comments give none).
_EXAMPLE_FEEDBACK_KINDS = ["thumb", "rating", "correction", "replay"]
# How many near-duplicate candidates one example is compared with (the most recent first).
_NEAR_DUPLICATE_CANDIDATES = 50
# How many of a group's newest originals the near-duplicate lookup walks before it asks the index.
_NEAR_DUPLICATE_WALK = 200


async def write_effects(connection: asyncpg.Connection, effects: Sequence[TrainerEffect]) -> None:
    """Applies the effects in order, then rebuilds the training examples of every response
    the batch touched, in the same transaction: whichever of a response and its feedback
    arrives second completes the join, and an erasure or opt-out later in the batch wins."""
    touched: dict[tuple[str, str], None] = {}
    # Responses and feedback commute (inserts that skip conflicts, `current` recomputed from
    # the stored rows, examples rebuilt at the end); consent, erasure and reviews stay in place.
    for kind, run in grouped_runs(effects, barriers=(ConsentSet, UserErased, ReviewRecorded)):
        if kind in (ResponseStored, FeedbackStored):
            touched.update(dict.fromkeys((e.tenant_id, e.response_id) for e in run))
        if kind is ResponseStored:
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
        elif kind is FeedbackStored:
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
        elif kind is ReviewRecorded:
            await write_reviews(connection, run)
        elif kind is ConsentSet:
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
            await _remove_opted_out_examples(connection, users=users)
            # Opting back in: the user's responses are built again with their feedback.
            touched.update(dict.fromkeys(await _responses_of_users(connection, users=users)))
        elif kind is UserErased:
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
            await _remove_user_examples(connection, users=users, reason="erasure")
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
    if touched:
        await rebuild_examples(connection, responses=list(touched))


async def _mark_current(connection: asyncpg.Connection, run: list[FeedbackStored]) -> None:
    """Of each signal the run touched, exactly the latest event by (occurred_at, event_id) is
    current, unless it is a retraction; recomputed from the stored rows, so any arrival order
    gives the same result (the per-response lock serializes one response's feedback)."""
    signals = sorted({(e.tenant_id, e.response_id, e.person, e.kind) for e in run
                      if e.person is not None})
    if not signals:
        return
    await connection.execute(
        """
        WITH touched AS (
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
                AS t(tenant_id, response_id, person, kind)
        ),
        latest AS (
            SELECT DISTINCT ON (f.tenant_id, f.response_id, f.person, f.kind)
                   f.tenant_id, f.response_id, f.person, f.kind, f.event_id
            FROM trainer.feedback f
            JOIN touched USING (tenant_id, response_id, person, kind)
            ORDER BY f.tenant_id, f.response_id, f.person, f.kind,
                     f.occurred_at DESC, f.event_id DESC
        )
        UPDATE trainer.feedback f
        SET current = (f.event_id = latest.event_id AND NOT f.retraction)
        FROM latest
        WHERE f.tenant_id = latest.tenant_id AND f.response_id = latest.response_id
          AND f.person = latest.person AND f.kind = latest.kind
          AND f.current IS DISTINCT FROM (f.event_id = latest.event_id AND NOT f.retraction)
        """,
        [s[0] for s in signals],
        [s[1] for s in signals],
        [s[2] for s in signals],
        [s[3] for s in signals],
    )


async def _retract(
    connection: asyncpg.Connection, *, deleted: Sequence[asyncpg.Record], reason: str
) -> None:
    """After examples were deleted: records a retraction of each, queued for the topic when it
    had been published there (so consumers of the topic delete it too; unpublished ones never
    reach it), and makes the oldest duplicate of each deleted original the new original (queued
    for publishing)."""
    if not deleted:
        return
    await connection.execute(
        """
        WITH heirs AS (
            SELECT DISTINCT ON (duplicate_of) duplicate_of AS original, example_id AS heir
            FROM trainer.examples WHERE duplicate_of = ANY($1::uuid[])
            ORDER BY duplicate_of, seq
        )
        UPDATE trainer.examples e
        SET duplicate_of = CASE WHEN e.example_id = h.heir THEN NULL ELSE h.heir END,
            updated_at = now()
        FROM heirs h WHERE e.duplicate_of = h.original
        """,
        [row["example_id"] for row in deleted],
    )
    # Every deletion is recorded, for exports to object storage that may hold the example; one
    # that never reached the topic is marked published at once, so the relay sends nothing.
    await connection.executemany(
        """
        INSERT INTO trainer.example_retractions
            (example_id, tenant_id, conversation_id, reason, published_at)
        VALUES ($1, $2, $3, $4, CASE WHEN $5 THEN NULL ELSE now() END)
        """,
        [
            (row["example_id"], row["tenant_id"], row["conversation_id"], reason,
             row["published_revision"] > 0)
            for row in deleted
        ],
    )


async def _remove_user_examples(
    connection: asyncpg.Connection, *, users: Sequence[tuple[str, str]], reason: str
) -> None:
    for tenant_id, user_id in users:
        deleted = await connection.fetch(
            """
            DELETE FROM trainer.examples WHERE tenant_id = $1 AND user_ids @> ARRAY[$2::text]
            RETURNING example_id, tenant_id, conversation_id, published_revision
            """,
            tenant_id,
            user_id,
        )
        await _retract(connection, deleted=deleted, reason=reason)


async def _responses_of_users(
    connection: asyncpg.Connection, *, users: Sequence[tuple[str, str]]
) -> list[tuple[str, str]]:
    """The responses the users logged or gave feedback on."""
    rows = await connection.fetch(
        """
        WITH u(tenant_id, user_id) AS (SELECT * FROM unnest($1::text[], $2::text[]))
        SELECT tenant_id, response_id FROM trainer.feedback JOIN u USING (tenant_id, user_id)
        UNION
        SELECT tenant_id, response_id FROM trainer.responses JOIN u USING (tenant_id, user_id)
        """,
        [tenant for tenant, _ in users],
        [user for _, user in users],
    )
    return [(row["tenant_id"], row["response_id"]) for row in rows]


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


async def _opted_out(
    connection: asyncpg.Connection, *, users: Iterable[tuple[str, str]]
) -> set[tuple[str, str]]:
    """The `(tenant_id, user_id)` among `users` whose consent stands at opted out."""
    users = list(users)
    rows = await connection.fetch(
        """
        SELECT c.tenant_id, c.user_id FROM trainer.consent c
        JOIN unnest($1::text[], $2::text[]) AS u(tenant_id, user_id) USING (tenant_id, user_id)
        WHERE NOT c.training_allowed
        """,
        [tenant for tenant, _ in users],
        [user for _, user in users],
    )
    return {(row["tenant_id"], row["user_id"]) for row in rows}


async def _remove_opted_out_examples(
    connection: asyncpg.Connection, *, users: Sequence[tuple[str, str]]
) -> None:
    """Removes the examples of the users among `users` whose consent now stands at opted out
    (an older consent event arriving late changes nothing)."""
    await _remove_user_examples(
        connection, users=sorted(await _opted_out(connection, users=users)), reason="opt_out"
    )


async def rebuild_examples(
    connection: asyncpg.Connection, *, responses: Sequence[tuple[str, str]]
) -> None:
    """Makes the stored examples of each `(tenant_id, response_id)` exactly what its response
    and current feedback give now (a replaced or retracted signal gives nothing), leaving out
    users who opted out of training use.

    A new or changed example is checked for exact and near duplicates among the tenant's stored
    examples of its group; a changed one gets a new revision and is queued for publishing
    again; one no longer given is deleted (and retracted if it was published).
    """
    tenants = [tenant for tenant, _ in responses]
    ids = [response for _, response in responses]
    response_rows = await connection.fetch(
        """
        SELECT r.* FROM trainer.responses r
        JOIN unnest($1::text[], $2::text[]) AS t(tenant_id, response_id)
            USING (tenant_id, response_id)
        """,
        tenants,
        ids,
    )
    feedback_rows = await connection.fetch(
        """
        SELECT f.* FROM trainer.feedback f
        JOIN unnest($1::text[], $2::text[]) AS t(tenant_id, response_id)
            USING (tenant_id, response_id)
        WHERE f.kind = ANY($3::text[]) AND f.current
        """,
        tenants,
        ids,
        _EXAMPLE_FEEDBACK_KINDS,
    )
    users = sorted(
        {(row["tenant_id"], row["user_id"]) for row in [*response_rows, *feedback_rows]
         if row["user_id"] is not None}
    )
    opted_out = await _opted_out(connection, users=users)
    response_of = {(row["tenant_id"], row["response_id"]): row for row in response_rows}
    feedback_of: dict[tuple[str, str], list[FeedbackRecord]] = {}
    for row in feedback_rows:
        if (row["tenant_id"], row["user_id"]) not in opted_out:
            feedback_of.setdefault((row["tenant_id"], row["response_id"]), []).append(
                _feedback_record(row)
            )
    examples: list[TrainingExample] = []
    for tenant_id, response_id in responses:
        row = response_of.get((tenant_id, response_id))
        if row is None or (tenant_id, row["user_id"]) not in opted_out:
            examples += build_examples(
                tenant_id=tenant_id,
                response_id=response_id,
                response=_response_record(row) if row is not None else None,
                feedback=feedback_of.get((tenant_id, response_id), []),
            )
    await _store_examples(connection, responses=responses, examples=examples)


def _response_record(row: asyncpg.Record) -> ResponseRecord:
    return ResponseRecord(
        event_id=row["event_id"], user_id=row["user_id"], session_id=row["session_id"],
        prompt=row["prompt"], context=row["context"], output=row["output"], model=row["model"],
        action_type=row["action_type"], action_data=row["action_data"], feature=row["feature"],
        language=row["language"], prompt_version=row["prompt_version"],
        occurred_at=row["occurred_at"],
    )


def _feedback_record(row: asyncpg.Record) -> FeedbackRecord:
    return FeedbackRecord(
        event_id=row["event_id"], user_id=row["user_id"], session_id=row["session_id"],
        kind=row["kind"], thumb=row["thumb"], rating=row["rating"], correction=row["correction"],
        replay=row["replay"], inline_prompt=row["inline_prompt"],
        inline_output=row["inline_output"], inline_model=row["inline_model"],
        inline_action_type=row["inline_action_type"], occurred_at=row["occurred_at"],
        person=row["person"],
    )


async def _store_examples(
    connection: asyncpg.Connection,
    *,
    responses: Sequence[tuple[str, str]],
    examples: Sequence[TrainingExample],
) -> None:
    """Makes the stored examples of `responses` exactly `examples`, with a fixed number of
    statements whatever the number of responses (an example id belongs to one response)."""
    keep = [example.example_id for example in examples]
    stale = await connection.fetch(
        """
        DELETE FROM trainer.examples e
        USING unnest($1::text[], $2::text[]) AS t(tenant_id, response_id)
        WHERE e.tenant_id = t.tenant_id AND e.response_id = t.response_id
          AND NOT (e.example_id = ANY($3::uuid[]))
        RETURNING e.example_id, e.tenant_id, e.conversation_id, e.published_revision
        """,
        [tenant for tenant, _ in responses],
        [response for _, response in responses],
        keep,
    )
    await _retract(connection, deleted=stale, reason="superseded")
    stored = {
        row["example_id"]: row["record"]
        for row in await connection.fetch(
            "SELECT example_id, record FROM trainer.examples WHERE example_id = ANY($1::uuid[])",
            keep,
        )
    }
    changed = [example for example in examples if stored.get(example.example_id) != example.record]
    if not changed:
        return
    originals = await _duplicates_of(connection, examples=changed)
    await connection.executemany(
        """
        INSERT INTO trainer.examples (example_id, tenant_id, kind, split, conversation_id,
            response_id, user_ids, model, action_type, quality, occurred_at, record,
            dedupe_group, content_hash, sketch, duplicate_of)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
        ON CONFLICT (example_id) DO UPDATE SET
            split = EXCLUDED.split, conversation_id = EXCLUDED.conversation_id,
            user_ids = EXCLUDED.user_ids, model = EXCLUDED.model,
            action_type = EXCLUDED.action_type, quality = EXCLUDED.quality,
            occurred_at = EXCLUDED.occurred_at, record = EXCLUDED.record,
            dedupe_group = EXCLUDED.dedupe_group, content_hash = EXCLUDED.content_hash,
            sketch = EXCLUDED.sketch, duplicate_of = EXCLUDED.duplicate_of,
            revision = trainer.examples.revision + 1,
            seq = nextval('trainer.example_seq'), updated_at = now()
        WHERE trainer.examples.record IS DISTINCT FROM EXCLUDED.record
        """,
        [
            (
                e.example_id, e.tenant_id, e.kind, e.split, e.conversation_id, e.response_id,
                list(e.user_ids), e.model, e.action_type, e.quality, e.occurred_at, e.record,
                e.dedupe_group, e.content_hash, list(e.sketch), original,
            )
            for e, original in zip(changed, originals, strict=True)
        ],
    )


async def _duplicates_of(
    connection: asyncpg.Connection, *, examples: Sequence[TrainingExample]
) -> list[UUID | None]:
    """For each example in order, the original it repeats exactly or nearly (see `dedupe`), or
    None if it is an original itself: among the stored originals of its tenant and group, then
    among the originals earlier in `examples`, as if they had been stored one by one.

    Exact: the oldest stored original with the same content hash, else the first earlier one.
    (One query for the batch's hashes; another for every example's near candidates, each
    candidate's sketch sent once.)
    Near: the newest candidates sharing a key with the example's sketch (earlier ones in the
    batch being newer than any stored), confirmed with the full sketches. Two consumers storing
    near-duplicates at the same instant can both keep theirs; exact duplicates of one message
    are already prevented by the event-id claim.
    """
    index = list(range(len(examples)))
    # The stored originals with any of the batch's content hashes, matched to each example here.
    # Selected by hash alone: a per-example subquery ordered by seq let the planner walk the
    # group's originals newest first (trainer_examples_newest_originals) while the table's
    # statistics were young, visiting every original of the group for each example.
    same_hash: dict[tuple[str, str, str], list[tuple[int, UUID]]] = {}
    for row in await connection.fetch(
        """
        SELECT tenant_id, dedupe_group, content_hash, example_id, seq FROM trainer.examples
        WHERE content_hash = ANY($1::text[]) AND duplicate_of IS NULL
        """,
        sorted({e.content_hash for e in examples}),
    ):
        same_hash.setdefault(
            (row["tenant_id"], row["dedupe_group"], row["content_hash"]), []
        ).append((row["seq"], row["example_id"]))
    exact: dict[int, UUID] = {}
    for i, e in enumerate(examples):
        stored = [(seq, example_id) for seq, example_id
                  in same_hash.get((e.tenant_id, e.dedupe_group, e.content_hash), [])
                  if example_id != e.example_id]
        if stored:
            exact[i] = min(stored)[1]  # the oldest
    # Near candidates: the newest originals of the group sharing a key with the example. Found
    # by walking the group's newest originals (`trainer_examples_newest_originals`): with
    # templated prompts most of a group shares keys and the first rows walked are the answer,
    # where the sketch's GIN index would hand over the whole group to be sorted (2.3 s a batch
    # of 500 at 15k originals). The walk looks at `_NEAR_DUPLICATE_WALK` originals at most; an
    # example with fewer candidates among them is looked up again through the GIN index, which
    # is quick precisely when few originals share its keys. Either way the candidates are the
    # same: the `_NEAR_DUPLICATE_CANDIDATES` newest sharing a key.
    pending = [i for i in index if i not in exact]
    stored_candidates = await _near_candidates(
        connection, examples=examples, pending=pending, walk=_NEAR_DUPLICATE_WALK
    )
    unfinished = [i for i in pending
                  if len(stored_candidates.get(i, [])) < _NEAR_DUPLICATE_CANDIDATES]
    if unfinished:
        stored_candidates |= await _near_candidates(
            connection, examples=examples, pending=unfinished, walk=None
        )
    originals: list[UUID | None] = []
    # The batch's originals so far: the first of each content hash, and per group oldest first.
    first_with_hash: dict[tuple[str, str, str], UUID] = {}
    earlier: dict[tuple[str, str], list[TrainingExample]] = {}
    for i, example in enumerate(examples):
        group = (example.tenant_id, example.dedupe_group)
        original = exact.get(i) or first_with_hash.get((*group, example.content_hash))
        if original is None:
            own_keys = set(dedupe.candidate_keys(example.sketch))
            candidates: list[tuple[UUID, Sequence[int]]] = []
            for other in reversed(earlier.get(group, [])):
                if len(candidates) == _NEAR_DUPLICATE_CANDIDATES:
                    break
                if not own_keys.isdisjoint(other.sketch):
                    candidates.append((other.example_id, other.sketch))
            candidates += stored_candidates.get(i, [])
            original = dedupe.first_near_duplicate(
                example.sketch, candidates[:_NEAR_DUPLICATE_CANDIDATES]
            )
        originals.append(original)
        if original is None:
            earlier.setdefault(group, []).append(example)
            first_with_hash.setdefault((*group, example.content_hash), example.example_id)
    return originals


async def _near_candidates(
    connection: asyncpg.Connection,
    *,
    examples: Sequence[TrainingExample],
    pending: Sequence[int],
    walk: int | None,
) -> dict[int, list[tuple[UUID, Sequence[int]]]]:
    """For each index in `pending`, the `_NEAR_DUPLICATE_CANDIDATES` newest stored originals of
    the example's tenant and group sharing a key with its sketch, newest first, with their
    sketches; with `walk`, only among the group's `walk` newest originals."""
    if not pending:
        return {}
    keys = [(i, key) for i in pending for key in dedupe.candidate_keys(examples[i].sketch)]
    newest = (
        """
                SELECT w.example_id, w.seq FROM (
                    SELECT e.example_id, e.seq, e.sketch FROM trainer.examples e
                    WHERE e.tenant_id = t.tenant_id AND e.dedupe_group = t.dedupe_group
                      AND e.example_id <> t.example_id AND e.duplicate_of IS NULL
                    ORDER BY e.seq DESC LIMIT $8
                ) w
                WHERE w.sketch && keys.keys
                ORDER BY w.seq DESC LIMIT $7
        """
        if walk is not None else
        """
                SELECT e.example_id, e.seq FROM trainer.examples e
                WHERE e.tenant_id = t.tenant_id AND e.dedupe_group = t.dedupe_group
                  AND e.sketch && keys.keys AND e.example_id <> t.example_id
                  AND e.duplicate_of IS NULL
                ORDER BY e.seq DESC LIMIT $7
        """
    )
    rows = await connection.fetch(
        f"""
        WITH keys AS (
            SELECT i, array_agg(key) AS keys FROM unnest($1::int[], $2::bigint[]) AS k(i, key)
            GROUP BY i
        ),
        candidates AS (
            SELECT t.i, c.example_id, c.seq
            FROM unnest($3::int[], $4::text[], $5::text[], $6::uuid[])
                AS t(i, tenant_id, dedupe_group, example_id)
            JOIN keys USING (i)
            CROSS JOIN LATERAL ({newest}) c
        )
        SELECT i, array_agg(example_id ORDER BY seq DESC) AS newest_first,
               NULL::uuid AS example_id, NULL::bigint[] AS sketch
        FROM candidates GROUP BY i
        UNION ALL
        SELECT NULL, NULL, e.example_id, e.sketch FROM trainer.examples e
        WHERE e.example_id IN (SELECT example_id FROM candidates)
        """,
        [i for i, _ in keys],
        [key for _, key in keys],
        list(pending),
        [examples[i].tenant_id for i in pending],
        [examples[i].dedupe_group for i in pending],
        [examples[i].example_id for i in pending],
        _NEAR_DUPLICATE_CANDIDATES,
        *([walk] if walk is not None else []),
    )
    # One row per example (its candidates' ids, newest first) and one per candidate with its
    # sketch, however many examples it is a candidate of: with templated prompts the group's
    # newest originals are the candidates of every example.
    sketch_of = {row["example_id"]: row["sketch"] for row in rows if row["i"] is None}
    return {
        row["i"]: [(example_id, sketch_of[example_id]) for example_id in row["newest_first"]]
        for row in rows if row["i"] is not None
    }


# One relay publishes at a time, so one conversation's messages reach the topic in order even
# with several trainer replicas.
_RELAY_LOCK_KEY = 7_311_042_404


@dataclass(frozen=True)
class OutboxItem:
    """An example revision or a retraction waiting to be published, in publishing order."""

    seq: int
    kind: str  # "example" | "retraction"
    example_id: UUID
    tenant_id: str
    conversation_id: str
    revision: int
    record: dict[str, Any] | None
    reason: str | None
    created_at: datetime


async def try_lock_relay(connection: asyncpg.Connection) -> bool:
    """Session-level lock; released by `unlock_relay` or when the connection closes."""
    return bool(await connection.fetchval("SELECT pg_try_advisory_lock($1)", _RELAY_LOCK_KEY))


async def unlock_relay(connection: asyncpg.Connection) -> None:
    await connection.execute("SELECT pg_advisory_unlock($1)", _RELAY_LOCK_KEY)


async def pending_outbox(connection: asyncpg.Connection, *, limit: int) -> list[OutboxItem]:
    """The oldest unpublished example revisions and retractions, in `seq` order."""
    rows = await connection.fetch(
        """
        (SELECT seq, 'example' AS kind, example_id, tenant_id, conversation_id, revision,
                record, NULL AS reason, created_at
         FROM trainer.examples
         WHERE published_revision < revision AND duplicate_of IS NULL
         ORDER BY seq LIMIT $1)
        UNION ALL
        (SELECT seq, 'retraction', example_id, tenant_id, conversation_id, 0, NULL, reason,
                created_at
         FROM trainer.example_retractions WHERE published_at IS NULL
         ORDER BY seq LIMIT $1)
        ORDER BY seq LIMIT $1
        """,
        limit,
    )
    return [OutboxItem(**dict(row)) for row in rows]


async def mark_published(connection: asyncpg.Connection, *, items: Sequence[OutboxItem]) -> None:
    """Marks what the broker acknowledged. A revision made meanwhile stays queued."""
    examples = [item for item in items if item.kind == "example"]
    await connection.execute(
        """
        UPDATE trainer.examples e
        SET published_revision = v.revision, published_at = now()
        FROM unnest($1::uuid[], $2::int[]) AS v(example_id, revision)
        WHERE e.example_id = v.example_id AND e.published_revision < v.revision
        """,
        [item.example_id for item in examples],
        [item.revision for item in examples],
    )
    await connection.execute(
        "UPDATE trainer.example_retractions SET published_at = now() WHERE seq = ANY($1::bigint[])",
        [item.seq for item in items if item.kind == "retraction"],
    )


@dataclass(frozen=True)
class ExampleFilter:
    """Which stored examples an export wants. `kinds` empty: every kind."""

    tenant_id: str
    kinds: tuple[str, ...] = ()
    response_ids: tuple[str, ...] | None = None
    split: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    action_type: str | None = None
    model: str | None = None
    min_quality: float | None = None

    def where(self) -> tuple[str, list[Any]]:
        clauses = ["tenant_id = $1", "duplicate_of IS NULL"]
        arguments: list[Any] = [self.tenant_id]
        for column, operator, value in (
            ("kind", "= ANY", list(self.kinds) or None),
            ("response_id", "= ANY", None if self.response_ids is None else list(self.response_ids)),
            ("split", "=", self.split),
            ("occurred_at", ">=", self.since),
            ("occurred_at", "<", self.until),
            ("action_type", "=", self.action_type),
            ("model", "=", self.model),
            ("quality", ">=", self.min_quality),
        ):
            if value is not None:
                arguments.append(value)
                placeholder = f"${len(arguments)}"
                clauses.append(
                    f"{column} = ANY({placeholder}::text[])"
                    if operator == "= ANY"
                    else f"{column} {operator} {placeholder}"
                )
        return " AND ".join(clauses), arguments


async def count_examples(connection: asyncpg.Connection, *, selection: ExampleFilter) -> int:
    where, arguments = selection.where()
    return int(
        await connection.fetchval(f"SELECT count(*) FROM trainer.examples WHERE {where}", *arguments)
    )


async def stream_examples(
    connection: asyncpg.Connection, *, selection: ExampleFilter, chunk: int = 500
) -> AsyncIterator[dict[str, Any]]:
    """The selected examples' published documents, oldest first, read through a cursor so an
    export of any size holds one chunk in memory. Must run inside a transaction."""
    where, arguments = selection.where()
    cursor = connection.cursor(
        f"""
        SELECT record, revision, created_at FROM trainer.examples WHERE {where}
        ORDER BY occurred_at, example_id
        """,
        *arguments,
        prefetch=chunk,
    )
    async for row in cursor:
        yield published_document(
            row["record"], revision=row["revision"], created_at=row["created_at"]
        )



# One explainer at a time across trainer replicas, so no reply is sent to the model twice.
_EXPLAINER_LOCK_KEY = 7_311_042_405


@dataclass(frozen=True)
class FailureToExplain:
    """A down-voted reply with what the model needs to explain it."""

    tenant_id: str
    feedback_event_id: UUID
    response_id: str
    user_id: str | None
    prompt: list[dict[str, Any]]
    output: str
    action_type: str | None
    attempts: int


async def try_lock_explainer(connection: asyncpg.Connection) -> bool:
    return bool(await connection.fetchval("SELECT pg_try_advisory_lock($1)", _EXPLAINER_LOCK_KEY))


async def unlock_explainer(connection: asyncpg.Connection) -> None:
    await connection.execute("SELECT pg_advisory_unlock($1)", _EXPLAINER_LOCK_KEY)


async def failures_to_explain(
    connection: asyncpg.Connection, *, limit: int, max_attempts: int
) -> list[FailureToExplain]:
    """Thumbs-down and not-useful replays whose prompt and reply are known, not explained yet
    and not failed `max_attempts` times, where neither the voter nor the conversation's user
    opted out; oldest first."""
    rows = await connection.fetch(
        f"""
        SELECT * FROM (
            SELECT f.tenant_id, f.event_id AS feedback_event_id, f.response_id, f.user_id,
                   f.occurred_at,
                   {_REPLY_COLUMNS},
                   COALESCE(r.action_type, f.inline_action_type) AS action_type,
                   COALESCE(e.attempts, 0) AS attempts
            FROM trainer.feedback f
            LEFT JOIN trainer.responses r USING (tenant_id, response_id)
            LEFT JOIN trainer.failure_explanations e
                ON e.tenant_id = f.tenant_id AND e.feedback_event_id = f.event_id
            WHERE (f.thumb = 'down' OR (f.replay ->> 'useful')::boolean IS FALSE) AND f.current
              AND (e.status IS NULL OR (e.status = 'failed' AND e.attempts < $2))
              AND {_NOBODY_OPTED_OUT}
        ) AS pending
        -- One whose prompt or reply is not known yet waits for the response.
        WHERE prompt IS NOT NULL AND output IS NOT NULL
        ORDER BY occurred_at, feedback_event_id
        LIMIT $1
        """,
        limit,
        max_attempts,
    )
    return [
        FailureToExplain(**{key: value for key, value in row.items() if key != "occurred_at"})
        for row in rows
    ]


async def record_explanation(
    connection: asyncpg.Connection,
    *,
    failure: FailureToExplain,
    explanation: str | None,
    model: str,
    error: str | None,
) -> None:
    """Stores the model's answer, or the error of a failed attempt (counted)."""
    await connection.execute(
        """
        INSERT INTO trainer.failure_explanations (tenant_id, feedback_event_id, response_id,
            user_id, status, explanation, model, attempts, error)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
        ON CONFLICT (tenant_id, feedback_event_id) DO UPDATE SET
            status = EXCLUDED.status, explanation = EXCLUDED.explanation,
            model = EXCLUDED.model, attempts = EXCLUDED.attempts, error = EXCLUDED.error,
            updated_at = now()
        """,
        failure.tenant_id, failure.feedback_event_id, failure.response_id, failure.user_id,
        "explained" if explanation is not None else "failed", explanation, model,
        failure.attempts + 1, error,
    )


async def down_voted_replies(
    connection: asyncpg.Connection | asyncpg.Pool,
    *,
    tenant_id: str,
    since: datetime,
    until: datetime,
    action_type: str | None,
    limit: int,
) -> list[asyncpg.Record]:
    """The tenant's down-voted replies in `[since, until)`, newest first, with the prompt,
    the reply and the explanation when there is one; none of a voter or a conversation's user
    who has opted out of training use (erased users' rows are gone already)."""
    return await connection.fetch(
        f"""
        SELECT f.event_id, f.response_id, f.occurred_at,
               {_REPLY_COLUMNS},
               COALESCE(r.action_type, f.inline_action_type, 'unspecified') AS action_type,
               e.explanation
        FROM trainer.feedback f
        LEFT JOIN trainer.responses r USING (tenant_id, response_id)
        LEFT JOIN trainer.failure_explanations e
            ON e.tenant_id = f.tenant_id AND e.feedback_event_id = f.event_id
            AND e.status = 'explained'
        WHERE f.tenant_id = $1 AND f.occurred_at >= $2 AND f.occurred_at < $3
          AND (f.thumb = 'down' OR (f.replay ->> 'useful')::boolean IS FALSE) AND f.current
          AND ($4::text IS NULL OR COALESCE(r.action_type, f.inline_action_type) = $4)
          AND {_NOBODY_OPTED_OUT}
        ORDER BY f.occurred_at DESC
        LIMIT $5
        """,
        tenant_id, since, until, action_type, limit,
    )


# One retraining run at a time across trainer replicas.
_RETRAINING_LOCK_KEY = 7_311_042_406
TERMINAL_FINE_TUNE_STATUSES = ("succeeded", "failed", "cancelled")


async def try_lock_retraining(connection: asyncpg.Connection) -> bool:
    return bool(await connection.fetchval("SELECT pg_try_advisory_lock($1)", _RETRAINING_LOCK_KEY))


async def unlock_retraining(connection: asyncpg.Connection) -> None:
    await connection.execute("SELECT pg_advisory_unlock($1)", _RETRAINING_LOCK_KEY)


async def last_retraining_run(connection: asyncpg.Connection) -> datetime | None:
    value: datetime | None = await connection.fetchval(
        "SELECT max(started_at) FROM trainer.retraining_runs"
    )
    return value


async def record_retraining_run(
    connection: asyncpg.Connection, *, started_at: datetime, jobs: int
) -> None:
    await connection.execute(
        "INSERT INTO trainer.retraining_runs (started_at, jobs) VALUES ($1, $2)", started_at, jobs
    )


async def tenants_with_down_votes(
    connection: asyncpg.Connection, *, since: datetime, until: datetime
) -> list[str]:
    rows = await connection.fetch(
        """
        SELECT DISTINCT tenant_id FROM trainer.feedback
        WHERE occurred_at >= $1 AND occurred_at < $2
          AND (thumb = 'down' OR (replay ->> 'useful')::boolean IS FALSE) AND current
        ORDER BY tenant_id
        """,
        since,
        until,
    )
    return [row["tenant_id"] for row in rows]


@dataclass(frozen=True)
class RetrainingJob:
    job_id: UUID
    tenant_id: str
    mode: str
    method: str
    status: str
    prompt_count: int
    example_count: int
    file_path: str | None = None
    provider: str | None = None
    base_url: str | None = None
    model: str | None = None
    provider_file_id: str | None = None
    provider_job_id: str | None = None
    fine_tuned_model: str | None = None
    error: str | None = None


async def insert_retraining_job(connection: asyncpg.Connection, *, job: RetrainingJob) -> None:
    await connection.execute(
        """
        INSERT INTO trainer.retraining_jobs (job_id, tenant_id, mode, method, status,
            prompt_count, example_count, file_path, provider, base_url, model,
            provider_file_id, provider_job_id, fine_tuned_model, error)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
        """,
        job.job_id, job.tenant_id, job.mode, job.method, job.status, job.prompt_count,
        job.example_count, job.file_path, job.provider, job.base_url, job.model,
        job.provider_file_id, job.provider_job_id, job.fine_tuned_model, job.error,
    )


async def unfinished_fine_tune_jobs(connection: asyncpg.Connection) -> list[RetrainingJob]:
    rows = await connection.fetch(
        """
        SELECT job_id, tenant_id, mode, method, status, prompt_count, example_count, file_path,
               provider, base_url, model, provider_file_id, provider_job_id, fine_tuned_model,
               error
        FROM trainer.retraining_jobs
        WHERE provider_job_id IS NOT NULL AND NOT (status = ANY($1::text[]))
        ORDER BY created_at
        """,
        list(TERMINAL_FINE_TUNE_STATUSES),
    )
    return [RetrainingJob(**dict(row)) for row in rows]


async def update_fine_tune_status(
    connection: asyncpg.Connection,
    *,
    job_id: UUID,
    status: str,
    fine_tuned_model: str | None,
    error: str | None,
) -> None:
    await connection.execute(
        """
        UPDATE trainer.retraining_jobs
        SET status = $2, fine_tuned_model = $3, error = $4, updated_at = now()
        WHERE job_id = $1
        """,
        job_id, status, fine_tuned_model, error,
    )
