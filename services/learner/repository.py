"""The learner schema's writes and its own reads (private): the choice log, refits and weights
versions. The reads other services make are in `reads.py`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg

from feedbackloop.pipeline.consumer import grouped_runs
from feedbackloop.postgres import record_tombstones
from services.learner.learning import SegmentWeights
from services.learner.processing import (
    ChoiceMade,
    LearnerEffect,
    PendingChoices,
    SessionShown,
    UserErased,
)

Connection: TypeAlias = asyncpg.Connection | asyncpg.Pool


async def write_effects(connection: asyncpg.Connection, effects: Sequence[LearnerEffect]) -> None:
    # An erasure must see what came before it; sessions and choices commute.
    for kind, run in grouped_runs(effects, barriers=(UserErased,)):
        if kind is SessionShown:
            await _insert_sessions(connection, run)
        elif kind is ChoiceMade:
            await _insert_choices(connection, run)
        elif kind is UserErased:
            await _erase_users(connection, run)


async def _insert_sessions(connection: asyncpg.Connection, run: list[SessionShown]) -> None:
    await connection.executemany(
        """
        INSERT INTO learner.sessions (tenant_id, session_id, event_id, user_id,
            algorithm_version, segment, complexity, stated_preferences, options,
            experiment, variant, occurred_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
        ON CONFLICT DO NOTHING
        """,
        [
            (
                e.tenant_id, e.session_id, e.event_id, e.user_id, e.algorithm_version,
                e.segment, e.complexity, e.stated_preferences, e.options, e.experiment,
                e.variant, e.occurred_at,
            )
            for e in run
        ],
    )


async def _insert_choices(connection: asyncpg.Connection, run: list[ChoiceMade]) -> None:
    await connection.executemany(
        """
        INSERT INTO learner.choices (tenant_id, event_id, session_id, user_id,
            chosen_item_id, chosen_rank, important_factors, decision_time_seconds,
            satisfaction, reasoning, occurred_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
        ON CONFLICT DO NOTHING
        """,
        [
            (
                e.tenant_id, e.event_id, e.session_id, e.user_id, e.chosen_item_id,
                e.chosen_rank, e.important_factors, e.decision_time_seconds,
                e.satisfaction, e.reasoning, e.occurred_at,
            )
            for e in run
        ],
    )


async def _erase_users(connection: asyncpg.Connection, run: list[UserErased]) -> None:
    users = [(e.tenant_id, e.user_id) for e in run]
    # Tombstones: the user's earlier events arriving later are dropped (migration 0011).
    await record_tombstones(connection, "learner", run)
    await connection.executemany(
        "DELETE FROM learner.choices WHERE tenant_id = $1 AND user_id = $2", users
    )
    await connection.executemany(
        "DELETE FROM learner.sessions WHERE tenant_id = $1 AND user_id = $2", users
    )
    await connection.executemany(
        "DELETE FROM learner.customer_weights WHERE tenant_id = $1 AND user_id = $2",
        users,
    )


# Refits and weights versions.

_SEGMENT = "COALESCE(s.segment, 'balanced')"


async def pending_choices(connection: Connection) -> list[PendingChoices]:
    """Per tenant and segment, the choices recorded after the segment's last refit read."""
    rows = await connection.fetch(
        f"""
        SELECT c.tenant_id, {_SEGMENT} AS segment, count(*) AS new_choices,
               min(c.recorded_at) AS oldest_new_at, min(r.fitted_at) AS last_fitted_at
        FROM learner.choices c
        JOIN learner.sessions s USING (tenant_id, session_id)
        LEFT JOIN learner.refit_state r
            ON r.tenant_id = c.tenant_id AND r.segment = {_SEGMENT}
        WHERE c.chosen_item_id IS NOT NULL
          AND (r.fitted_through IS NULL OR c.recorded_at > r.fitted_through)
        GROUP BY 1, 2
        """
    )
    return [PendingChoices(**dict(row)) for row in rows]


async def recent_choices(
    connection: Connection, *, tenant_id: str, limit: int
) -> list[asyncpg.Record]:
    """The tenant's newest `limit` choices of an option, with the options shown, the customer
    and the segment the session was ranked for (`balanced` when it named none). A segment
    whose preferences shifted forgets the choices before its window."""
    return await connection.fetch(
        f"""
        SELECT {_SEGMENT} AS segment, s.options, c.chosen_item_id, c.recorded_at, c.user_id
        FROM learner.choices c
        JOIN learner.sessions s USING (tenant_id, session_id)
        LEFT JOIN learner.refit_state r
            ON r.tenant_id = c.tenant_id AND r.segment = {_SEGMENT}
        WHERE c.tenant_id = $1 AND c.chosen_item_id IS NOT NULL
          AND (r.window_start IS NULL OR c.recorded_at >= r.window_start)
        ORDER BY c.recorded_at DESC
        LIMIT $2
        """,
        tenant_id,
        limit,
    )


async def recent_choices_of_segment(
    connection: Connection, *, tenant_id: str, segment: str, limit: int
) -> list[asyncpg.Record]:
    """The segment's newest `limit` choices of an option in its window, newest first."""
    return await connection.fetch(
        f"""
        SELECT s.options, c.chosen_item_id
        FROM learner.choices c
        JOIN learner.sessions s USING (tenant_id, session_id)
        LEFT JOIN learner.refit_state r ON r.tenant_id = c.tenant_id AND r.segment = $2
        WHERE c.tenant_id = $1 AND {_SEGMENT} = $2 AND c.chosen_item_id IS NOT NULL
          AND (r.window_start IS NULL OR c.recorded_at >= r.window_start)
        ORDER BY c.recorded_at DESC
        LIMIT $3
        """,
        tenant_id,
        segment,
        limit,
    )


async def read_watermark(connection: Connection) -> datetime:
    """A time before which no choice can still commit: the start of the oldest transaction
    open now (a choice's `recorded_at` is its transaction's start), or now when none is.

    Read before reading choices, it bounds what a refit may mark as read: a choice committed
    later by a transaction that was already open is then still seen as new.
    """
    watermark: datetime = await connection.fetchval(
        """
        SELECT LEAST(clock_timestamp(), min(xact_start))
        FROM pg_stat_activity
        WHERE datname = current_database() AND pid <> pg_backend_pid()
          AND xact_start IS NOT NULL
        """
    )
    return watermark


async def lock_tenant_refits(connection: Connection, *, tenant_id: str) -> None:
    """Serialise refits of one tenant across learner replicas, until the transaction ends."""
    await connection.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('learner.refit:' || $1, 0))", tenant_id
    )


