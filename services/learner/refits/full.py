"""Full refits: the due segments of a tenant refitted together (the global fit, then each
segment pooled toward it), their customers fitted, and the accepted fits committed as versions
with what the refit read."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from services.learner import repository
from services.learner.adaptive import Promotion
from services.learner.choice_data import ObservedChoice
from services.learner.learning import SegmentedFit, SegmentWeights, fit_customer, fit_segments
from services.learner.processing import group_choices, segments_due
from services.learner.refits import store
from services.learner.refits.config import GLOBAL_SEGMENT, RefitConfig
from services.learner.refits.promotion import check_promotion
from services.learner.repository import ReadThrough

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RefitOutcome:
    tenant_id: str
    segments: list[str]
    versions: dict[str, int]
    sample_size: int
    fit_seconds: float


async def refit_due(pool: asyncpg.Pool, config: RefitConfig) -> list[RefitOutcome]:
    """One pass: refit every due segment of every tenant; returns what was done."""
    watermark = await repository.read_watermark(pool)
    pending = await repository.pending_choices(pool, before=watermark)
    due = segments_due(
        pending,
        now=datetime.now(UTC),
        min_new_choices=config.min_new_choices,
        interval_seconds=config.interval_seconds,
    )
    return [await refit_tenant(pool, config, tenant, segments, watermark=watermark)
            for tenant, segments in sorted(due.items())]


async def refit_tenant(
    pool: asyncpg.Pool, config: RefitConfig, tenant_id: str, segments: list[str], *,
    watermark: datetime | None = None,
) -> RefitOutcome:
    """Refit the tenant's global fit and `segments` on its newest choices recorded before
    `watermark` (the one `refit_due` found them due under; read now when None)."""
    if watermark is None:
        watermark = await repository.read_watermark(pool)
    rows = await repository.recent_choices(pool, tenant_id=tenant_id, before=watermark,
                                           limit=config.max_choices)
    start = await store.latest_coefficients(pool, tenant_id=tenant_id)
    grouped = group_choices(rows)
    began = time.perf_counter()
    fit = await asyncio.to_thread(fit_segments, grouped, config.fit, start=start)
    fit_seconds = time.perf_counter() - began
    accepted = _accepted(fit, segments, config)
    newest = _read_through(rows, segments)
    promotions = {
        segment: await check_promotion(pool, config, tenant_id, segment, weights,
                              grouped.get(segment, []) if segment != GLOBAL_SEGMENT else
                              [choice for run in grouped.values() for choice in run])
        for segment, weights in accepted.items()
    }
    customers = {
        segment: await asyncio.to_thread(_fit_customers, config, weights, rows, segment)
        for segment, weights in accepted.items()
        if segment != GLOBAL_SEGMENT and promotions[segment].promoted
    }
    versions = await _commit_refit(pool, tenant_id, accepted, promotions, customers, newest,
                                   fit_seconds)
    logger.info("learner: refit %s %s on %d choices in %.3fs; versions %s",
                tenant_id, segments, len(rows), fit_seconds, versions)
    return RefitOutcome(tenant_id, segments, versions, len(rows), fit_seconds)


def _accepted(
    fit: SegmentedFit | None, segments: list[str], config: RefitConfig
) -> dict[str, SegmentWeights]:
    """The fits a refit keeps: the global one and the due segments', converged on at least
    `min_choices` choices."""
    if fit is None:
        return {}
    candidates = {GLOBAL_SEGMENT: fit.global_fit} | {
        segment: fit.segments[segment] for segment in segments if segment in fit.segments
    }
    return {
        segment: weights
        for segment, weights in candidates.items()
        if weights.converged and weights.sample_size >= config.min_choices
    }


def _read_through(
    rows: list[asyncpg.Record], segments: list[str]
) -> dict[str, ReadThrough | None]:
    """What a refit read, per due segment: its newest choice read. A segment whose choices
    fell outside the newest `max_choices` is marked read up to the newest choice, so it does
    not come due forever. The rows were all recorded before the watermark, so a choice still
    being committed (recorded at the watermark or later) counts as new next time, and every
    choice fitted is marked read."""
    def mark(row: asyncpg.Record) -> ReadThrough:
        return ReadThrough(row["recorded_at"], row["event_id"])

    newest_overall = max(map(mark, rows), default=None)
    return {
        segment: max((mark(row) for row in rows if row["segment"] == segment),
                     default=newest_overall)
        for segment in segments
    }


async def _commit_refit(
    pool: asyncpg.Pool, tenant_id: str, accepted: dict[str, SegmentWeights],
    promotions: dict[str, Promotion], customers: dict[str, dict[str, SegmentWeights]],
    newest: dict[str, ReadThrough | None], fit_seconds: float,
) -> dict[str, int]:
    """The accepted fits as versions, with their customers' fits and what the refit read, in
    one transaction under the tenant's refit lock; returns the new version of each segment."""
    versions: dict[str, int] = {}
    async with pool.acquire() as connection, connection.transaction():
        await store.lock_tenant_refits(connection, tenant_id=tenant_id)
        for segment, weights in sorted(accepted.items()):
            versions[segment] = await store.insert_weights_version(
                connection, tenant_id=tenant_id, segment=segment, fit=weights,
                fit_seconds=fit_seconds, kind="full",
                promotion=promotions[segment].to_json(),
            )
            if customers.get(segment):
                await store.replace_customer_weights(
                    connection, tenant_id=tenant_id, segment=segment,
                    segment_version=versions[segment], customers=customers[segment],
                )
        for segment, through in newest.items():
            if through is None:
                continue
            await store.mark_fitted(
                connection, tenant_id=tenant_id, segment=segment, fitted_through=through
            )
    return versions


def _fit_customers(
    config: RefitConfig, segment_fit: SegmentWeights, rows: list[asyncpg.Record], segment: str
) -> dict[str, SegmentWeights]:
    assert segment_fit.posterior is not None
    by_customer: dict[str, list[ObservedChoice]] = {}
    for row in rows:
        if row["segment"] == segment and row["user_id"] is not None:
            by_customer.setdefault(row["user_id"], []).append(
                ObservedChoice(row["options"], row["chosen_item_id"]))
    fitted = {}
    for user_id, choices in by_customer.items():
        if len(choices) < config.customer_min_choices:
            continue
        fit = fit_customer(choices, segment_fit.posterior, config.fit,
                           pooling_sd=config.customer_pooling_sd)
        if fit is not None and fit.converged:
            fitted[user_id] = fit
    return fitted
