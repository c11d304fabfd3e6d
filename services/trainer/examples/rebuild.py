"""Rebuilding the training examples of the responses a batch touched: read what they are
built from, build (`examples.build`), find duplicates (`examples.dedupe`), store
(`examples.store`). The domain decisions are made here and in the pure modules; the SQL is in
`examples.store`."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

import asyncpg

from services.trainer.examples import dedupe, store
from services.trainer.examples.build import build_examples
from services.trainer.examples.records import FeedbackRecord, TrainingExample

# How many near-duplicate candidates one example is compared with (the most recent first).
_NEAR_DUPLICATE_CANDIDATES = 50
# How many of a group's newest originals the near-duplicate lookup walks before it asks the index.
_NEAR_DUPLICATE_WALK = 200


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
    response_rows, feedback_rows = await store.sources(connection, responses=responses)
    users = sorted(
        {(row["tenant_id"], row["user_id"]) for row in [*response_rows, *feedback_rows]
         if row["user_id"] is not None}
    )
    opted_out = await store.opted_out(connection, users=users)
    response_of = {(row["tenant_id"], row["response_id"]): row for row in response_rows}
    feedback_of: dict[tuple[str, str], list[FeedbackRecord]] = {}
    for row in feedback_rows:
        if (row["tenant_id"], row["user_id"]) not in opted_out:
            feedback_of.setdefault((row["tenant_id"], row["response_id"]), []).append(
                store.feedback_record(row)
            )
    examples: list[TrainingExample] = []
    for tenant_id, response_id in responses:
        row = response_of.get((tenant_id, response_id))
        if row is None or (tenant_id, row["user_id"]) not in opted_out:
            examples += build_examples(
                tenant_id=tenant_id,
                response_id=response_id,
                response=store.response_record(row) if row is not None else None,
                feedback=feedback_of.get((tenant_id, response_id), []),
            )
    await _store(connection, responses=responses, examples=examples)


async def _store(
    connection: asyncpg.Connection,
    *,
    responses: Sequence[tuple[str, str]],
    examples: Sequence[TrainingExample],
) -> None:
    """Makes the stored examples of `responses` exactly `examples`, with a fixed number of
    statements whatever the number of responses (an example id belongs to one response)."""
    keep = [example.example_id for example in examples]
    await store.delete_stale(connection, responses=responses, keep=keep)
    stored = await store.stored_records(connection, example_ids=keep)
    changed = [example for example in examples if stored.get(example.example_id) != example.record]
    if not changed:
        return
    originals = await _duplicates_of(connection, examples=changed)
    await store.upsert_examples(connection, examples=changed, originals=originals)


async def _duplicates_of(
    connection: asyncpg.Connection, *, examples: Sequence[TrainingExample]
) -> list[UUID | None]:
    """For each example in order, the original it repeats exactly or nearly (see `dedupe`), or
    None if it is an original itself: among the stored originals of its tenant and group, then
    among the originals earlier in `examples`, as if they had been stored one by one.

    Exact: the oldest stored original with the same content hash, else the first earlier one.
    Near: the newest candidates sharing a key with the example's sketch (earlier ones in the
    batch being newer than any stored), confirmed with the full sketches. Two consumers storing
    near-duplicates at the same instant can both keep theirs; exact duplicates of one message
    are already prevented by the event-id claim.
    """
    exact = await store.exact_originals(connection, examples=examples)
    keys = [(i, key) for i, e in enumerate(examples) if i not in exact
            for key in dedupe.candidate_keys(e.sketch)]
    # Near candidates are first looked for among the group's `_NEAR_DUPLICATE_WALK` newest
    # originals: with templated prompts most of a group shares keys and the first rows walked
    # are the answer (the GIN index would hand over the whole group to be sorted: 2.3 s a batch
    # of 500 at 15k originals). An example with fewer candidates there is looked up again
    # through the index, quick precisely when few originals share its keys. Either way the
    # candidates are the same: the `_NEAR_DUPLICATE_CANDIDATES` newest sharing a key.
    stored_candidates = await store.near_candidates(
        connection, examples=examples, keys=keys, limit=_NEAR_DUPLICATE_CANDIDATES,
        walk=_NEAR_DUPLICATE_WALK,
    )
    unfinished = {i for i, _ in keys
                  if len(stored_candidates.get(i, [])) < _NEAR_DUPLICATE_CANDIDATES}
    if unfinished:
        stored_candidates |= await store.near_candidates(
            connection, examples=examples, keys=[(i, key) for i, key in keys if i in unfinished],
            limit=_NEAR_DUPLICATE_CANDIDATES,
        )
    return dedupe.batch_originals(
        examples, exact, stored_candidates, limit=_NEAR_DUPLICATE_CANDIDATES
    )
