"""Background jobs: one implementation of running work beside a service.

A `Job` is a name and one run (`run() -> how much it did`). `JobRunner` runs each job until
the service stops: again at once while a run left a backlog (it did something, or with `batch`
a full batch; a backlog drains without waiting), after `interval` seconds otherwise. A run
that raises is the one failure policy, whatever it raised: logged (a log line with the job's
name and the error), counted, and retried with bounded exponential backoff (from
`retry_min_seconds`, by default `interval`, doubling to `retry_max_seconds`), never fatal to
the service or to its other jobs; while a job is failing it is unhealthy, which the service's
`/readyz` reports (not ready, with the last error) until a run succeeds again. `singleton`
makes a run take a PostgreSQL advisory lock named after the job first, so one replica does it
at a time. Metrics: `feedbackloop_job_runs_total{job,outcome}`,
`feedbackloop_job_healthy{job}` and `feedbackloop_job_last_success_timestamp_seconds{job}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
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

    `batch`, when given, is the most one run does: a run that did fewer drained the backlog,
    so the next one waits `interval`; without it any run that did something goes again at
    once. `periodic` jobs (a schedule, not a backlog) always wait `interval` between runs, and
    `first_delay` before the first. `close`, when given, is awaited once the job has stopped
    (an HTTP client, a producer)."""

    name: str
    run: Callable[[], Awaitable[int]]
    interval: float = 1.0
    retry_max_seconds: float = 30.0
    retry_min_seconds: float | None = None
    batch: int | None = None
    periodic: bool = False
    first_delay: float = 0.0
    close: Callable[[], Awaitable[None]] | None = None

    def backlog_left(self, done: int) -> bool:
        """Whether a run that did `done` left work for the next one at once."""
        if self.periodic or not done:
            return False
        return self.batch is None or done >= self.batch


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

    def ended(self) -> list[str]:
        """Jobs whose task ended while the runner runs (none should: a run never ends its job)."""
        return [task.get_name() for task in self._tasks if task.done()]

    def checks(self) -> dict[str, bool]:
        """Each job's health; a job whose task ended (it never should: a stray BaseException
        out of a run) is unhealthy, whatever its last run said."""
        ended = set(self.ended())
        return {f"job:{name}": state.healthy and name not in ended
                for name, state in self.states.items()}

    def errors(self) -> dict[str, str]:
        errors = {name: s.last_error for name, s in self.states.items() if s.last_error}
        for task in self._tasks:
            if task.done():
                ended = task.exception() if not task.cancelled() else None
                errors[task.get_name()] = f"the job ended: {ended!r}"[:500]
        return errors

    async def _forever(self, job: Job, state: JobState) -> None:
        first_retry = job.interval if job.retry_min_seconds is None else job.retry_min_seconds
        delay = first_retry
        if job.first_delay > 0:
            await asyncio.sleep(job.first_delay)
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
            delay = first_retry
            state.runs += 1
            state.failing_since = None
            state.last_error = None
            state.last_success = time.time()
            self.metrics.runs.labels(job.name, "worked" if done else "idle").inc()
            self.metrics.healthy.labels(job.name).set(1)
            self.metrics.last_success.labels(job.name).set(state.last_success)
            if not job.backlog_left(done):
                await asyncio.sleep(job.interval)


def _expected(error: BaseException) -> bool:
    """Outages (the database or broker away) are expected; anything else is logged in full."""
    return is_transient(error) or isinstance(error, PublishUnavailable | OSError)


def lock_key(name: str) -> int:
    """The advisory lock key of the job called `name`: a stable signed 64-bit number, the same
    in every replica and every release."""
    digest = hashlib.sha256(f"feedbackloop.job:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def singleton(
    pool: asyncpg.Pool, name: str, run: Callable[[asyncpg.Connection], Awaitable[int]]
) -> Callable[[], Awaitable[int]]:
    """A run that first takes the session advisory lock of the job `name` (`lock_key`) on a
    connection of `pool` and gives that connection to `run`; when another replica holds the
    lock it does nothing (returns 0). The lock is released when the run ends, or with the
    connection."""
    key = lock_key(name)

    async def locked() -> int:
        async with pool.acquire() as connection:
            if not await connection.fetchval("SELECT pg_try_advisory_lock($1)", key):
                return 0
            try:
                return await run(connection)
            finally:
                await connection.execute("SELECT pg_advisory_unlock($1)", key)

    return locked
