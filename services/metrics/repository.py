"""All SQL of the metrics schema: facts, minute/hour/day rollups and late re-attribution.

Every function runs inside the pipeline's transaction, so the facts, the three rollups and the
processed event id change together or not at all: redelivery and replay never double count.

A fact row exists for each counted feedback event and nothing else: for an identified signal
that is its current (winning) event, recorded in `metrics.feedback_signals`. When a later event
of the identity arrives, the old winner's fact is deleted and its counts taken off the rollups
it was counted in (its bucket, under the dimensions the fact holds now), and the new winner's
fact is added, in one transaction. The pipeline's per-response lock serializes every event of
one identity, since the identity includes the response.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from feedbackloop.contract import UserErased
from feedbackloop.pipeline.consumer import grouped_runs
from services.metrics.exposures import ExposureSeen, erase_units, record_exposures
from services.metrics.processing import (
    COUNTERS_OF,
    DIMENSIONS,
    ChoiceCounts,
    Family,
    FeedbackCounts,
    MetricsEffect,
    SessionOpened,
    SignalCounts,
    SubjectDims,
    day_bucket,
    hour_bucket,
    minute_bucket,
)

RollupKey = tuple[object, ...]  # tenant, bucket, *dimensions
Deltas = dict[RollupKey, list[int]]


@dataclass(frozen=True)
class _Tables:
    dims: str
    subject: str
    facts: str
    rollups: tuple[tuple[str, Callable[[datetime], datetime]], ...]


_TABLES: dict[Family, _Tables] = {
    "feedback": _Tables(
        dims="metrics.response_dims",
        subject="response_id",
        facts="metrics.feedback_facts",
        rollups=(
            ("metrics.feedback_minute", minute_bucket),
            ("metrics.feedback_hour", hour_bucket),
            ("metrics.feedback_day", day_bucket),
        ),
    ),
    "recommendation": _Tables(
        dims="metrics.session_dims",
        subject="session_id",
        facts="metrics.choice_facts",
        rollups=(
            ("metrics.recommendation_minute", minute_bucket),
            ("metrics.recommendation_hour", hour_bucket),
            ("metrics.recommendation_day", day_bucket),
        ),
    ),
}


def _upsert_rollup_sql(table: str, family: Family) -> str:
    dims, counters = DIMENSIONS[family], COUNTERS_OF[family]
    key = ("tenant_id", "bucket", *dims)
    casts = ["text", "timestamptz", *["text"] * len(dims), *["bigint"] * len(counters)]
    return f"""
    INSERT INTO {table} ({", ".join((*key, *counters))})
    SELECT * FROM unnest({", ".join(f"${i}::{cast}[]" for i, cast in enumerate(casts, 1))})
    ON CONFLICT ({", ".join(key)}) DO UPDATE SET
        {", ".join(f"{name} = {table}.{name} + EXCLUDED.{name}" for name in counters)}
    """


async def write_effects(connection: asyncpg.Connection, effects: Sequence[MetricsEffect]) -> None:
    # Every effect commutes: a signal counted before its subject is re-attributed when the
    # subject arrives (`_record_subjects`), so the rollups end the same in any order; exposures
    # keep their order among themselves (a unit's first variant is its first exposure's).
    # An erasure stays in place: the exposures before it are forgotten with the user, the ones
    # after it are the user coming back.
    for kind, run in grouped_runs(effects, barriers=(UserErased,)):
        if issubclass(kind, UserErased):
            await erase_units(connection, run)
        elif issubclass(kind, ExposureSeen):
            await record_exposures(connection, run)
        elif issubclass(kind, (FeedbackCounts, ChoiceCounts)):
            await _count_signals(connection, run)
        else:
            await _record_subjects(connection, run)


async def _count_signals(connection: asyncpg.Connection, run: list[SignalCounts]) -> None:
    family = run[0].family
    tables, dims, counters = _TABLES[family], DIMENSIONS[family], COUNTERS_OF[family]
    deltas: Deltas = defaultdict(lambda: [0] * len(counters))
    if family == "feedback":
        feedback = [e for e in run if isinstance(e, FeedbackCounts)]
        run = await _current_signals(connection, feedback, deltas)
        if not run:
            await _apply_deltas(connection, family, deltas)
            return
    known = await connection.fetch(
        f"""
        SELECT d.*
        FROM {tables.dims} d
        JOIN unnest($1::text[], $2::text[]) AS k(tenant_id, subject_id)
          ON d.tenant_id = k.tenant_id AND d.{tables.subject} = k.subject_id
        """,
        [e.tenant_id for e in run],
        [e.subject_id for e in run],
    )
    logged = {
        (r["tenant_id"], r[tables.subject]): tuple(r[name] for name in dims) for r in known
    }
    facts = []
    for e in run:
        resolved = logged.get((e.tenant_id, e.subject_id))
        key_dims = resolved or e.provisional_dims
        facts.append(
            (e.tenant_id, e.event_id, e.subject_id, e.bucket, *key_dims, resolved is not None,
             *e.counts)
        )
        _add(deltas[(e.tenant_id, e.bucket, *key_dims)], e.counts, 1)
    columns = ("tenant_id", "event_id", tables.subject, "bucket", *dims, "resolved", *counters)
    casts = ("text", "uuid", "text", "timestamptz", *["text"] * len(dims), "boolean",
             *["integer"] * len(counters))
    await connection.execute(
        f"""
        INSERT INTO {tables.facts} ({", ".join(columns)})
        SELECT * FROM unnest({", ".join(f"${i}::{cast}[]" for i, cast in enumerate(casts, 1))})
        """,
        *([fact[i] for fact in facts] for i in range(len(columns))),
    )
    await _apply_deltas(connection, family, deltas)


async def _current_signals(
    connection: asyncpg.Connection, run: list[FeedbackCounts], deltas: Deltas
) -> list[SignalCounts]:
    """Of `run`, the events to count now: those without identity and, per identity, the
    latest event if it is later than the identity's current one and not a retraction. Records
    the new current events and takes the facts they replace off `deltas`."""
    plain: list[SignalCounts] = [e for e in run if e.signal is None]
    latest: dict[tuple[str, str], FeedbackCounts] = {}
    for e in run:
        if e.signal is None:
            continue
        key = (e.tenant_id, e.signal)
        if key not in latest or e.order > latest[key].order:
            latest[key] = e
    if not latest:
        return plain
    stored = await connection.fetch(
        """
        SELECT s.tenant_id, s.signal, s.occurred_at, s.event_id, s.retracted
        FROM metrics.feedback_signals s
        JOIN unnest($1::text[], $2::text[]) AS k(tenant_id, signal)
          ON s.tenant_id = k.tenant_id AND s.signal = k.signal
        FOR UPDATE OF s
        """,
        [key[0] for key in latest],
        [key[1] for key in latest],
    )
    replaced: list[tuple[str, object]] = []
    for row in stored:
        key = (row["tenant_id"], row["signal"])
        if (row["occurred_at"], row["event_id"]) >= latest[key].order:
            del latest[key]  # an older event arrived late: the current one stays
        elif not row["retracted"]:
            replaced.append((row["tenant_id"], row["event_id"]))
    if not latest:
        return plain
    winners = sorted(latest.values(), key=lambda e: (e.tenant_id, e.signal or ""))
    await _store_current(connection, winners)
    if replaced:
        await _remove_facts(connection, replaced, deltas)
    return plain + [e for e in winners if not e.retracted]


async def _store_current(connection: asyncpg.Connection, winners: list[FeedbackCounts]) -> None:
    """Record each event as its identity's current one."""
    await connection.execute(
        """
        INSERT INTO metrics.feedback_signals AS s
            (tenant_id, signal, response_id, occurred_at, event_id, retracted)
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::uuid[],
                             $6::boolean[])
        ON CONFLICT (tenant_id, signal) DO UPDATE SET
            occurred_at = EXCLUDED.occurred_at, event_id = EXCLUDED.event_id,
            retracted = EXCLUDED.retracted
        """,
        [e.tenant_id for e in winners],
        [e.signal for e in winners],
        [e.response_id for e in winners],
        [e.occurred_at for e in winners],
        [e.event_id for e in winners],
        [e.retracted for e in winners],
    )