async def latest_coefficients(
    connection: Connection, *, tenant_id: str
) -> dict[str, dict[str, float]]:
    """The raw coefficients of each segment's newest version (warm starts)."""
    rows = await connection.fetch(
        """
        SELECT DISTINCT ON (segment) segment, coefficients
        FROM learner.weights_versions WHERE tenant_id = $1
        ORDER BY segment, version DESC
        """,
        tenant_id,
    )
    return {row["segment"]: row["coefficients"] for row in rows}


async def insert_weights_version(
    connection: Connection,
    *,
    tenant_id: str,
    segment: str,
    fit: SegmentWeights,
    fit_seconds: float,
    kind: str = "full",
    promotion: Mapping[str, Any] | None = None,
    drift: Mapping[str, Any] | None = None,
) -> int:
    """Store an accepted fit as the segment's next version; returns the version number. It is
    served once promoted (`promotion["promoted"]`, true when no check was made)."""
    version: int = await connection.fetchval(
        """
        INSERT INTO learner.weights_versions (tenant_id, segment, version, factors, weights,
            intervals, confidence, sample_size, rank_effects, coefficients, covariance,
            fit_seconds, kind, posterior, promoted, promotion, drift)
        SELECT $1, $2, COALESCE(max(version), 0) + 1, $3, $4, $5, $6, $7, $8, $9, $10, $11,
               $12, $13, $14, $15, $16
        FROM learner.weights_versions WHERE tenant_id = $1 AND segment = $2
        RETURNING version
        """,
        tenant_id,
        segment,
        list(fit.factors),
        fit.weights,
        {name: list(bounds) for name, bounds in fit.intervals.items()},
        fit.confidence,
        fit.sample_size,
        {str(rank): value for rank, value in fit.rank_effects.items()},
        fit.coefficients,
        fit.covariance,
        fit_seconds,
        kind,
        fit.posterior.to_json() if fit.posterior is not None else None,
        bool((promotion or {}).get("promoted", True)),
        dict(promotion) if promotion is not None else None,
        dict(drift) if drift is not None else None,
    )
    return version


