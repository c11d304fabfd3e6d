"""All SQL of the query service. Every function is scoped to one tenant."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

import asyncpg

from services.query.trends import rollup_spans

GroupBy = Literal["action_type", "model", "tenant"]
_GROUP_COLUMN: dict[str, str] = {
    "action_type": "action_type",
    "model": "model",
    "tenant": "tenant_id",
}


async def approval_by_group(
    connection: asyncpg.Connection | asyncpg.Pool,
    *,
    tenant_id: str,
    group_by: GroupBy,
    start: datetime,
    end: datetime,
) -> list[asyncpg.Record]:
    """(grp, up, down) per group with any thumbs over `[start, end)`, read from the day, hour
    and minute rollups (`rollup_spans`): the same sums as the minute rollup alone, in a time
    that grows with the number of days and dimension combinations, not of events."""
    column = _GROUP_COLUMN[group_by]
    votes, bounds = _feedback_spans(
        f"{column} AS grp, thumbs_up, thumbs_down", "tenant_id = $1", start, end, first=2
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
        tenant_id,
        *bounds,
    )


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


async def user_verdicts_by_action_type(
    connection: asyncpg.Connection | asyncpg.Pool, *, tenant_id: str, user_id: str
) -> list[asyncpg.Record]:
    """The verdicts of the user's current signals (a flipped thumb counts as its new verdict,
    a retracted one not at all), per action type."""
    return await connection.fetch(
        """
        SELECT COALESCE(r.action_type, f.action_type, 'unknown') AS action_type,
               count(*) FILTER (WHERE f.verdict = 'accepted') AS accepted,
               count(*) FILTER (WHERE f.verdict = 'rejected') AS rejected,
               count(*) FILTER (WHERE f.verdict = 'neutral') AS neutral,
               count(*) AS total
        FROM profiles.feedback f
        LEFT JOIN profiles.responses r USING (tenant_id, response_id)
        WHERE f.tenant_id = $1 AND f.user_id = $2 AND f.current
        GROUP BY 1
        ORDER BY 1
        """,
        tenant_id,
        user_id,
    )


async def user_feedback_history(
    connection: asyncpg.Connection | asyncpg.Pool,
    *,
    tenant_id: str,
    user_id: str,
    limit: int,
    current_only: bool = False,
) -> list[asyncpg.Record]:
    """The user's newest `limit` feedback events, each marked `current` (the signal's state
    now) or not (replaced by a later event, or a retraction); with `current_only`, only the
    current signals."""
    return await connection.fetch(
        """
        SELECT f.event_id, f.response_id, f.kind, f.verdict, f.thumb, f.rating, f.comment,
               f.reasons, f.correction, f.occurred_at, f.current, f.retraction,
               COALESCE(r.action_type, f.action_type, 'unknown') AS action_type, r.model
        FROM profiles.feedback f
        LEFT JOIN profiles.responses r USING (tenant_id, response_id)
        WHERE f.tenant_id = $1 AND f.user_id = $2 AND (f.current OR NOT $4)
        ORDER BY f.occurred_at DESC, f.event_id
        LIMIT $3
        """,
        tenant_id,
        user_id,
        limit,
        current_only,
    )


async def user_profile(
    connection: asyncpg.Connection | asyncpg.Pool, *, tenant_id: str, user_id: str
) -> asyncpg.Record | None:
    return await connection.fetchrow(
        "SELECT first_seen_at, last_seen_at, training_allowed FROM profiles.users "
        "WHERE tenant_id = $1 AND user_id = $2",
        tenant_id,
        user_id,
    )


# --- Analytics over the metrics rollups (trends, comparisons, alert inputs) -----------------

Interval = Literal["minute", "hour", "day"]
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
FEEDBACK_SUMS = (
    "thumbs_up", "thumbs_down", "rating_sum", "rating_count", "corrections", "replays_not_useful",
)
RECOMMENDATION_SUMS = (
    "sessions", "choices", "none_chosen", "chosen_rank_sum", "chosen_rank_count",
    "satisfaction_sum", "satisfaction_count",
)


async def rollup_series(
    connection: asyncpg.Connection | asyncpg.Pool,
    *,
    family: Literal["feedback", "recommendation"],
    tenant_id: str,
    interval: Interval,
    group_by: str | None,
    start: datetime,
    end: datetime,
) -> list[asyncpg.Record]:
    """Sums of one rollup family per bucket (and group) over `[start, end)`, read from the
    rollup of the interval's own resolution; `start` and `end` must be aligned to it.
    Columns: `bucket`, `grp` (NULL without `group_by`) and one per counter of the family."""
    groups, sums = (
        (FEEDBACK_GROUPS, FEEDBACK_SUMS) if family == "feedback"
        else (RECOMMENDATION_GROUPS, RECOMMENDATION_SUMS)
    )
    group = groups[group_by] if group_by else "NULL::text"
    return await connection.fetch(
        f"""
        SELECT bucket, {group} AS grp, {", ".join(f"sum({c})::bigint AS {c}" for c in sums)}
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
    """(thumbs up, thumbs down) per model over `[start, end)`, optionally of one action type,
    read like `approval_by_group` from the day, hour and minute rollups."""
    votes, bounds = _feedback_spans(
        "model, thumbs_up, thumbs_down",
        "tenant_id = $1 AND model = ANY($2::text[]) AND ($3::text IS NULL OR action_type = $3)",
        start, end, first=4,
    )
    if not bounds:
        return {model: (0, 0) for model in models}
    rows = await connection.fetch(
        f"""
        SELECT model, sum(thumbs_up)::bigint AS up, sum(thumbs_down)::bigint AS down
        FROM ({votes}) AS votes
        GROUP BY model
        """,
        tenant_id,
        models,
        action_type,
        *bounds,
    )
    found = {row["model"]: (int(row["up"]), int(row["down"])) for row in rows}
    return {model: found.get(model, (0, 0)) for model in models}


