"""The refits as one job: the due full refits, then the incremental updates, every poll."""

from __future__ import annotations

import asyncpg

from feedbackloop.pipeline.jobs import Job
from services.learner.refits.config import RefitConfig
from services.learner.refits.full import refit_due
from services.learner.refits.incremental import update_incrementally

JOB = "learner-refits"


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
