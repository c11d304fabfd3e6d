"""The SQL of the stored training examples (`trainer.examples`, their retractions) and of
what they are built from. No example is built or judged here: that is `examples.rebuild`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any
from uuid import UUID

import asyncpg

from services.trainer.examples.records import FeedbackRecord, ResponseRecord, TrainingExample

# Feedback kinds that can give an example (comments give none).
_EXAMPLE_FEEDBACK_KINDS = ["thumb", "rating", "correction", "replay"]


async def sources(
    connection: asyncpg.Connection, *, responses: Sequence[tuple[str, str]]
) -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
    """The stored responses among `(tenant_id, response_id)` and their current feedback of the
    kinds that can give an example."""
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
    return response_rows, feedback_rows


def response_record(row: asyncpg.Record) -> ResponseRecord:
    return ResponseRecord(
        event_id=row["event_id"], user_id=row["user_id"], session_id=row["session_id"],
        prompt=row["prompt"], context=row["context"], output=row["output"], model=row["model"],
        action_type=row["action_type"], action_data=row["action_data"], feature=row["feature"],
        language=row["language"], prompt_version=row["prompt_version"],
        occurred_at=row["occurred_at"],
    )


def feedback_record(row: asyncpg.Record) -> FeedbackRecord:
    return FeedbackRecord(
        event_id=row["event_id"], user_id=row["user_id"], session_id=row["session_id"],
        kind=row["kind"], thumb=row["thumb"], rating=row["rating"], correction=row["correction"],
        replay=row["replay"], inline_prompt=row["inline_prompt"],
        inline_output=row["inline_output"], inline_model=row["inline_model"],
        inline_action_type=row["inline_action_type"], occurred_at=row["occurred_at"],
        person=row["person"],
    )


async def retract(
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
    # The users' erased-user digests are kept (never their ids), so a later erasure finds it.
    await connection.executemany(
        """
        INSERT INTO trainer.example_retractions
            (example_id, tenant_id, conversation_id, reason, published_at, user_digests)
        VALUES ($1, $2, $3, $4, CASE WHEN $5 THEN NULL ELSE now() END,
                ARRAY(SELECT public.erased_user_digest(u) FROM unnest($6::text[]) AS u))
        """,
        [
            (row["example_id"], row["tenant_id"], row["conversation_id"], reason,
             row["published_revision"] > 0, list(row["user_ids"]))
            for row in deleted
        ],
    )


async def retract_erased_again(
    connection: asyncpg.Connection, *, users: Sequence[tuple[str, str]]
) -> None:
    """For an erasure: the examples of the users' data removed earlier for another reason (an
    opt-out, a superseding change) get an `erasure` retraction too, queued for the topic, so
    the webhooks consumer drops their deliveries and the object exports rewrite them. One
    already retracted for erasure is not retracted again."""
    if not users:
        return
    await connection.execute(
        """
        INSERT INTO trainer.example_retractions
            (example_id, tenant_id, conversation_id, reason, user_digests)
        SELECT DISTINCT ON (r.tenant_id, r.example_id)
               r.example_id, r.tenant_id, r.conversation_id, 'erasure', r.user_digests
        FROM trainer.example_retractions r
        JOIN unnest($1::text[], $2::text[]) AS u(tenant_id, user_id)
          ON r.tenant_id = u.tenant_id
         AND r.user_digests @> ARRAY[public.erased_user_digest(u.user_id)]
        WHERE r.reason <> 'erasure'
          AND NOT EXISTS (
              SELECT 1 FROM trainer.example_retractions done
              WHERE done.tenant_id = r.tenant_id AND done.example_id = r.example_id
                AND done.reason = 'erasure')
        ORDER BY r.tenant_id, r.example_id, r.seq
        """,
        [tenant for tenant, _ in users], [user for _, user in users],
    )


async def remove_user_examples(
    connection: asyncpg.Connection, *, users: Sequence[tuple[str, str]], reason: str
) -> None:
    for tenant_id, user_id in users:
        deleted = await connection.fetch(
            """
            DELETE FROM trainer.examples WHERE tenant_id = $1 AND user_ids @> ARRAY[$2::text]
            RETURNING example_id, tenant_id, conversation_id, published_revision, user_ids
            """,
            tenant_id,
            user_id,
        )
        await retract(connection, deleted=deleted, reason=reason)


async def responses_of_users(
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


async def opted_out(
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


async def remove_opted_out_examples(
    connection: asyncpg.Connection, *, users: Sequence[tuple[str, str]]
) -> None:
    """Removes the examples of the users among `users` whose consent now stands at opted out
    (an older consent event arriving late changes nothing)."""
    await remove_user_examples(
        connection, users=sorted(await opted_out(connection, users=users)), reason="opt_out"
    )


async def delete_stale(
    connection: asyncpg.Connection, *, responses: Sequence[tuple[str, str]], keep: Sequence[UUID]
) -> None:
    """Deletes the stored examples of `responses` not in `keep`, retracting them (superseded)."""
    stale = await connection.fetch(
        """
        DELETE FROM trainer.examples e
        USING unnest($1::text[], $2::text[]) AS t(tenant_id, response_id)
        WHERE e.tenant_id = t.tenant_id AND e.response_id = t.response_id
          AND NOT (e.example_id = ANY($3::uuid[]))
        RETURNING e.example_id, e.tenant_id, e.conversation_id, e.published_revision, e.user_ids
        """,
        [tenant for tenant, _ in responses],
        [response for _, response in responses],
        list(keep),
    )
    await retract(connection, deleted=stale, reason="superseded")


async def stored_records(
    connection: asyncpg.Connection, *, example_ids: Sequence[UUID]
) -> dict[UUID, dict[str, Any]]:
    return {
        row["example_id"]: row["record"]
        for row in await connection.fetch(
            "SELECT example_id, record FROM trainer.examples WHERE example_id = ANY($1::uuid[])",
            list(example_ids),
        )
    }


async def upsert_examples(
    connection: asyncpg.Connection,
    *,
    examples: Sequence[TrainingExample],
    originals: Sequence[UUID | None],
) -> None:
    """Stores each example (a new revision of a changed one) with the original it repeats."""
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
            for e, original in zip(examples, originals, strict=True)
        ],
    )


async def exact_originals(
    connection: asyncpg.Connection, *, examples: Sequence[TrainingExample]
) -> dict[int, UUID]:
    """By position in `examples`: the oldest stored original of the same tenant and group with
    the same content hash, where there is one.

    One query for the batch's keys, without ORDER BY or LIMIT, matched to each example here: a
    per-example subquery ordered by seq let the planner walk the group's originals newest first
    (trainer_examples_newest_originals) while the table's statistics were young, visiting every
    original of the group for each example."""
    keys = sorted({(e.tenant_id, e.dedupe_group, e.content_hash) for e in examples})
    same_hash: dict[tuple[str, str, str], list[tuple[int, UUID]]] = {}
    # Joined on the whole key of `trainer_examples_exact` (tenant, group, hash), so the lookup
    # is an index scan whatever other tenants and groups hold.
    for row in await connection.fetch(
        """
        SELECT e.tenant_id, e.dedupe_group, e.content_hash, e.example_id, e.seq
        FROM trainer.examples e
        JOIN unnest($1::text[], $2::text[], $3::text[]) AS k(tenant_id, dedupe_group, content_hash)
          USING (tenant_id, dedupe_group, content_hash)
        WHERE e.duplicate_of IS NULL
        """,
        [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys],
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
    return exact


_NEWEST_WALKED = """
                SELECT w.example_id, w.seq FROM (
                    SELECT e.example_id, e.seq, e.sketch FROM trainer.examples e
                    WHERE e.tenant_id = t.tenant_id AND e.dedupe_group = t.dedupe_group
                      AND e.example_id <> t.example_id AND e.duplicate_of IS NULL
                    ORDER BY e.seq DESC LIMIT $8
                ) w
                WHERE w.sketch && keys.keys
                ORDER BY w.seq DESC LIMIT $7
