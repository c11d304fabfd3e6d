"""The learner's background refits: batched refits of the segment weights, each accepted
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
- Committed versions are published by the weights relay (`weights_outbox`: keyed
  `tenant:segment`, at least once, consumers deduplicate on (tenant_id, segment, version)).
- Between refits, every poll, each segment with a version and choices since is updated
  incrementally (`adaptive.incremental_update`: a Newton step from the newest version's
  posterior on the new choices), so a choice reaches the served weights within a poll or two
  (`poll_seconds`, 1 s by default); the new version is `kind = incremental`. Before absorbing
  them the batch is scored against the posterior; the segment's recent batch scores are
  tested for a shift (`adaptive.detect_shift`). A detected shift moves the segment's window
  to the estimated change point (earlier choices are forgotten) and refits it at once.
- Every candidate version, full or incremental, is checked off-policy on the segment's newest
  logged sessions against the version served now (`adaptive.promotion_decision`); one
  estimated worse is stored unpromoted with its reason (`promotion`), never served nor
  published.
- A full refit also fits each customer with `customer_min_choices` choices in the segment,
  with the segment's posterior as the prior (`learning.fit_customer`).
- The passes run as one job (`refits_job`): an error is the job's failure (logged, counted,
  the learner not ready until a pass succeeds) and the pass is retried with bounded backoff.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg

from feedbackloop.pipeline.jobs import Job
from feedbackloop.settings import Settings
from services.learner import repository
from services.learner.adaptive import (
    BatchScore,
    Promotion,
    batch_score,
    detect_shift,
    incremental_update,
    pack_logged,
    promotion_decision,
)
from services.learner.learning import (
    ChoiceData,
    FitOptions,
    ObservedChoice,
    Posterior,
    SegmentedFit,
    SegmentWeights,
    WeightBounds,
    fit_customer,
    fit_segments,
    pack_choices,
    summarize,
)
from services.learner.processing import group_choices, segments_due

logger = logging.getLogger(__name__)

GLOBAL_SEGMENT = "global"
JOB = "learner-refits"


@dataclass(frozen=True)
class RefitConfig:
    min_new_choices: int = 50
    interval_seconds: float = 300.0
    poll_seconds: float = 1.0
    max_choices: int = 20_000
    min_choices: int = 30
    fit: FitOptions = field(default_factory=FitOptions)
    incremental: bool = True
    incremental_max_choices: int = 5_000
    offpolicy_sessions: int = 2_000
    offpolicy_min_sessions: int = 30
    offpolicy_margin: float = 0.0
    shift_alpha: float = 1e-3
    shift_batches: int = 40
    shift_min_choices: int = 20
    # No shift is tested for until the posterior rests on this many choices: an early posterior
    # moves a lot between batches, and its tests raised most of the false alarms simulated.
    shift_min_history: int = 200
    customer_min_choices: int = 50
    customer_pooling_sd: float = 0.5

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
            incremental=settings.learner_incremental,
            offpolicy_sessions=settings.learner_offpolicy_sessions,
            offpolicy_min_sessions=settings.learner_offpolicy_min_sessions,
            offpolicy_margin=settings.learner_offpolicy_margin,
            shift_alpha=settings.learner_shift_alpha,
            customer_min_choices=settings.learner_customer_min_choices,
            customer_pooling_sd=settings.learner_customer_pooling_sd,
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
    accepted = _accepted(fit, segments, config)
    newest = _read_through(rows, segments, watermark)
    promotions = {
        segment: await _check(pool, config, tenant_id, segment, weights,
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
    rows: list[asyncpg.Record], segments: list[str], watermark: datetime
) -> dict[str, datetime | None]:
    """What a refit read, per due segment; a segment whose choices fell outside the newest
    `max_choices` is marked read up to the newest choice, so it does not come due forever.
    Never past the watermark: a choice still being committed must count as new next time."""
    newest_overall = max((row["recorded_at"] for row in rows), default=None)
    return {
        segment: _at_most(max(
            (row["recorded_at"] for row in rows if row["segment"] == segment),
            default=newest_overall,
        ), watermark)
        for segment in segments
    }


async def _commit_refit(
    pool: asyncpg.Pool, tenant_id: str, accepted: dict[str, SegmentWeights],
    promotions: dict[str, Promotion], customers: dict[str, dict[str, SegmentWeights]],
    newest: dict[str, datetime | None], fit_seconds: float,
) -> dict[str, int]:
    """The accepted fits as versions, with their customers' fits and what the refit read, in
    one transaction under the tenant's refit lock; returns the new version of each segment."""
    versions: dict[str, int] = {}
    async with pool.acquire() as connection, connection.transaction():
        await repository.lock_tenant_refits(connection, tenant_id=tenant_id)
        for segment, weights in sorted(accepted.items()):
            versions[segment] = await repository.insert_weights_version(
                connection, tenant_id=tenant_id, segment=segment, fit=weights,
                fit_seconds=fit_seconds, kind="full",
                promotion=promotions[segment].to_json(),
            )
            if customers.get(segment):
                await repository.replace_customer_weights(
                    connection, tenant_id=tenant_id, segment=segment,
                    segment_version=versions[segment], customers=customers[segment],
                )
        for segment, through in newest.items():
            if through is None:
                continue
            await repository.mark_fitted(
                connection, tenant_id=tenant_id, segment=segment, fitted_through=through
            )
    return versions


