"""The SQL of the retraining job: its runs and the jobs submitted or kept."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

TERMINAL_FINE_TUNE_STATUSES = ("succeeded", "failed", "cancelled")


async def last_retraining_run(connection: asyncpg.Connection) -> datetime | None:
    value: datetime | None = await connection.fetchval(
        "SELECT max(started_at) FROM trainer.retraining_runs"
    )
    return value


async def record_retraining_run(
    connection: asyncpg.Connection, *, started_at: datetime, jobs: int
) -> None:
    await connection.execute(
        "INSERT INTO trainer.retraining_runs (started_at, jobs) VALUES ($1, $2)", started_at, jobs
    )


async def tenants_with_down_votes(
    connection: asyncpg.Connection, *, since: datetime, until: datetime
) -> list[str]:
    rows = await connection.fetch(
        """
        SELECT DISTINCT tenant_id FROM trainer.feedback
        WHERE occurred_at >= $1 AND occurred_at < $2
          AND (thumb = 'down' OR (replay ->> 'useful')::boolean IS FALSE) AND current
        ORDER BY tenant_id
        """,
        since,
        until,
    )
    return [row["tenant_id"] for row in rows]


@dataclass(frozen=True)
class RetrainingJob:
    job_id: UUID
    tenant_id: str
    mode: str
    method: str
    status: str
    prompt_count: int
    example_count: int
    file_path: str | None = None
    provider: str | None = None
    base_url: str | None = None
    model: str | None = None
    provider_file_id: str | None = None
    provider_job_id: str | None = None
    fine_tuned_model: str | None = None
    error: str | None = None


async def insert_retraining_job(connection: asyncpg.Connection, *, job: RetrainingJob) -> None:
    await connection.execute(
        """
        INSERT INTO trainer.retraining_jobs (job_id, tenant_id, mode, method, status,
            prompt_count, example_count, file_path, provider, base_url, model,
            provider_file_id, provider_job_id, fine_tuned_model, error)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
        """,
        job.job_id, job.tenant_id, job.mode, job.method, job.status, job.prompt_count,
        job.example_count, job.file_path, job.provider, job.base_url, job.model,
        job.provider_file_id, job.provider_job_id, job.fine_tuned_model, job.error,
    )


async def unfinished_fine_tune_jobs(connection: asyncpg.Connection) -> list[RetrainingJob]:
    rows = await connection.fetch(
        """
        SELECT job_id, tenant_id, mode, method, status, prompt_count, example_count, file_path,
               provider, base_url, model, provider_file_id, provider_job_id, fine_tuned_model,
               error
        FROM trainer.retraining_jobs
        WHERE provider_job_id IS NOT NULL AND NOT (status = ANY($1::text[]))
        ORDER BY created_at
        """,
        list(TERMINAL_FINE_TUNE_STATUSES),
    )
    return [RetrainingJob(**dict(row)) for row in rows]


async def update_fine_tune_status(
    connection: asyncpg.Connection,
    *,
    job_id: UUID,
    status: str,
    fine_tuned_model: str | None,
    error: str | None,
) -> None:
    await connection.execute(
        """
        UPDATE trainer.retraining_jobs
        SET status = $2, fine_tuned_model = $3, error = $4, updated_at = now()
        WHERE job_id = $1
        """,
        job_id, status, fine_tuned_model, error,
    )
