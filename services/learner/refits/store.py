"""The refits' SQL on the learner schema (private): weights versions (committed, promoted,
published), the refit state (what each segment's fits have read, its window) and customers'
weights. The choice log they read is `repository.py`."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import asyncpg

from services.learner.learning import SegmentWeights
from services.learner.repository import ALL_AT, Connection, ReadThrough


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
    connection: Connection, *, tenant_id: str, segment: str, updated_through: ReadThrough
) -> None:
    """The segment's incremental steps have absorbed its choices up to `updated_through`
    (never moved back)."""
    await connection.execute(
        """
        UPDATE learner.refit_state SET updated_through = $3, updated_through_event = $4
        WHERE tenant_id = $1 AND segment = $2
          AND (updated_through IS NULL OR (updated_through, updated_through_event) < ($3, $4))
        """,
        tenant_id,
        segment,
        updated_through.recorded_at,
        updated_through.event_id,
    )


async def forget_before(
    connection: Connection, *, tenant_id: str, segment: str, window_start: datetime
) -> None:
    """The segment's preferences shifted at `window_start`: its fits forget earlier choices,
    and its next full refit is due now."""
    # `$3::timestamptz`: untyped, `$3 - interval` would make $3 an interval.
    await connection.execute(
        """
        UPDATE learner.refit_state
        SET window_start = $3,
            fitted_through = LEAST(fitted_through, $3::timestamptz - interval '1 microsecond'),
            fitted_through_event = CASE WHEN fitted_through >= $3 THEN $4
                                        ELSE fitted_through_event END
        WHERE tenant_id = $1 AND segment = $2
        """,
        tenant_id,
        segment,
        window_start,
        ALL_AT,
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
    connection: Connection, *, tenant_id: str, segment: str, fitted_through: ReadThrough
) -> None:
    """A full refit has read the segment's choices up to `fitted_through` (never moved back)."""
    # Both CASEs see the row as it was before the update.
    await connection.execute(
        """
        INSERT INTO learner.refit_state AS r (tenant_id, segment, fitted_through,
            fitted_through_event, fitted_at)
        VALUES ($1, $2, $3, $4, now())
        ON CONFLICT (tenant_id, segment) DO UPDATE SET
            fitted_through = CASE
                WHEN (EXCLUDED.fitted_through, EXCLUDED.fitted_through_event)
                     > (r.fitted_through, r.fitted_through_event)
                THEN EXCLUDED.fitted_through ELSE r.fitted_through END,
            fitted_through_event = CASE
                WHEN (EXCLUDED.fitted_through, EXCLUDED.fitted_through_event)
                     > (r.fitted_through, r.fitted_through_event)
                THEN EXCLUDED.fitted_through_event ELSE r.fitted_through_event END,
            fitted_at = EXCLUDED.fitted_at
        """,
        tenant_id,
        segment,
        fitted_through.recorded_at,
        fitted_through.event_id,
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
