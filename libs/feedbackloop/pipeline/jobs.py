"""Background jobs: one implementation of running work beside a service.

A `Job` is a name and one run (`run() -> how much it did`). `JobRunner` runs each job until
the service stops: again at once while a run did something (a backlog drains without waiting),
after `interval` seconds when it did nothing. A run that raises is the one failure policy:
logged, counted, and retried with bounded exponential backoff (from `interval`, doubling to
`retry_max_seconds`), never fatal; while a job is failing it is unhealthy, which the service's
`/readyz` reports with the last error. `singleton` makes a run take a PostgreSQL advisory lock
first, so one replica does it at a time. Metrics: `feedbackloop_job_runs_total{job,outcome}`,
`feedbackloop_job_healthy{job}` and `feedbackloop_job_last_success_timestamp_seconds{job}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import asyncpg

from feedbackloop.kafka import PublishUnavailable
from feedbackloop.observability import JobMetrics
from feedbackloop.pipeline.consumer import is_transient

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """`run` does one round of work and returns how much it did (0: nothing was due).
    `close`, when given, is awaited once the job has stopped (an HTTP client, a producer)."""

    name: str
    run: Callable[[], Awaitable[int]]
    interval: float = 1.0
    retry_max_seconds: float = 30.0
    close: Callable[[], Awaitable[None]] | None = None


@dataclass
class JobState:
    failing_since: float | None = None
    last_error: str | None = None
    last_success: float | None = None
    runs: int = 0

    @property
    def healthy(self) -> bool:
        return self.failing_since is None


@dataclass
class JobRunner:
    """Runs `jobs` as tasks between `start` and `stop`; `checks` and `errors` are for /readyz."""

    jobs: Sequence[Job]
    metrics: JobMetrics
    states: dict[str, JobState] = field(default_factory=dict)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        for job in self.jobs:
            state = self.states.setdefault(job.name, JobState())
            self.metrics.healthy.labels(job.name).set(1)
            self._tasks.append(asyncio.create_task(self._forever(job, state), name=job.name))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for job in self.jobs:
            if job.close is not None:
                try:
                    await job.close()
                except Exception:
                    logger.exception("job %s: closing failed", job.name)

    def checks(self) -> dict[str, bool]:
        return {f"job:{name}": state.healthy for name, state in self.states.items()}

    def errors(self) -> dict[str, str]:
        return {name: s.last_error for name, s in self.states.items() if s.last_error}

    async def _forever(self, job: Job, state: JobState) -> None:
        delay = job.interval
        while True:
            try:
                done = await job.run()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if state.failing_since is None:
                    state.failing_since = time.monotonic()
                state.last_error = f"{type(error).__name__}: {error}"[:500]
                self.metrics.runs.labels(job.name, "failed").inc()
                self.metrics.healthy.labels(job.name).set(0)
                logger.warning("job %s failed, retrying in %.1fs: %s", job.name, delay,
                               state.last_error, exc_info=not _expected(error))
                await asyncio.sleep(delay)
                delay = min(delay * 2, job.retry_max_seconds)
                continue
            delay = job.interval
            state.runs += 1
            state.failing_since = None
            state.last_error = None
            state.last_success = time.time()
            self.metrics.runs.labels(job.name, "worked" if done else "idle").inc()
            self.metrics.healthy.labels(job.name).set(1)
            self.metrics.last_success.labels(job.name).set(state.last_success)
            if not done:
                await asyncio.sleep(job.interval)


def _expected(error: BaseException) -> bool:
    """Outages (the database or broker away) are expected; anything else is logged in full."""
    return is_transient(error) or isinstance(error, PublishUnavailable | OSError)


def singleton(
    pool: asyncpg.Pool, lock_key: int, run: Callable[[asyncpg.Connection], Awaitable[int]]
) -> Callable[[], Awaitable[int]]:
    """A run that first takes the session advisory lock `lock_key` on a connection of `pool`
    and gives that connection to `run`; when another replica holds the lock it does nothing
    (returns 0). The lock is released when the run ends, or with the connection."""

    async def locked() -> int:
        async with pool.acquire() as connection:
            if not await connection.fetchval("SELECT pg_try_advisory_lock($1)", lock_key):
                return 0
            try:
                return await run(connection)
            finally:
                await connection.execute("SELECT pg_advisory_unlock($1)", lock_key)

    return locked
