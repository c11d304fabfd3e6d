"""The scheduled retraining job (the seeds' loop): every interval (default weekly), per tenant,
find the worst prompts, export their examples, and either keep the export for manual review
(default) or submit it as a fine-tuning job to an OpenAI-compatible provider, then poll it.

- Worst prompts: down-voted (thumbs-down or not-useful replay) (prompt, reply, action type)
  patterns of the last `lookback` with more than `min_not_useful` signals, near duplicates
  grouped as in the failure-patterns view (`failure_patterns.group_failures`).
- Their examples: the stored train-split examples of those responses that the method trains
  on (supervised: SFT examples, i.e. the corrections and agent replies; dpo: preference pairs),
  written as OpenAI JSONL (`openai-sft` / `openai-preference`) under
  `<export_dir>/<tenant>/<job id>.jsonl` and checked against OpenAI's rules.
- Every run is kept in `trainer.retraining_jobs`, whatever happens: `stored_for_review`,
  `too_few_examples` (fine-tune mode, fewer than 10 valid lines: the file is kept),
  `submit_failed` (the provider refused; the error is kept), or the provider's job status
  (`validating_files`, `queued`, `running`, `succeeded`, `failed`, `cancelled`) with its ids
  and, once done, the fine-tuned model.

OpenAI closes self-serve fine-tuning to new jobs on 2027-01-06: provider, base URL, model and
method are settings, so another OpenAI-compatible provider can take the jobs; the history is
kept either way.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import asyncpg
import openai
import orjson

from feedbackloop.pipeline.jobs import Job, singleton
from feedbackloop.settings import Settings
from services.trainer import reads
from services.trainer.exports.failure_patterns import DownVote, group_failures
from services.trainer.exports.formats import validate_lines
from services.trainer.exports.stream import jsonl_lines
from services.trainer.jobs import retraining_store as store
from services.trainer.jobs.explanations import build_client

logger = logging.getLogger(__name__)
JOB = "retraining"

_FORMAT_OF_METHOD = {"supervised": "openai-sft", "dpo": "openai-preference"}
# Down-votes read per tenant and run.
_MAX_DOWN_VOTES = 50_000


@dataclass(frozen=True)
class RetrainingConfig:
    export_dir: Path
    mode: Literal["review", "fine_tune"] = "review"
    method: Literal["supervised", "dpo"] = "supervised"
    min_not_useful: int = 5
    lookback: timedelta = timedelta(days=7)
    provider: str = "openai"
    base_url: str | None = None
    model: str = "gpt-4o-mini-2024-07-18"


async def worst_prompt_responses(
    connection: asyncpg.Connection, *, tenant_id: str, since: datetime, until: datetime,
    min_not_useful: int,
) -> tuple[int, list[str]]:
    """(how many worst prompts, their response ids)."""
    rows = await reads.down_voted_replies(
        connection, tenant_id=tenant_id, since=since, until=until, action_type=None,
        limit=_MAX_DOWN_VOTES,
    )
    votes = [
        DownVote(response_id=row["response_id"], occurred_at=row["occurred_at"],
                 prompt=row["prompt"], output=row["output"], action_type=row["action_type"],
                 explanation=None)
        for row in rows
        if row["prompt"] and row["output"]
    ]
    worst = group_failures(votes, min_count=min_not_useful + 1, max_response_ids=None)
    return len(worst), sorted({response for pattern in worst for response in pattern.response_ids})


async def retrain_tenant(
    pool: asyncpg.Pool,
    config: RetrainingConfig,
    *,
    tenant_id: str,
    now: datetime,
    client: openai.AsyncOpenAI | None,
) -> store.RetrainingJob | None:
    """One tenant's run; None when no prompt has more than `min_not_useful` signals."""
    export_format = _FORMAT_OF_METHOD[config.method]
    job_id = uuid.uuid4()
    path = config.export_dir / tenant_id / f"{job_id}.jsonl"
    async with pool.acquire() as connection:
        prompts, responses = await worst_prompt_responses(
            connection, tenant_id=tenant_id, since=now - config.lookback, until=now,
            min_not_useful=config.min_not_useful,
        )
        if not prompts:
            return None
        selection = reads.ExampleFilter(
            tenant_id=tenant_id, response_ids=tuple(responses), split="train"
        )
        lines = [
            line async for line in jsonl_lines(
                connection, selection=selection, export_format=export_format
            )
        ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(lines))
    report = validate_lines([orjson.loads(line) for line in lines], export_format)
    job = store.RetrainingJob(
        job_id=job_id, tenant_id=tenant_id, mode=config.mode, method=config.method,
        status="stored_for_review", prompt_count=prompts, example_count=len(lines),
        file_path=str(path), provider=config.provider, base_url=config.base_url,
        model=config.model,
    )
    if config.mode == "fine_tune":
        if not report.valid:
            job = replace(job, status="too_few_examples" if report.lines < 10 else "invalid",
                           error="; ".join(report.errors[:5]))
        else:
            assert client is not None, "fine-tune mode needs a provider client"
            job = await _submit(client, job, path)
    async with pool.acquire() as connection:
        await store.insert_retraining_job(connection, job=job)
    return job


