"""Exports to object storage as a job: every `interval` seconds (the first one `interval`
after start), one increment per tenant and stream (`exports.object_exports.export_due`).

A failed run (the store or PostgreSQL away, a bad credential) is the job's failure: logged
with the store's endpoint and bucket (never its credentials), the trainer not ready until a
run succeeds, and tried again after 2, 4, 8... seconds, capped at the interval; the watermark
does not move, so the same rows go out once the store answers. It never stops the trainer's
other work."""

from __future__ import annotations

import logging
from datetime import timedelta

import asyncpg

from feedbackloop.pipeline.jobs import Job
from services.trainer.exports.object_exports import DEFAULT_PART_ROWS, export_due
from services.trainer.exports.object_store import ObjectStore

logger = logging.getLogger(__name__)
JOB = "object-export"


class ExportFailed(Exception):
    """An export run failed; the message names the store, the cause is chained."""


def object_export_job(
    pool: asyncpg.Pool, store: ObjectStore, *, interval: float, settle: timedelta,
    part_rows: int = DEFAULT_PART_ROWS,
) -> Job:
    async def run() -> int:
        try:
            done = await export_due(pool, store, settle=settle, part_rows=part_rows)
        except Exception as error:
            raise ExportFailed(f"export to {store.endpoint}/{store.bucket} failed "
                               f"({type(error).__name__}: {error})") from error
        for increment in done or []:
            logger.info("exported %d %s of %s to %s", increment.rows, increment.stream,
                        increment.tenant_id, increment.keys[-1])
        return len(done or [])

    return Job(JOB, run, interval=interval, periodic=True, first_delay=interval,
               retry_min_seconds=min(2.0, interval), retry_max_seconds=interval)