async def feedback_window_totals(
    connection: asyncpg.Connection | asyncpg.Pool, *, start: datetime, end: datetime
) -> list[asyncpg.Record]:
    """Feedback sums per tenant, action type and model over `[start, end)`, every tenant:
    the input of the alert rules and of the analytics gauges. Read like `approval_by_group`
    from the day, hour and minute rollups (the 24-hour baseline is mostly whole hours)."""
    rows, bounds = _feedback_spans(
        f"tenant_id, action_type, model, {', '.join(FEEDBACK_SUMS)}", "TRUE", start, end, first=1
    )
    if not bounds:
        return []
    return await connection.fetch(
        f"""
        SELECT tenant_id, action_type, model,
               {", ".join(f"sum({c})::bigint AS {c}" for c in FEEDBACK_SUMS)}
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
        SELECT tenant_id, segment,
               {", ".join(f"sum({c})::bigint AS {c}" for c in RECOMMENDATION_SUMS)}
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


async def alert_states(
    connection: asyncpg.Connection | asyncpg.Pool, *, tenant_id: str | None
) -> list[asyncpg.Record]:
    """Stored alert states, of one tenant or (None) of all."""
    return await connection.fetch(
        """
        SELECT rule, tenant_id, subject, state, since, value, sample, threshold, evaluated_at
        FROM query.alert_states
        WHERE $1::text IS NULL OR tenant_id = $1
        ORDER BY rule, tenant_id, subject
        """,
        tenant_id,
    )


async def save_alert_states(
    connection: asyncpg.Connection,
    *,
    states: list[tuple[str, str, str, str, datetime, float | None, int, float, datetime]],
) -> None:
    """Upsert (rule, tenant_id, subject, state, since, value, sample, threshold, evaluated_at)."""
    await connection.executemany(
        """
        INSERT INTO query.alert_states
            (rule, tenant_id, subject, state, since, value, sample, threshold, evaluated_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
        ON CONFLICT (rule, tenant_id, subject) DO UPDATE SET
            state = EXCLUDED.state, since = EXCLUDED.since, value = EXCLUDED.value,
            sample = EXCLUDED.sample, threshold = EXCLUDED.threshold,
            evaluated_at = EXCLUDED.evaluated_at
        """,
        states,
    )


async def queue_alert_changes(
    connection: asyncpg.Connection, *, changes: list[tuple[UUID, str, str, dict[str, object]]]
) -> None:
    """Queue (event_id, tenant_id, rule, document) for the alerts topic, in the caller's
    transaction: the outbox of the evaluation that made the changes."""
    await connection.executemany(
        "INSERT INTO query.alert_changes (event_id, tenant_id, rule, document) "
        "VALUES ($1, $2, $3, $4)",
        changes,
    )


async def pending_alert_changes(connection: asyncpg.Connection, *, limit: int) -> list[asyncpg.Record]:
    """Queued alert changes not yet published, oldest first: (seq, tenant_id, rule, document)."""
    return await connection.fetch(
        "SELECT seq, tenant_id, rule, document::text AS document FROM query.alert_changes "
        "WHERE published_at IS NULL ORDER BY seq LIMIT $1",
        limit,
    )


async def mark_alert_changes_published(connection: asyncpg.Connection, *, seqs: list[int]) -> None:
    await connection.execute(
        "UPDATE query.alert_changes SET published_at = now() WHERE seq = ANY($1::bigint[])", seqs
    )


async def prune_published_alert_changes(
    connection: asyncpg.Connection, *, older_than_days: float, limit: int
) -> int:
    """Deletes up to `limit` alert changes published more than `older_than_days` ago (the
    outbox's unpublished rows stay); returns how many."""
    status = await connection.execute(
        """
        DELETE FROM query.alert_changes WHERE seq IN (
            SELECT seq FROM query.alert_changes
            WHERE published_at < now() - make_interval(secs => $1 * 86400)
            LIMIT $2
        )
        """,
        older_than_days, limit,
    )
    return int(status.split()[-1])


async def try_lock_alert_evaluation(connection: asyncpg.Connection) -> bool:
    """Whether this transaction may evaluate the alerts: one query replica at a time does."""
    return bool(await connection.fetchval("SELECT pg_try_advisory_xact_lock(7311042009)"))


async def newest_segment_confidence(
    connection: asyncpg.Connection | asyncpg.Pool, *, segments: list[str]
) -> list[asyncpg.Record]:
    """(tenant_id, segment, version, confidence, sample_size, fitted_at) of each segment's newest
    promoted (served) learned weights, every tenant, for the `segments` named (the learner's
    pooled `global` fit is no segment the ranking serves), with the time, statistic and
    threshold of the segment's newest detected preference shift (`last_shift_at`, null when
    none). A segment with no version yet has no row."""
    return await connection.fetch(
        """
        SELECT DISTINCT ON (v.tenant_id, v.segment)
               v.tenant_id, v.segment, v.version, v.confidence, v.sample_size, v.fitted_at,
               s.fitted_at AS last_shift_at, s.statistic AS shift_statistic,
               s.threshold AS shift_threshold
        FROM learner.weights_versions v
        LEFT JOIN LATERAL (
            SELECT w.fitted_at, (w.drift->'test'->>'statistic')::double precision AS statistic,
                   (w.drift->'test'->>'threshold')::double precision AS threshold
            FROM learner.weights_versions w
            WHERE w.tenant_id = v.tenant_id AND w.segment = v.segment
              AND (w.drift->'test'->>'detected')::boolean
            ORDER BY w.version DESC LIMIT 1
        ) s ON true
        WHERE v.segment = ANY($1::text[]) AND v.promoted
        ORDER BY v.tenant_id, v.segment, v.version DESC
        """,
        segments,
    )