"""
_NEWEST_INDEXED = """
                SELECT e.example_id, e.seq FROM trainer.examples e
                WHERE e.tenant_id = t.tenant_id AND e.dedupe_group = t.dedupe_group
                  AND e.sketch && keys.keys AND e.example_id <> t.example_id
                  AND e.duplicate_of IS NULL
                ORDER BY e.seq DESC LIMIT $7
"""


async def near_candidates(
    connection: asyncpg.Connection,
    *,
    examples: Sequence[TrainingExample],
    keys: Sequence[tuple[int, int]],
    limit: int,
    walk: int | None = None,
) -> dict[int, list[tuple[UUID, Sequence[int]]]]:
    """By position in `examples`, for the positions `keys` names: the newest `limit` stored
    originals of its tenant and group that share one of its `(position, key)` sketch keys,
    newest first, with their sketches; with `walk`, only among the group's `walk` newest
    originals (a walk of the newest-originals index, where the sketch's GIN index would hand
    over a whole templated group to be sorted).

    One row per example (its candidates' ids) and one per candidate with its sketch, however
    many examples it is a candidate of: with templated prompts the group's newest originals are
    the candidates of every example."""
    pending = sorted({i for i, _ in keys})
    if not pending:
        return {}
    rows = await connection.fetch(
        _near_candidates_query(walked=walk is not None),
        [i for i, _ in keys],
        [key for _, key in keys],
        pending,
        [examples[i].tenant_id for i in pending],
        [examples[i].dedupe_group for i in pending],
        [examples[i].example_id for i in pending],
        limit,
        *([walk] if walk is not None else []),
    )
    sketch_of = {row["example_id"]: row["sketch"] for row in rows if row["i"] is None}
    return {
        row["i"]: [(example_id, sketch_of[example_id]) for example_id in row["newest_first"]]
        for row in rows if row["i"] is not None
    }


def _near_candidates_query(*, walked: bool) -> str:
    """Rows of two shapes: per example position `i`, its candidates' ids newest first; per
    candidate (`i` NULL), its sketch, once however many examples share it."""
    newest = _NEWEST_WALKED if walked else _NEWEST_INDEXED
    return f"""
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
    """