async def newest_version(
    connection: Connection, *, tenant_id: str, segment: str
) -> asyncpg.Record | None:
    """The segment's newest version, promoted or not: where the next incremental step starts."""
    return await connection.fetchrow(
        """
        SELECT version, kind, posterior, sample_size, promoted FROM learner.weights_versions
        WHERE tenant_id = $1 AND segment = $2 ORDER BY version DESC LIMIT 1
        """,
        tenant_id,
        segment,
    )


async def promoted_posterior(
    connection: Connection, *, tenant_id: str, segment: str
) -> asyncpg.Record | None:
    """The posterior of the version served now (the newest promoted one)."""
    return await connection.fetchrow(
        """
        SELECT version, posterior FROM learner.weights_versions
        WHERE tenant_id = $1 AND segment = $2 AND promoted ORDER BY version DESC LIMIT 1
        """,
        tenant_id,
        segment,
    )


async def incremental_pending(connection: Connection) -> list[asyncpg.Record]:
    """Per tenant and segment that has a version with a posterior: how far increments and
    refits have absorbed its choices (`through`), and whether any choice came after."""
    return await connection.fetch(
        f"""
        SELECT r.tenant_id, r.segment,
               GREATEST(r.fitted_through, r.updated_through) AS through
        FROM learner.refit_state r
        WHERE EXISTS (
            SELECT 1 FROM learner.weights_versions v
            WHERE v.tenant_id = r.tenant_id AND v.segment = r.segment
              AND v.posterior IS NOT NULL)
          AND EXISTS (
            SELECT 1 FROM learner.choices c JOIN learner.sessions s USING (tenant_id, session_id)
            WHERE c.tenant_id = r.tenant_id AND {_SEGMENT} = r.segment
              AND c.chosen_item_id IS NOT NULL
              AND c.recorded_at > GREATEST(r.fitted_through, r.updated_through))
        ORDER BY 1, 2
        """
    )


async def choices_after(
    connection: Connection, *, tenant_id: str, segment: str, after: datetime,
    through: datetime, limit: int,
) -> list[asyncpg.Record]:
    """The segment's choices recorded in `(after, through]`, oldest first."""
    return await connection.fetch(
        f"""
        SELECT {_SEGMENT} AS segment, s.options, c.chosen_item_id, c.recorded_at, c.user_id
        FROM learner.choices c
        JOIN learner.sessions s USING (tenant_id, session_id)
        WHERE c.tenant_id = $1 AND {_SEGMENT} = $2 AND c.chosen_item_id IS NOT NULL
          AND c.recorded_at > $3 AND c.recorded_at <= $4
        ORDER BY c.recorded_at
        LIMIT $5
        """,
        tenant_id,
        segment,
        after,
        through,
        limit,
    )


