"""The typed reads of the metrics schema for experiments: per variant and time bucket, the
sufficient statistics of each metric an experiment can name, and the units exposed. The one
door into these tables for the query service.

Everything is read from the exact facts and rollups: facts hold each current signal once
(a flipped thumb counts as its latest state, a retracted one not at all), so a sum of squares
is as exact as the sums the rollups keep. Buckets are truncated to `grain` in UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import asyncpg

Grain = Literal["minute", "hour", "day"]


@dataclass(frozen=True)
class VariantBucket:
    """What one bucket adds for one variant (not cumulative)."""

    bucket: datetime
    variant: str
    units: int = 0
    exposures: int = 0
    crossovers: int = 0
    thumbs_up: int = 0
    thumbs_down: int = 0
    rating_count: int = 0
    rating_sum: int = 0
    rating_sq_sum: int = 0
    sessions: int = 0
    converted_sessions: int = 0
    chosen_rank_count: int = 0
    chosen_rank_sum: int = 0
    chosen_rank_sq_sum: int = 0
    satisfaction_count: int = 0
    satisfaction_sum: int = 0
    satisfaction_sq_sum: int = 0


_QUERIES = (
    """
    SELECT date_trunc($3, bucket, 'UTC') AS bucket, variant,
           sum(units) AS units, sum(exposures) AS exposures, sum(crossovers) AS crossovers
    FROM metrics.experiment_exposure_minute
    WHERE tenant_id = $1 AND experiment = $2
    GROUP BY 1, 2
    """,
    """
    SELECT date_trunc($3, bucket, 'UTC') AS bucket, variant,
           sum(thumbs_up) AS thumbs_up, sum(thumbs_down) AS thumbs_down,
           sum(rating_count) AS rating_count, sum(rating_sum) AS rating_sum,
           sum(rating_sum * rating_sum) FILTER (WHERE rating_count = 1) AS rating_sq_sum
    FROM metrics.feedback_facts
    WHERE tenant_id = $1 AND experiment = $2 AND experiment <> 'unknown'
    GROUP BY 1, 2
    """,
    """
    SELECT date_trunc($3, bucket, 'UTC') AS bucket, variant, sum(sessions) AS sessions
    FROM metrics.recommendation_minute
    WHERE tenant_id = $1 AND experiment = $2
    GROUP BY 1, 2
    """,
    """
    WITH chosen AS (
        SELECT session_id, variant, min(bucket) AS bucket
        FROM metrics.choice_facts
        WHERE tenant_id = $1 AND experiment = $2 AND experiment <> 'unknown' AND choices > 0
        GROUP BY session_id, variant
    )
    SELECT date_trunc($3, bucket, 'UTC') AS bucket, variant, count(*) AS converted_sessions
    FROM chosen GROUP BY 1, 2
    """,
    """
    SELECT date_trunc($3, bucket, 'UTC') AS bucket, variant,
           sum(chosen_rank_count) AS chosen_rank_count, sum(chosen_rank_sum) AS chosen_rank_sum,
           sum(chosen_rank_sum * chosen_rank_sum) FILTER (WHERE chosen_rank_count = 1)
               AS chosen_rank_sq_sum,
           sum(satisfaction_count) AS satisfaction_count,
           sum(satisfaction_sum) AS satisfaction_sum,
           sum(satisfaction_sum * satisfaction_sum) FILTER (WHERE satisfaction_count = 1)
               AS satisfaction_sq_sum
    FROM metrics.choice_facts
    WHERE tenant_id = $1 AND experiment = $2 AND experiment <> 'unknown'
    GROUP BY 1, 2
    """,
)


async def experiment_buckets(connection: asyncpg.Connection, *, tenant_id: str,
                             experiment: str, grain: Grain = "hour") -> list[VariantBucket]:
    """Per (bucket, variant), oldest first, what each metric and the exposures add."""
    if grain not in ("minute", "hour", "day"):
        raise ValueError(f"grain must be minute, hour or day, got {grain!r}")
    merged: dict[tuple[datetime, str], dict[str, int]] = {}
    async with connection.transaction(isolation="repeatable_read", readonly=True):
        for sql in _QUERIES:
            for row in await connection.fetch(sql, tenant_id, experiment, grain):
                fields = merged.setdefault((row["bucket"], row["variant"]), {})
                for name, value in row.items():
                    if name not in ("bucket", "variant"):
                        fields[name] = int(value or 0)
    return [VariantBucket(bucket=bucket, variant=variant, **fields)
            for (bucket, variant), fields in sorted(merged.items())]