async def _submit(
    client: openai.AsyncOpenAI, job: store.RetrainingJob, path: Path
) -> store.RetrainingJob:
    try:
        uploaded = await client.files.create(file=path, purpose="fine-tune")
        created = await client.fine_tuning.jobs.create(
            model=job.model or "",
            training_file=uploaded.id,
            method={"type": job.method},  # type: ignore[arg-type, typeddict-item]
            suffix=f"feedbackloop-{job.tenant_id}"[:64],
        )
    except openai.OpenAIError as error:
        logger.warning("retraining: submitting %s failed: %s", job.job_id, error)
        error_text = f"{type(error).__name__}: {error}"[:2_000]
        return replace(job, status="submit_failed", error=error_text)
    return replace(
        job, status=created.status, provider_file_id=uploaded.id, provider_job_id=created.id,
        fine_tuned_model=created.fine_tuned_model,
    )


async def poll_fine_tune_jobs(pool: asyncpg.Pool, client: openai.AsyncOpenAI) -> int:
    """Refreshes the status of every submitted job not finished yet; returns how many changed.
    A provider error leaves the job as it was, to be polled again."""
    changed = 0
    async with pool.acquire() as connection:
        for job in await store.unfinished_fine_tune_jobs(connection):
            assert job.provider_job_id is not None
            try:
                remote = await client.fine_tuning.jobs.retrieve(job.provider_job_id)
            except openai.OpenAIError as error:
                logger.warning("retraining: polling %s failed: %s", job.provider_job_id, error)
                continue
            error_message = remote.error.message if remote.error and remote.error.message else None
            if (remote.status, remote.fine_tuned_model, error_message) != (
                job.status, job.fine_tuned_model, job.error
            ):
                await store.update_fine_tune_status(
                    connection, job_id=job.job_id, status=remote.status,
                    fine_tuned_model=remote.fine_tuned_model, error=error_message,
                )
                changed += 1
    return changed


async def run_retraining(
    pool: asyncpg.Pool,
    config: RetrainingConfig,
    *,
    now: datetime,
    client: openai.AsyncOpenAI | None,
) -> list[store.RetrainingJob]:
    """One run over every tenant with down-votes in the lookback; recorded as a run.

    A tenant that fails does not stop the others, and the run is recorded all the same, then
    reported (`RetrainingFailed`, so the job counts a failed run): retrying the whole run would
    submit the other tenants' fine-tunes again. The failed tenants wait for the next run."""
    async with pool.acquire() as connection:
        tenants = await store.tenants_with_down_votes(
            connection, since=now - config.lookback, until=now
        )
    jobs = []
    failed: dict[str, str] = {}
    for tenant_id in tenants:
        try:
            job = await retrain_tenant(pool, config, tenant_id=tenant_id, now=now, client=client)
        except Exception as error:
            logger.exception("retraining: tenant %s failed", tenant_id)
            failed[tenant_id] = f"{type(error).__name__}: {error}"
            continue
        if job is not None:
            jobs.append(job)
    async with pool.acquire() as connection:
        await store.record_retraining_run(connection, started_at=now, jobs=len(jobs))
    if failed:
        raise RetrainingFailed(
            "retraining failed for " + "; ".join(f"{t}: {why}" for t, why in sorted(failed.items()))
            + f" ({len(jobs)} other tenants' jobs recorded; the failed wait for the next run)"
        )
    return jobs


class RetrainingFailed(Exception):
    """Some tenants of a recorded run failed; the others' jobs stand."""


async def run_retraining_if_due(
    pool: asyncpg.Pool,
    config: RetrainingConfig,
    *,
    interval: timedelta,
    client: openai.AsyncOpenAI | None,
    now: datetime | None = None,
) -> list[store.RetrainingJob] | None:
    """Runs when the last run is `interval` old or there was none (a restart does not run it
    early); None when not due or another replica is running it."""
    now = now or datetime.now(UTC)
    ran: list[list[store.RetrainingJob]] = []

    async def run(connection: asyncpg.Connection) -> int:
        last = await store.last_retraining_run(connection)
        if last is not None and now - last < interval:
            return 0
        ran.append(await run_retraining(pool, config, now=now, client=client))
        return 1

    await singleton(pool, JOB, run)()
    return ran[0] if ran else None


def retraining_job(
    pool: asyncpg.Pool,
    config: RetrainingConfig,
    *,
    interval: timedelta,
    client: openai.AsyncOpenAI | None,
    poll_seconds: float = 60.0,
) -> Job:
    """Checks every `poll_seconds` whether a run is due, and polls submitted fine-tune jobs."""

    async def run() -> int:
        jobs = await run_retraining_if_due(pool, config, interval=interval, client=client)
        polled = await poll_fine_tune_jobs(pool, client) if client is not None else 0
        return len(jobs or []) + polled

    return Job(JOB, run, interval=poll_seconds, retry_max_seconds=poll_seconds, periodic=True,
               close=client.close if client is not None else None)


def retraining_job_from_settings(pool: asyncpg.Pool, settings: Settings) -> Job:
    key = settings.retraining_api_key
    client = None
    if settings.retraining_mode == "fine_tune":
        client = build_client(
            base_url=settings.retraining_base_url,
            api_key=key.get_secret_value() if key else "",
            timeout_seconds=120.0,
        )
    return retraining_job(
        pool,
        RetrainingConfig(
            export_dir=settings.retraining_export_dir,
            mode=settings.retraining_mode,
            method=settings.retraining_method,
            min_not_useful=settings.retraining_min_not_useful,
            lookback=timedelta(seconds=settings.retraining_interval_seconds),
            provider=settings.retraining_provider,
            base_url=settings.retraining_base_url,
            model=settings.retraining_model,
        ),
        interval=timedelta(seconds=settings.retraining_interval_seconds),
        client=client,
    )