async def _remove_facts(
    connection: asyncpg.Connection, replaced: list[tuple[str, object]], deltas: Deltas
) -> None:
    """Delete the facts of the replaced current events, taking their counts off `deltas`."""
    dims, counters = DIMENSIONS["feedback"], COUNTERS_OF["feedback"]
    removed = await connection.fetch(
        f"""
        DELETE FROM metrics.feedback_facts f
        USING unnest($1::text[], $2::uuid[]) AS k(tenant_id, event_id)
        WHERE f.tenant_id = k.tenant_id AND f.event_id = k.event_id
        RETURNING f.tenant_id, f.bucket, {", ".join(f"f.{n}" for n in (*dims, *counters))}
        """,
        [key[0] for key in replaced],
        [key[1] for key in replaced],
    )
    for fact in removed:
        key_dims = tuple(fact[name] for name in dims)
        _add(deltas[(fact["tenant_id"], fact["bucket"], *key_dims)],
             [fact[name] for name in counters], -1)


async def _record_subjects(connection: asyncpg.Connection, run: list[SubjectDims]) -> None:
    """Store each subject's dimensions (the first one wins), count a new session once, and move
    any signal that arrived before its subject from provisional dimensions to the subject's.
    Two statements for the whole run, whatever its length."""
    family = run[0].family
    first: dict[tuple[str, str], SubjectDims] = {}
    for e in run:
        first.setdefault((e.tenant_id, e.subject_id), e)
    new = await _insert_subjects(connection, family, first)
    if not new:
        return
    deltas: Deltas = defaultdict(lambda: [0] * len(COUNTERS_OF[family]))
    for e in new:
        if isinstance(e, SessionOpened):
            _add(deltas[(e.tenant_id, e.bucket, *e.dims)], e.counts, 1)
    await _resolve_early_facts(connection, family, new, deltas)
    await _apply_deltas(connection, family, deltas)