async def _check(
    pool: asyncpg.Pool, config: RefitConfig, tenant_id: str, segment: str,
    candidate: SegmentWeights, choices: list[ObservedChoice],
) -> Promotion:
    """The off-policy check of a candidate against the version served now, on the newest
    `offpolicy_sessions` logged choices (`choices` is newest first)."""
    assert candidate.posterior is not None
    served = await repository.promoted_posterior(pool, tenant_id=tenant_id, segment=segment)
    current = (Posterior.from_json(served["posterior"])
               if served is not None and served["posterior"] else None)
    if served is not None and current is None:
        # Served now by a version from before posteriors were kept: nothing to compare with.
        return Promotion(True, "not checked: the current version keeps no posterior",
                         None, None, None, 0)
    logged = pack_logged(choices[: config.offpolicy_sessions], candidate.factors,
                         config.fit.max_rank_terms)
    return await asyncio.to_thread(
        promotion_decision, logged, candidate.posterior, current,
        min_sessions=config.offpolicy_min_sessions, margin=config.offpolicy_margin,
    )


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
                                       row["through"])
        if outcome is None:
            continue
        outcomes.append(outcome)
        if outcome.shift_detected:
            await refit_tenant(pool, config, row["tenant_id"], [row["segment"]])
    return outcomes


async def update_segment(
    pool: asyncpg.Pool, config: RefitConfig, tenant_id: str, segment: str, after: datetime
) -> UpdateOutcome | None:
    watermark = await repository.read_watermark(pool)
    newest = await repository.newest_version(pool, tenant_id=tenant_id, segment=segment)
    if newest is None or newest["posterior"] is None:
        return None
    rows = await repository.choices_after(
        pool, tenant_id=tenant_id, segment=segment, after=after, through=watermark,
        limit=config.incremental_max_choices,
    )
    if not rows:
        return None
    through = max(row["recorded_at"] for row in rows)
    posterior = Posterior.from_json(newest["posterior"])
    choices = [ObservedChoice(row["options"], row["chosen_item_id"]) for row in rows]
    began = time.perf_counter()
    data = pack_choices(choices, posterior.factors, max_rank_terms=config.fit.max_rank_terms)
    updated = incremental_update(posterior, data) if data.size else None
    weights: SegmentWeights | None = None
    drift: dict[str, object] | None = None
    detected = False
    if updated is not None:
        drift, detected = await _shift_test(pool, config, tenant_id, segment, posterior, data,
                                            rows, int(newest["sample_size"]))
        weights = summarize(updated, int(newest["sample_size"]) + data.size, config.fit)
    update_seconds = time.perf_counter() - began
    promotion = None
    if weights is not None:
        recent = await repository.recent_choices_of_segment(
            pool, tenant_id=tenant_id, segment=segment, limit=config.offpolicy_sessions)
        promotion = await _check(pool, config, tenant_id, segment, weights, [
            ObservedChoice(r["options"], r["chosen_item_id"]) for r in recent])
    version = None
    async with pool.acquire() as connection, connection.transaction():
        await repository.lock_tenant_refits(connection, tenant_id=tenant_id)
        current = await repository.newest_version(connection, tenant_id=tenant_id,
                                                  segment=segment)
        if current is None or current["version"] != newest["version"]:
            return None  # another pass (a refit, a replica) got there first; try again
        if weights is not None and promotion is not None:
            version = await repository.insert_weights_version(
                connection, tenant_id=tenant_id, segment=segment, fit=weights,
                fit_seconds=update_seconds, kind="incremental",
                promotion=promotion.to_json(), drift=drift,
            )
        await repository.mark_updated(connection, tenant_id=tenant_id, segment=segment,
                                      updated_through=through)
        if detected and drift is not None:
            change_at = datetime.fromisoformat(str(drift["test"]["change_at"]))  # type: ignore[index]
            await repository.forget_before(connection, tenant_id=tenant_id, segment=segment,
                                           window_start=change_at)
    if detected:
        logger.warning("learner: %s %s preferences shifted (%s); refitting from %s",
                       tenant_id, segment, drift["test"] if drift else None,
                       drift["test"]["change_at"] if drift else None)  # type: ignore[index]
    return UpdateOutcome(tenant_id, segment, version, data.size, update_seconds, detected)


async def _shift_test(
    pool: asyncpg.Pool, config: RefitConfig, tenant_id: str, segment: str,
    posterior: Posterior, data: ChoiceData, rows: list[asyncpg.Record], sample_size: int,
) -> tuple[dict[str, object], bool]:
    """The new batch scored against the posterior and the segment's recent batch scores tested
    for a shift: the drift record to keep with the version, and whether a shift is called (never
    before the posterior rests on `shift_min_history` choices)."""
    score = batch_score(posterior, data)
    kept = await repository.recent_batch_scores(
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


def _at_most(moment: datetime | None, bound: datetime) -> datetime | None:
    return None if moment is None else min(moment, bound)


def refits_job(pool: asyncpg.Pool, config: RefitConfig) -> Job:
    """Every `poll_seconds`: the due full refits, then (when enabled) the incremental updates;
    the versions they commit are published by the weights relay (`weights_outbox`)."""

    async def run() -> int:
        done = len(await refit_due(pool, config))
        if config.incremental:
            done += len(await update_incrementally(pool, config))
        return done

    return Job(JOB, run, interval=config.poll_seconds, periodic=True,
               retry_max_seconds=max(config.poll_seconds, 30.0))
