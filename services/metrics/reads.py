"""The metrics service's reads other services may use: sums of the exact rollups.

Every read is of `metrics.feedback_*` and `metrics.recommendation_*` (minute, hour and day)
rollups, whose counters are this service's `COUNTERS` and `RECOMMENDATION_COUNTERS`. Reads of
an arbitrary range take each span from the coarsest rollup that holds it whole
(`rollups.rollup_spans`): the same sums as the minute rollup alone, in a time that grows with the
number of days and dimension combinations, not of events. Every function but the alert inputs
(`*_window_totals`, `action_types_first_voted`: every tenant) is scoped to one tenant.

The experiments' reads (`experiment_buckets`) take, per variant and time bucket, the sufficient
statistics of each metric an experiment can name, and the units exposed, from the exact facts
and rollups: facts hold each current signal once (a flipped thumb counts as its latest state, a
retracted one not at all), so a sum of squares is as exact as the sums the rollups keep.
Buckets are truncated to `grain` in UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import asyncpg

from services.metrics.processing import COUNTERS, COUNTERS_OF, RECOMMENDATION_COUNTERS, Family
from services.metrics.rollups import IntervalName, rollup_spans

ApprovalGroup = Literal["action_type", "model", "tenant"]
_APPROVAL_COLUMN: dict[str, str] = {
    "action_type": "action_type",
    "model": "model",
    "tenant": "tenant_id",
}
FEEDBACK_GROUPS: dict[str, str] = {
    "action_type": "action_type",
    "model": "model",
    "prompt_version": "prompt_version",
    "variant": "experiment || '/' || variant",
    "language": "language",
    "feature": "feature",
}
RECOMMENDATION_GROUPS: dict[str, str] = {
    "algorithm_version": "algorithm_version",
    "segment": "segment",
    "variant": "experiment || '/' || variant",
}
GROUPS_OF: dict[Family, dict[str, str]] = {
    "feedback": FEEDBACK_GROUPS,
    "recommendation": RECOMMENDATION_GROUPS,
}


def _sums(counters: tuple[str, ...]) -> str:
    return ", ".join(f"sum({c})::bigint AS {c}" for c in counters)


def _feedback_spans(
    columns: str, where: str, start: datetime, end: datetime, *, first: int
) -> tuple[str, list[datetime]]:
    """A `UNION ALL` selecting `columns` from the feedback rollup rows (matching `where`) of
    the minutes in `[start, end)`, each span from the coarsest rollup that holds it whole, and
    its bounds as the parameters numbered from `first`. ("", []) when no minute is covered."""
    branches: list[str] = []
    bounds: list[datetime] = []
    for interval, low, high in rollup_spans(start, end):
        number = first + len(bounds)
        branches.append(
            f"SELECT {columns} FROM metrics.feedback_{interval} "
            f"WHERE {where} AND bucket >= ${number} AND bucket < ${number + 1}"
        )
        bounds += [low, high]
    return "\nUNION ALL\n".join(branches), bounds


async def _votes(
    connection: asyncpg.Connection | asyncpg.Pool,
    *,
    group: str,
    where: str,
    parameters: list[object],
    start: datetime,
    end: datetime,
) -> list[asyncpg.Record]:
    """(grp, up, down) per value of the column `group` over `[start, end)`, of the feedback
    rollup rows matching `where` (its parameters numbered from $1)."""
    votes, bounds = _feedback_spans(
        f"{group} AS grp, thumbs_up, thumbs_down", where, start, end, first=len(parameters) + 1
    )
    if not bounds:
        return []
    return await connection.fetch(
        f"""
        SELECT grp, sum(thumbs_up)::bigint AS up, sum(thumbs_down)::bigint AS down
        FROM ({votes}) AS votes
        GROUP BY grp
        HAVING sum(thumbs_up) + sum(thumbs_down) > 0
        ORDER BY grp
        """,
        *parameters,
        *bounds,
    )


async def approval_by_group(
    connection: asyncpg.Connection | asyncpg.Pool,
    *,
    tenant_id: str,
    group_by: ApprovalGroup,
    start: datetime,
    end: datetime,
) -> list[asyncpg.Record]:
    """(grp, up, down) per group with any thumbs over `[start, end)`."""
    return await _votes(
        connection, group=_APPROVAL_COLUMN[group_by], where="tenant_id = $1",
        parameters=[tenant_id], start=start, end=end,
    )


async def rollup_series(
    connection: asyncpg.Connection | asyncpg.Pool,
    *,
    family: Family,
    tenant_id: str,
    interval: IntervalName,
    group_by: str | None,
    start: datetime,
    end: datetime,
) -> list[asyncpg.Record]:
    """Sums of one rollup family per bucket (and group) over `[start, end)`, read from the
    rollup of the interval's own resolution; `start` and `end` must be aligned to it.
    Columns: `bucket`, `grp` (NULL without `group_by`; a key of `GROUPS_OF[family]`) and one
    per counter of the family (`COUNTERS_OF[family]`)."""
    group = GROUPS_OF[family][group_by] if group_by else "NULL::text"
    return await connection.fetch(
        f"""
        SELECT bucket, {group} AS grp, {_sums(COUNTERS_OF[family])}
        FROM metrics.{family}_{interval}
        WHERE tenant_id = $1 AND bucket >= $2 AND bucket < $3
        GROUP BY bucket, grp
        ORDER BY bucket, grp
        """,
        tenant_id,
        start,
        end,
    )


async def approval_of_models(
    connection: asyncpg.Connection | asyncpg.Pool,
    *,
    tenant_id: str,
    models: list[str],
    action_type: str | None,
    start: datetime,
    end: datetime,
) -> dict[str, tuple[int, int]]:
    """(thumbs up, thumbs down) per model over `[start, end)`, optionally of one action type."""
    rows = await _votes(
        connection, group="model",
        where="tenant_id = $1 AND model = ANY($2::text[]) "
        "AND ($3::text IS NULL OR action_type = $3)",
        parameters=[tenant_id, models, action_type], start=start, end=end,
    )
    found = {row["grp"]: (int(row["up"]), int(row["down"])) for row in rows}
    return {model: found.get(model, (0, 0)) for model in models}


async def feedback_window_totals(
    connection: asyncpg.Connection | asyncpg.Pool, *, start: datetime, end: datetime
) -> list[asyncpg.Record]:
    """Feedback sums (every counter of `COUNTERS`, in that order after the three keys) per
    tenant, action type and model over `[start, end)`, every tenant: the input of the alert
    rules and of the analytics gauges (the 24-hour baseline is mostly whole hours)."""
    rows, bounds = _feedback_spans(
        f"tenant_id, action_type, model, {', '.join(COUNTERS)}", "TRUE", start, end, first=1
    )
    if not bounds:
        return []
    return await connection.fetch(
        f"""
        SELECT tenant_id, action_type, model, {_sums(COUNTERS)}
        FROM ({rows}) AS rows
        GROUP BY tenant_id, action_type, model
        """,
        *bounds,
    )


async def recommendation_window_totals(
    connection: asyncpg.Connection | asyncpg.Pool, *, start: datetime, end: datetime
) -> list[asyncpg.Record]:
    """Recommendation sums per tenant and segment over `[start, end)`, every tenant."""
    return await connection.fetch(
        f"""
        SELECT tenant_id, segment, {_sums(RECOMMENDATION_COUNTERS)}
        FROM metrics.recommendation_minute
        WHERE bucket >= $1 AND bucket < $2
        GROUP BY tenant_id, segment
        """,
        start,
        end,
    )


async def action_types_first_voted(
    connection: asyncpg.Connection | asyncpg.Pool, *, since: datetime
) -> list[asyncpg.Record]:
    """(tenant_id, action_type, first_voted): the day each action type first got a thumb, for
    the action types first voted on at or after `since` (the day rollup keeps this cheap)."""
    return await connection.fetch(
        """
        SELECT tenant_id, action_type, min(bucket) AS first_voted
        FROM metrics.feedback_day
        WHERE thumbs_up + thumbs_down > 0 AND action_type <> 'unknown'
        GROUP BY tenant_id, action_type
        HAVING min(bucket) >= date_trunc('day', $1::timestamptz, 'UTC')
        """,
        since,
    )


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


_EXPERIMENT_QUERIES = (
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
        for sql in _EXPERIMENT_QUERIES:
            for row in await connection.fetch(sql, tenant_id, experiment, grain):
                fields = merged.setdefault((row["bucket"], row["variant"]), {})
                for name, value in row.items():
                    if name not in ("bucket", "variant"):
                        fields[name] = int(value or 0)
    return [VariantBucket(bucket=bucket, variant=variant, **fields)
            for (bucket, variant), fields in sorted(merged.items())]
