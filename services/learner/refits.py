"""The learner's background refit loop: batched refits of the segment weights, each accepted
refit committed as a new version, then published on the weights topic (an outbox).

Contract:
- Every `poll_seconds`, the segments due (`processing.segments_due`: N new choices, or T
  seconds with any) are refitted, per tenant: the global fit over the tenant's newest
  `max_choices` choices, then each due segment pooled toward it (`learning.fit_segments`),
  warm-started from the previous version. The fit runs in a worker thread so the consumer's
  event loop keeps consuming.
- A refit is accepted when it converged and its segment has at least `min_choices` choices;
  accepted refits become versions in one transaction, under a per-tenant advisory lock, that
  also records what the refit read (rejected ones too, so they wait for new choices).
- After the commit every unpublished version is published (keyed `tenant:segment`) and then
  marked published. A crash in between leaves it unpublished, so it is published again on the
  next pass: delivery on the weights topic is at least once, and consumers deduplicate on
  (tenant_id, segment, version).
- Errors are logged and the pass retried on the next poll; the loop ends only when cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
import orjson

from feedbackloop.settings import Settings
from services.learner import repository
from services.learner.learning import FitOptions, SegmentWeights, WeightBounds, fit_segments
from services.learner.processing import group_choices, segments_due, weights_message

logger = logging.getLogger(__name__)

GLOBAL_SEGMENT = "global"
Publish = Callable[[str, bytes], Awaitable[None]]  # (key, value) onto the weights topic


@dataclass(frozen=True)
class RefitConfig:
    min_new_choices: int = 50
    interval_seconds: float = 300.0
    poll_seconds: float = 5.0
    max_choices: int = 20_000
    min_choices: int = 30
    fit: FitOptions = field(default_factory=FitOptions)

    @classmethod
    def from_settings(cls, settings: Settings) -> RefitConfig:
        return cls(
            min_new_choices=settings.learner_refit_min_new_choices,
            interval_seconds=settings.learner_refit_interval_seconds,
            poll_seconds=settings.learner_refit_poll_seconds,
            max_choices=settings.learner_refit_max_choices,
            min_choices=settings.learner_min_choices,
            fit=FitOptions(
                pooling_sd=settings.learner_pooling_sd,
                bounds=WeightBounds(settings.learner_min_weight, settings.learner_max_weight),
            ),
        )


@dataclass(frozen=True)
class RefitOutcome:
    tenant_id: str
    segments: list[str]
    versions: dict[str, int]
    sample_size: int
    fit_seconds: float


async def refit_due(pool: asyncpg.Pool, config: RefitConfig) -> list[RefitOutcome]:
    """One pass: refit every due segment of every tenant; returns what was done."""
    pending = await repository.pending_choices(pool)
    due = segments_due(
        pending,
        now=datetime.now(UTC),
        min_new_choices=config.min_new_choices,
        interval_seconds=config.interval_seconds,
    )
    return [await refit_tenant(pool, config, tenant, segments) for tenant, segments in
            sorted(due.items())]


async def refit_tenant(
    pool: asyncpg.Pool, config: RefitConfig, tenant_id: str, segments: list[str]
) -> RefitOutcome:
    watermark = await repository.read_watermark(pool)
    rows = await repository.recent_choices(pool, tenant_id=tenant_id, limit=config.max_choices)
    start = await repository.latest_coefficients(pool, tenant_id=tenant_id)
    grouped = group_choices(rows)
    began = time.perf_counter()
    fit = await asyncio.to_thread(fit_segments, grouped, config.fit, start=start)
    fit_seconds = time.perf_counter() - began
    accepted: dict[str, SegmentWeights] = {}
    if fit is not None:
        candidates = {GLOBAL_SEGMENT: fit.global_fit} | {
            segment: fit.segments[segment] for segment in segments if segment in fit.segments
        }
        accepted = {
            segment: weights
            for segment, weights in candidates.items()
            if weights.converged and weights.sample_size >= config.min_choices
        }
    # What this refit read, per due segment; a segment whose choices fell outside the newest
    # `max_choices` is marked read up to the newest choice, so it does not come due forever.
    newest_overall = max((row["recorded_at"] for row in rows), default=None)
    # Never past the watermark: a choice still being committed must count as new next time.
    newest = {
        segment: _at_most(max(
            (row["recorded_at"] for row in rows if row["segment"] == segment),
            default=newest_overall,
        ), watermark)
        for segment in segments
    }
    versions: dict[str, int] = {}
    async with pool.acquire() as connection, connection.transaction():
        await repository.lock_tenant_refits(connection, tenant_id=tenant_id)
        for segment, weights in sorted(accepted.items()):
            versions[segment] = await repository.insert_weights_version(
                connection, tenant_id=tenant_id, segment=segment, fit=weights,
                fit_seconds=fit_seconds,
            )
        for segment, through in newest.items():
            if through is None:
                continue
            await repository.mark_fitted(
                connection, tenant_id=tenant_id, segment=segment, fitted_through=through
            )
    logger.info("learner: refit %s %s on %d choices in %.3fs; versions %s",
                tenant_id, segments, len(rows), fit_seconds, versions)
    return RefitOutcome(tenant_id, segments, versions, len(rows), fit_seconds)


def _at_most(moment: datetime | None, bound: datetime) -> datetime | None:
    return None if moment is None else min(moment, bound)


async def publish_unpublished(pool: asyncpg.Pool, publish: Publish, *, limit: int = 500) -> int:
    """Publish committed versions not yet acknowledged on the weights topic, oldest first."""
    published = 0
    for row in await repository.unpublished_versions(pool, limit=limit):
        message = weights_message(row)
        await publish(f"{row['tenant_id']}:{row['segment']}", orjson.dumps(message))
        await repository.mark_published(
            pool, tenant_id=row["tenant_id"], segment=row["segment"], version=row["version"]
        )
        published += 1
    return published


async def run_refits(pool: asyncpg.Pool, publish: Publish, config: RefitConfig) -> None:
    """The loop the learner runs beside its consumer, until cancelled."""
    while True:
        try:
            await publish_unpublished(pool, publish)
            if await refit_due(pool, config):
                await publish_unpublished(pool, publish)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("learner: refit pass failed; retrying in %.1fs", config.poll_seconds)
        await asyncio.sleep(config.poll_seconds)