def _subject_columns(subjects: list[SubjectDims], dims: Sequence[str]) -> list[list[str]]:
    """The subjects as `unnest` arrays: tenants, subject ids, then one array per dimension."""
    columns = [[e.tenant_id for e in subjects], [e.subject_id for e in subjects]]
    return columns + [[e.dims[i] for e in subjects] for i in range(len(dims))]


def _subject_arrays(dims: Sequence[str]) -> str:
    return ", ".join(f"${i}::text[]" for i in range(1, len(dims) + 3))


async def _insert_subjects(
    connection: asyncpg.Connection, family: Family,
    first: dict[tuple[str, str], SubjectDims],
) -> list[SubjectDims]:
    """Store the subjects not stored yet; returns the first event of each one that was new."""
    tables, dims = _TABLES[family], DIMENSIONS[family]
    inserted = await connection.fetch(
        f"""
        INSERT INTO {tables.dims} (tenant_id, {tables.subject}, {", ".join(dims)})
        SELECT * FROM unnest({_subject_arrays(dims)})
        ON CONFLICT DO NOTHING
        RETURNING tenant_id, {tables.subject} AS subject_id
        """,
        *_subject_columns(list(first.values()), dims),
    )
    return [first[(row["tenant_id"], row["subject_id"])] for row in inserted]


async def _resolve_early_facts(
    connection: asyncpg.Connection, family: Family, new: list[SubjectDims], deltas: Deltas
) -> None:
    """The new subjects' facts that arrived before them take the subjects' dimensions; their
    counts move in `deltas` from the provisional dimensions to the subject's."""
    tables, dims, counters = _TABLES[family], DIMENSIONS[family], COUNTERS_OF[family]
    moved = await connection.fetch(
        f"""
        WITH subject AS (
            SELECT * FROM unnest({_subject_arrays(dims)})
                AS s(tenant_id, subject_id, {", ".join(dims)})
        ),
        early AS (
            SELECT f.tenant_id, f.event_id, f.bucket,
                   {", ".join(f"f.{name} AS old_{name}" for name in dims)},
                   {", ".join(f"s.{name} AS new_{name}" for name in dims)},
                   {", ".join(f"f.{name}" for name in counters)}
            FROM {tables.facts} f
            JOIN subject s ON f.tenant_id = s.tenant_id AND f.{tables.subject} = s.subject_id
            WHERE NOT f.resolved
            FOR UPDATE OF f
        )
        UPDATE {tables.facts} f
        SET {", ".join(f"{name} = early.new_{name}" for name in dims)}, resolved = true
        FROM early
        WHERE f.tenant_id = early.tenant_id AND f.event_id = early.event_id
        RETURNING early.*
        """,
        *_subject_columns(new, dims),
    )
    for fact in moved:
        counts = [fact[name] for name in counters]
        old_dims = tuple(fact[f"old_{name}"] for name in dims)
        new_dims = tuple(fact[f"new_{name}"] for name in dims)
        _add(deltas[(fact["tenant_id"], fact["bucket"], *old_dims)], counts, -1)
        _add(deltas[(fact["tenant_id"], fact["bucket"], *new_dims)], counts, 1)


def _add(total: list[int], counts: Iterable[int], sign: int) -> None:
    for index, value in enumerate(counts):
        total[index] += sign * value


def coarsen(deltas: Deltas, truncate: Callable[[datetime], datetime]) -> Deltas:
    """The same deltas with each bucket truncated (to the hour, the day), summed per key:
    one upsert must not touch the same row twice."""
    coarse: Deltas = {}
    for (tenant_id, bucket, *dims), values in deltas.items():
        key = (tenant_id, truncate(bucket), *dims)  # type: ignore[arg-type]
        total = coarse.setdefault(key, [0] * len(values))
        _add(total, values, 1)
    return coarse


async def _apply_deltas(connection: asyncpg.Connection, family: Family, deltas: Deltas) -> None:
    width = 2 + len(DIMENSIONS[family])
    for table, truncate in _TABLES[family].rollups:
        coarse = coarsen(deltas, truncate)
        # Sorted keys: concurrent consumers lock rollup rows in one order, avoiding deadlocks.
        keys = sorted(key for key, values in coarse.items() if any(values))  # type: ignore[type-var]
        if not keys:
            continue
        columns: list[list[object]] = [[key[i] for key in keys] for i in range(width)]
        columns += [[coarse[key][i] for key in keys] for i in range(len(COUNTERS_OF[family]))]
        await connection.execute(_upsert_rollup_sql(table, family), *columns)