async def recent_batch_scores(
    connection: Connection, *, tenant_id: str, segment: str, limit: int
) -> list[asyncpg.Record]:
    """The batch scores the newest incremental versions kept (`drift`), oldest first, from
    the segment's window on."""
    return await connection.fetch(
        """
        SELECT v.version, v.drift FROM (
            SELECT version, drift FROM learner.weights_versions v
            LEFT JOIN learner.refit_state r USING (tenant_id, segment)
            WHERE v.tenant_id = $1 AND v.segment = $2 AND v.drift ? 'batch'
              AND (r.window_start IS NULL
                   OR (v.drift->'batch'->>'from')::timestamptz >= r.window_start)
            ORDER BY version DESC LIMIT $3
        ) v ORDER BY v.version
        """,
        tenant_id,
        segment,
        limit,
    )


async def mark_updated(
    connection: Connection, *, tenant_id: str, segment: str, updated_through: datetime
) -> None:
    await connection.execute(
        """
        UPDATE learner.refit_state SET updated_through = GREATEST(updated_through, $3)
        WHERE tenant_id = $1 AND segment = $2
        """,
        tenant_id,
        segment,
        updated_through,
    )


async def forget_before(
    connection: Connection, *, tenant_id: str, segment: str, window_start: datetime
) -> None:
    """The segment's preferences shifted at `window_start`: its fits forget earlier choices,
    and its next full refit is due now."""
    await connection.execute(
        """
        UPDATE learner.refit_state
        SET window_start = $3, fitted_through = LEAST(fitted_through, $3 - interval '1 microsecond')
        WHERE tenant_id = $1 AND segment = $2
        """,
        tenant_id,
        segment,
        window_start,
    )


async def replace_customer_weights(
    connection: Connection, *, tenant_id: str, segment: str, segment_version: int,
    customers: Mapping[str, SegmentWeights],
) -> None:
    """The segment's per-customer weights, as fitted with its version `segment_version`."""
    await connection.executemany(
        """
        INSERT INTO learner.customer_weights (tenant_id, user_id, segment, weights, intervals,
            confidence, sample_size, coefficients, covariance, segment_version)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
        ON CONFLICT (tenant_id, user_id) DO UPDATE SET
            segment = EXCLUDED.segment, weights = EXCLUDED.weights,
            intervals = EXCLUDED.intervals, confidence = EXCLUDED.confidence,
            sample_size = EXCLUDED.sample_size, coefficients = EXCLUDED.coefficients,
            covariance = EXCLUDED.covariance, segment_version = EXCLUDED.segment_version,
            fitted_at = now()
        """,
        [
            (tenant_id, user_id, segment, fit.weights,
             {name: list(bounds) for name, bounds in fit.intervals.items()}, fit.confidence,
             fit.sample_size, fit.coefficients, fit.covariance, segment_version)
            for user_id, fit in sorted(customers.items())
        ],
    )




async def mark_fitted(
    connection: Connection, *, tenant_id: str, segment: str, fitted_through: datetime
) -> None:
    await connection.execute(
        """
        INSERT INTO learner.refit_state (tenant_id, segment, fitted_through, fitted_at)
        VALUES ($1, $2, $3, now())
        ON CONFLICT (tenant_id, segment) DO UPDATE SET
            fitted_through = GREATEST(learner.refit_state.fitted_through, EXCLUDED.fitted_through),
            fitted_at = EXCLUDED.fitted_at
        """,
        tenant_id,
        segment,
        fitted_through,
    )


async def unpublished_versions(connection: Connection, *, limit: int) -> list[asyncpg.Record]:
    return await connection.fetch(
        """
        SELECT tenant_id, segment, version, weights, intervals, confidence, sample_size,
               rank_effects, fitted_at, kind, promotion, drift
        FROM learner.weights_versions WHERE published_at IS NULL AND promoted
        ORDER BY fitted_at, tenant_id, segment, version
        LIMIT $1
        """,
        limit,
    )


async def mark_published(
    connection: Connection, *, tenant_id: str, segment: str, version: int
) -> None:
    await connection.execute(
        "UPDATE learner.weights_versions SET published_at = now() "
        "WHERE tenant_id = $1 AND segment = $2 AND version = $3",
        tenant_id,
        segment,
        version,
    )
