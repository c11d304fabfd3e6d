"""Incremental updates between refits: each segment's new choices absorbed by a Newton step
from its newest version's posterior, the batch tested for a shift of preferences (a shifted
segment forgets the choices before the change and is refitted at once)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from services.learner import repository
from services.learner.adaptive import (
    BatchScore,
    Promotion,
    batch_score,
    detect_shift,
    incremental_update,
)
from services.learner.choice_data import ChoiceData, ObservedChoice, pack_choices
from services.learner.learning import Posterior, SegmentWeights, summarize
from services.learner.refits import store
from services.learner.refits.config import RefitConfig
from services.learner.refits.full import refit_tenant
from services.learner.refits.promotion import check_promotion
from services.learner.repository import ReadThrough

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class UpdateOutcome:
    tenant_id: str
    segment: str
    version: int | None
    choices: int
    update_seconds: float
    shift_detected: bool


async def update_incrementally(pool: asyncpg.Pool, config: RefitConfig) -> list[UpdateOutcome]:
    """One pass of incremental updates over every segment with choices since its newest
    version; a segment whose preferences shifted is refitted on its new window at once."""
    outcomes = []
    for row in await repository.incremental_pending(pool):
        outcome = await update_segment(pool, config, row["tenant_id"], row["segment"],
                                       ReadThrough(row["through"], row["through_event"]))
        if outcome is None:
            continue
        outcomes.append(outcome)
        if outcome.shift_detected:
            await refit_tenant(pool, config, row["tenant_id"], [row["segment"]])
    return outcomes


async def update_segment(
    pool: asyncpg.Pool, config: RefitConfig, tenant_id: str, segment: str, after: ReadThrough
) -> UpdateOutcome | None:
    """The segment's next choices after `after` and before the watermark absorbed into an
    incremental version from its newest one (stored unpromoted when the check finds it worse).
    None when there is no posterior to start from, no choice to absorb, or another pass
    committed a version first."""
    watermark = await repository.read_watermark(pool)
    newest = await store.newest_version(pool, tenant_id=tenant_id, segment=segment)
    if newest is None or newest["posterior"] is None:
        return None
    rows = await repository.choices_after(
        pool, tenant_id=tenant_id, segment=segment, after=after, before=watermark,
        limit=config.incremental_max_choices,
    )
    if not rows:
        return None
    step = await _step(pool, config, tenant_id, segment, newest, rows)
    promotion = None
    if step.weights is not None:
        recent = await repository.recent_choices_of_segment(
            pool, tenant_id=tenant_id, segment=segment, limit=config.offpolicy_sessions)
        promotion = await check_promotion(pool, config, tenant_id, segment, step.weights, [
            ObservedChoice(r["options"], r["chosen_item_id"]) for r in recent])
    committed, version = await _commit_update(
        pool, tenant_id, segment, newest["version"], step, promotion,
        through=ReadThrough(rows[-1]["recorded_at"], rows[-1]["event_id"]),
    )
    if not committed:
        return None  # another pass (a refit, a replica) got there first; try again
    if step.detected:
        logger.warning("learner: %s %s preferences shifted (%s); refitting from %s",
                       tenant_id, segment, step.drift["test"] if step.drift else None,
                       step.drift["test"]["change_at"] if step.drift else None)  # type: ignore[index]
    return UpdateOutcome(tenant_id, segment, version, step.choices, step.seconds, step.detected)


@dataclass(frozen=True)
class _Step:
    """One incremental step on a batch: the candidate weights (None when the batch could not be
    absorbed, say a factor the posterior does not know), the drift record kept with them,
    whether a shift is called, the choices absorbed and the seconds the step took."""

    weights: SegmentWeights | None
    drift: dict[str, object] | None
    detected: bool
    choices: int
    seconds: float


async def _step(
    pool: asyncpg.Pool, config: RefitConfig, tenant_id: str, segment: str,
    newest: asyncpg.Record, rows: list[asyncpg.Record],
) -> _Step:
    """The Newton step from the newest version's posterior on `rows`, and its shift test."""
    posterior = Posterior.from_json(newest["posterior"])
    choices = [ObservedChoice(row["options"], row["chosen_item_id"]) for row in rows]
    began = time.perf_counter()
    data = pack_choices(choices, posterior.factors, max_rank_terms=config.fit.max_rank_terms)
    updated = incremental_update(posterior, data) if data.size else None
    if updated is None:
        return _Step(None, None, False, data.size, time.perf_counter() - began)
    drift, detected = await _shift_test(pool, config, tenant_id, segment, posterior, data,
                                        rows, int(newest["sample_size"]))
    weights = summarize(updated, int(newest["sample_size"]) + data.size, config.fit)
    return _Step(weights, drift, detected, data.size, time.perf_counter() - began)


async def _commit_update(
    pool: asyncpg.Pool, tenant_id: str, segment: str, expected_version: int, step: _Step,
    promotion: Promotion | None, *, through: ReadThrough,
) -> tuple[bool, int | None]:
    """The step as the segment's next version, what it read, and a detected shift's new window,
    in one transaction under the tenant's refit lock; only while the newest version is still
    `expected_version`. Returns whether it committed and the new version (None when the step
    yielded no candidate)."""
    version = None
    async with pool.acquire() as connection, connection.transaction():
        await store.lock_tenant_refits(connection, tenant_id=tenant_id)
        current = await store.newest_version(connection, tenant_id=tenant_id, segment=segment)
        if current is None or current["version"] != expected_version:
            return False, None
        if step.weights is not None and promotion is not None:
            version = await store.insert_weights_version(
                connection, tenant_id=tenant_id, segment=segment, fit=step.weights,
                fit_seconds=step.seconds, kind="incremental",
                promotion=promotion.to_json(), drift=step.drift,
            )
        await store.mark_updated(connection, tenant_id=tenant_id, segment=segment,
                                 updated_through=through)
        if step.detected and step.drift is not None:
            change_at = datetime.fromisoformat(str(step.drift["test"]["change_at"]))  # type: ignore[index]
            await store.forget_before(connection, tenant_id=tenant_id, segment=segment,
                                      window_start=change_at)
    return True, version


async def _shift_test(
    pool: asyncpg.Pool, config: RefitConfig, tenant_id: str, segment: str,
    posterior: Posterior, data: ChoiceData, rows: list[asyncpg.Record], sample_size: int,
) -> tuple[dict[str, object], bool]:
    """The new batch scored against the posterior and the segment's recent batch scores tested
    for a shift: the drift record to keep with the version, and whether a shift is called (never
    before the posterior rests on `shift_min_history` choices)."""
    score = batch_score(posterior, data)
    kept = await store.recent_batch_scores(
        pool, tenant_id=tenant_id, segment=segment, limit=config.shift_batches - 1)
    history = [BatchScore.from_json(r["drift"]["batch"]) for r in kept]
    starts = [str(r["drift"]["batch"]["from"]) for r in kept]
    test = detect_shift([*history, score], alpha=config.shift_alpha,
                        min_choices=config.shift_min_choices)
    detected = test.detected and sample_size >= config.shift_min_history
    oldest = min(row["recorded_at"] for row in rows)
    through = max(row["recorded_at"] for row in rows)
    starts.append(oldest.isoformat())
    drift: dict[str, object] = {
        "batch": score.to_json() | {"from": oldest.isoformat(), "through": through.isoformat()},
        "test": test.to_json() | {"change_at": starts[test.change_batch], "detected": detected},
    }
    return drift, detected
