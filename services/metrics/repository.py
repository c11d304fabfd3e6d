"""All SQL of the metrics schema: facts, per-minute rollups and late re-attribution."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime

import asyncpg

from feedbackloop.consumer import consecutive_runs
from services.metrics.processing import (
    COUNTERS,
    UNKNOWN,
    FeedbackCounts,
    MetricsEffect,
    ResponseDims,
)

RollupKey = tuple[str, datetime, str, str]  # tenant, bucket, action_type, model

_UPSERT_ROLLUP = f"""
INSERT INTO metrics.feedback_minute (tenant_id, bucket, action_type, model, {", ".join(COUNTERS)})
SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[],
    {", ".join(f"${i}::bigint[]" for i in range(5, 5 + len(COUNTERS)))})
ON CONFLICT (tenant_id, bucket, action_type, model) DO UPDATE SET
    {", ".join(f"{name} = metrics.feedback_minute.{name} + EXCLUDED.{name}" for name in COUNTERS)}
"""


async def write_effects(connection: asyncpg.Connection, effects: Sequence[MetricsEffect]) -> None:
    for kind, run in consecutive_runs(effects):
        if kind is ResponseDims:
            await _record_responses(connection, run)
        else:
            await _count_feedback(connection, run)


async def _count_feedback(connection: asyncpg.Connection, run: list[FeedbackCounts]) -> None:
    known = await connection.fetch(
        """
        SELECT d.tenant_id, d.response_id, d.action_type, d.model
        FROM metrics.response_dims d
        JOIN unnest($1::text[], $2::text[]) AS k(tenant_id, response_id)
          ON d.tenant_id = k.tenant_id AND d.response_id = k.response_id
        """,
        [e.tenant_id for e in run],
        [e.response_id for e in run],
    )
    dims = {(r["tenant_id"], r["response_id"]): (r["action_type"], r["model"]) for r in known}
    facts = []
    deltas: dict[RollupKey, list[int]] = defaultdict(lambda: [0] * len(COUNTERS))
    for e in run:
        logged = dims.get((e.tenant_id, e.response_id))
        action_type, model = logged or (e.action_type or UNKNOWN, e.model or UNKNOWN)
        facts.append(
            (e.tenant_id, e.event_id, e.response_id, e.bucket, action_type, model,
             logged is not None, *e.counts)
        )
        _add(deltas[(e.tenant_id, e.bucket, action_type, model)], e.counts, 1)
    await connection.executemany(
        f"""
        INSERT INTO metrics.feedback_facts (tenant_id, event_id, response_id, bucket,
            action_type, model, resolved, {", ".join(COUNTERS)})
        VALUES ({", ".join(f"${i}" for i in range(1, 8 + len(COUNTERS)))})
        """,
        facts,
    )
    await _apply_deltas(connection, deltas)


async def _record_responses(connection: asyncpg.Connection, run: list[ResponseDims]) -> None:
    """Store each response's dimensions (first one wins) and move any feedback that arrived
    before it from its provisional dimensions to the response's."""
    deltas: dict[RollupKey, list[int]] = defaultdict(lambda: [0] * len(COUNTERS))
    for e in run:
        inserted = await connection.fetchval(
            """
            INSERT INTO metrics.response_dims (tenant_id, response_id, action_type, model)
            VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING true
            """,
            e.tenant_id,
            e.response_id,
            e.action_type,
            e.model,
        )
        if not inserted:
            continue
        moved = await connection.fetch(
            f"""
            WITH early AS (
                SELECT tenant_id, event_id, bucket, action_type, model, {", ".join(COUNTERS)}
                FROM metrics.feedback_facts
                WHERE tenant_id = $1 AND response_id = $2 AND NOT resolved
                FOR UPDATE
            )
            UPDATE metrics.feedback_facts f
            SET action_type = $3, model = $4, resolved = true
            FROM early
            WHERE f.tenant_id = early.tenant_id AND f.event_id = early.event_id
            RETURNING early.*
            """,
            e.tenant_id,
            e.response_id,
            e.action_type,
            e.model,
        )
        for fact in moved:
            counts = [fact[name] for name in COUNTERS]
            _add(deltas[(e.tenant_id, fact["bucket"], fact["action_type"], fact["model"])],
                 counts, -1)
            _add(deltas[(e.tenant_id, fact["bucket"], e.action_type, e.model)], counts, 1)
    await _apply_deltas(connection, deltas)


def _add(total: list[int], counts: Iterable[int], sign: int) -> None:
    for index, value in enumerate(counts):
        total[index] += sign * value


async def _apply_deltas(
    connection: asyncpg.Connection, deltas: dict[RollupKey, list[int]]
) -> None:
    # Sorted keys: concurrent consumers lock rollup rows in one order, avoiding deadlocks.
    keys = sorted(key for key, values in deltas.items() if any(values))
    if not keys:
        return
    columns: list[list[object]] = [[key[i] for key in keys] for i in range(4)]
    columns += [[deltas[key][i] for key in keys] for i in range(len(COUNTERS))]
    await connection.execute(_UPSERT_ROLLUP, *columns)
