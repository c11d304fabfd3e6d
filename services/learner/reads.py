"""The learner service's reads other services may use: the weights served to the ranking
(a segment's newest promoted version, a customer's own weights), the weights history and the
recommendation outcomes shown by query, and each segment's served confidence and newest
preference shift (the alert rules' input)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, TypeAlias

import asyncpg

Connection: TypeAlias = asyncpg.Connection | asyncpg.Pool


async def customer_weights(
    connection: Connection, *, tenant_id: str, user_id: str
) -> asyncpg.Record | None:
    """A customer's own weights (user id as stored: the tenant-keyed HMAC), if fitted."""
    return await connection.fetchrow(
        """
        SELECT user_id, segment, weights, intervals, confidence, sample_size, coefficients,
               covariance, segment_version, fitted_at
        FROM learner.customer_weights WHERE tenant_id = $1 AND user_id = $2
        """,
        tenant_id,
        user_id,
    )


async def current_weights(
    connection: Connection, *, tenant_id: str, segment: str
) -> asyncpg.Record | None:
    """The segment's newest promoted version, or None while it has none (defaults apply)."""
    return await connection.fetchrow(
        """
        SELECT segment, version, weights, intervals, confidence, sample_size, fitted_at, kind,
               coefficients, covariance
        FROM learner.weights_versions
        WHERE tenant_id = $1 AND segment = $2 AND promoted
        ORDER BY version DESC LIMIT 1
        """,
        tenant_id,
        segment,
    )


async def weights_version(
    connection: Connection, *, tenant_id: str, segment: str, version: int | None
) -> asyncpg.Record | None:
    """One version of a segment's weights, promoted or not (a ranker experiment's candidate)."""
    return await connection.fetchrow(
        """
        SELECT segment, version, weights, intervals, confidence, sample_size, fitted_at, kind,
               coefficients, covariance
        FROM learner.weights_versions WHERE tenant_id = $1 AND segment = $2 AND version = $3
        """,
        tenant_id, segment, version,
    )


async def weights_versions(
    connection: Connection, *, tenant_id: str, history: int
) -> list[asyncpg.Record]:
    """Each segment's newest `history` versions, newest first."""
    return await connection.fetch(
        """
        SELECT segment, version, factors, weights, intervals, confidence, sample_size,
               rank_effects, fit_seconds, fitted_at, published_at IS NOT NULL AS published,
               kind, promoted, promotion, drift
        FROM (
            SELECT *, row_number() OVER (PARTITION BY segment ORDER BY version DESC) AS age
            FROM learner.weights_versions WHERE tenant_id = $1
        ) v
        WHERE age <= $2
        ORDER BY segment, version DESC
        """,
        tenant_id,
        history,
    )


RecommendationGroup = Literal["overall", "segment", "complexity"]
_GROUP_EXPRESSION: dict[str, str] = {
    "overall": "'all'",
    "segment": "COALESCE(s.segment, 'balanced')",
    "complexity": "COALESCE(s.complexity, 'unknown')",
}


async def recommendation_outcomes(
    connection: Connection,
    *,
    tenant_id: str,
    group_by: RecommendationGroup,
    start: datetime,
    end: datetime,
) -> list[asyncpg.Record]:
    """Per group, sessions started in `[start, end)` and how they ended: conversion counts each
    session once (its latest decision), chosen rank, satisfaction and decision time."""
    group = _GROUP_EXPRESSION[group_by]
    return await connection.fetch(
        f"""
        SELECT {group} AS grp,
               count(*) AS sessions,
               count(d.session_id) AS decided,
               count(d.chosen_item_id) AS converted,
               avg(d.chosen_rank)::double precision AS avg_chosen_rank,
               avg(d.satisfaction)::double precision AS avg_satisfaction,
               avg(d.decision_time_seconds)::double precision AS avg_decision_seconds
        FROM learner.sessions s
        LEFT JOIN LATERAL (
            SELECT c.session_id, c.chosen_item_id, c.chosen_rank, c.satisfaction,
                   c.decision_time_seconds
            FROM learner.choices c
            WHERE c.tenant_id = s.tenant_id AND c.session_id = s.session_id
            ORDER BY c.occurred_at DESC LIMIT 1
        ) d ON true
        WHERE s.tenant_id = $1 AND s.occurred_at >= $2 AND s.occurred_at < $3
        GROUP BY 1
        ORDER BY 1
        """,
        tenant_id,
        start,
        end,
    )


async def newest_segment_confidence(
    connection: Connection, *, segments: list[str]
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
