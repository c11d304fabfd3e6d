"""The consumer pipeline shared by every consumer service.

A service supplies a `ConsumerSpec`: a pure `process(event) -> effect | None` and a repository
`write(connection, effects)` (and, for a consumer of output topics, its `decode`). This module
does the rest, the same way for every service: decode, dead-letter what can never be
processed, claim event ids and write effects in one transaction, retry transient failures, and
only then let the caller commit offsets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, Generic, Protocol, TypeVar
from uuid import UUID

import asyncpg
from aiokafka.errors import KafkaError

from feedbackloop.contract import PoisonMessage, Topic, decode_event
from feedbackloop.observability import ConsumerMetrics
from feedbackloop.postgres import is_schema_change, reset_after_schema_change
from feedbackloop.postgres import is_transient as is_transient_database

logger = logging.getLogger(__name__)


def is_transient(error: BaseException) -> bool:
    """Postgres or the broker unavailable, or the schema mid-migration: retry, never
    dead-letter."""
    return is_transient_database(error) or isinstance(error, KafkaError)

EffectT = TypeVar("EffectT")
EventKey = tuple[str, Any]  # (tenant_id, event_id)


class Claimable(Protocol):
    """What the pipeline needs of a decoded message: the key it is claimed under."""

    @property
    def tenant_id(self) -> str: ...

    @property
    def event_id(self) -> UUID: ...


class Record(Protocol):
    """What the pipeline needs of a consumed Kafka record (aiokafka's ConsumerRecord fits)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True)
class ConsumerSpec(Generic[EffectT]):
    """What makes one consumer service: its name, its schema, its topics and its logic.

    `process` is pure and raises `PoisonMessage` (usually `InvalidEvent`) for an event that is
    well-formed but can never be applied. `write` applies the effects of events not seen before,
    in order, inside the transaction the pipeline opened; it must not commit.

    `subjects` names what an effect reads and writes together with effects from other topics
    (a response and the feedback about it, a user's consent and their feedback). Replicas of a
    consumer may hold the partitions of those topics at the same time; the pipeline takes a
    transaction-scoped lock per subject before `write`, so a join is never made between two
    transactions that cannot see each other's rows.

    `decode` turns a record's value into what `process` takes, raising `PoisonMessage` for one
    that can never decode; the default decodes input events. A consumer of output topics
    (training examples, alert changes) passes `decode_message`, which decodes those too.
    """

    name: str
    schema: str
    topics: tuple[Topic, ...]
    process: Callable[[Any], EffectT | None]
    write: Callable[[asyncpg.Connection, Sequence[EffectT]], Awaitable[None]]
    subjects: Callable[[EffectT], Iterable[str]] | None = None
    decode: Callable[[bytes | None], Claimable] = decode_event


@dataclass(frozen=True)
class DeadLetter:
    """A record that can never be processed, with why. Published to its topic's dead-letter
    topic carrying the original value and key unchanged, so it can be replayed after a fix."""

    record: Record
    error_class: str
    error_message: str
    service: str
    failed_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def headers(self) -> dict[str, str]:
        return {
            "fbl-original-topic": self.record.topic,
            "fbl-original-partition": str(self.record.partition),
            "fbl-original-offset": str(self.record.offset),
            "fbl-error-class": self.error_class,
            "fbl-error-message": self.error_message[:2_000],
            "fbl-service": self.service,
            "fbl-failed-at": self.failed_at.isoformat(),
        }


class DeadLetterSink(Protocol):
    async def publish(self, dead_letters: Sequence[DeadLetter]) -> None: ...


class DeadLetterStorm(Exception):
    """Most of the recent input would be dead-lettered: more likely a bad deploy than bad data.

    Raised before anything of the batch is applied or dead-lettered, so the consumer stops
    where it is (the caller rewinds) instead of draining the topic into the dead-letter queue.
    """


class DeadLetterGuard:
    """Tracks the share of dead-lettered records over the last `window` records."""

    def __init__(self, *, max_ratio: float = 0.5, window: int = 1_000, min_records: int = 100):
        self.max_ratio = max_ratio
        self.window = window
        self.min_records = min_records
        self._recent: deque[bool] = deque(maxlen=window)

    def check(self, dead: int, total: int) -> None:
        """Raise `DeadLetterStorm` if `dead` of `total` more records would cross the limit."""
        seen = len(self._recent) + total
        dead_seen = sum(self._recent) + dead
        if seen >= self.min_records and dead_seen > self.max_ratio * seen:
            raise DeadLetterStorm(
                f"{dead_seen} of the last {seen} records would be dead-lettered "
                f"(limit {self.max_ratio:.0%}); stopping instead of draining the topic"
            )

    def record(self, dead: int, total: int) -> None:
        self._recent.extend([True] * dead + [False] * (total - dead))


@dataclass
class BatchOutcome:
    applied: int = 0
    duplicates: int = 0
    ignored: int = 0
    dead_lettered: int = 0


class RetryState:
    """Whether the pipeline is currently stuck retrying a transient failure (for /readyz)."""

    def __init__(self) -> None:
        self.failing_since: float | None = None
        self.last_error: str | None = None
        self.storm: str | None = None

    @property
    def healthy(self) -> bool:
        return self.failing_since is None and self.storm is None


class BatchPipeline(Generic[EffectT]):
    """Processes one fetched batch to completion.

    Contract: `process_batch` returns only when every record is either applied (its effects
    and its event id committed in one Postgres transaction) or dead-lettered (acknowledged by
    the broker). Transient failures (Postgres or broker unavailable) are retried with capped
    exponential backoff, indefinitely, and never dead-lettered; so is a schema that is behind
    the code or changed under a cached plan (a migration not yet applied or running), after
    the pool's connections are replaced. While a retry lasts, `retry_state` is unhealthy and
    the service reports not ready. Any other exception propagates: the caller must rewind the
    batch rather than commit past it.
    """

    def __init__(
        self,
        spec: ConsumerSpec[EffectT],
        pool: asyncpg.Pool,
        dead_letters: DeadLetterSink,
        metrics: ConsumerMetrics,
        *,
        retry_max_seconds: float = 5.0,
        guard: DeadLetterGuard | None = None,
    ) -> None:
        self.spec = spec
        self.guard = guard or DeadLetterGuard()
        self.pool = pool
        self.dead_letters = dead_letters
        self.metrics = metrics
        self.retry_max_seconds = retry_max_seconds
        self.retry_state = RetryState()
        self._claim_sql = (
            f"INSERT INTO {spec.schema}.processed_events (tenant_id, event_id) "
            "SELECT * FROM unnest($1::text[], $2::uuid[]) "
            "ON CONFLICT DO NOTHING RETURNING tenant_id, event_id"
        )

    async def process_batch(self, records: Sequence[Record]) -> BatchOutcome:
        started = time.perf_counter()
        outcome = BatchOutcome()
        dead: list[DeadLetter] = []
        pending: list[tuple[EventKey, EffectT]] = []
        seen: set[EventKey] = set()
        for record in records:
            try:
                event = self.spec.decode(record.value)
                effect = self.spec.process(event)
            except PoisonMessage as error:
                dead.append(self._dead_letter(record, error.reason, str(error)))
                continue
            key: EventKey = (event.tenant_id, event.event_id)
            if effect is None:
                outcome.ignored += 1
            elif key in seen:
                outcome.duplicates += 1
            else:
                seen.add(key)
                pending.append((key, effect))
        self._check_storm(len(dead), len(records))
        self.retry_state.storm = None
        if pending:
            try:
                applied = await self._retrying(lambda: self._apply(pending))
                outcome.applied += applied
                outcome.duplicates += len(pending) - applied
            except Exception as error:
                if is_transient(error):
                    raise
                logger.warning("%s: batch failed (%s); isolating records", self.spec.name, error)
                await self._apply_one_by_one(records, pending, dead, outcome)
                # A write that fails for most records (a bad deploy's SQL) is a storm too.
                self._check_storm(len(dead), len(records))
        if dead:
            await self._retrying(lambda: self.dead_letters.publish(dead))
            outcome.dead_lettered = len(dead)
        self.guard.record(len(dead), len(records))
        self._record(outcome, time.perf_counter() - started)
        return outcome

    def _check_storm(self, dead: int, total: int) -> None:
        try:
            self.guard.check(dead, total)
        except DeadLetterStorm as storm:
            self.retry_state.storm = str(storm)
            logger.error("%s: %s", self.spec.name, storm)
            raise

    async def _apply(self, items: Sequence[tuple[EventKey, EffectT]]) -> int:
        async with self.pool.acquire() as connection, connection.transaction():
            claimed = await connection.fetch(
                self._claim_sql,
                [key[0] for key, _ in items],
                [key[1] for key, _ in items],
            )
            fresh = {(row["tenant_id"], row["event_id"]) for row in claimed}
            effects = [effect for key, effect in items if key in fresh]
            if effects:
                await self._lock_subjects(connection, effects)
                await self.spec.write(connection, effects)
            return len(effects)

    async def _lock_subjects(self, connection: asyncpg.Connection, effects: Sequence[EffectT]) -> None:
        if self.spec.subjects is None:
            return
        subjects = sorted({f"{self.spec.schema}:{s}" for e in effects for s in self.spec.subjects(e)})
        # Sorted, so two transactions locking overlapping subjects cannot deadlock on them.
        if subjects:
            await connection.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(subject, 0)) "
                "FROM unnest($1::text[]) AS subject ORDER BY subject",
                subjects,
            )

    async def _apply_one_by_one(
        self,
        records: Sequence[Record],
        pending: Sequence[tuple[EventKey, EffectT]],
        dead: list[DeadLetter],
        outcome: BatchOutcome,
    ) -> None:
        record_of_key: dict[EventKey, Record] = {}
        for record in records:
            try:
                event = self.spec.decode(record.value)
            except PoisonMessage:
                continue
            record_of_key.setdefault((event.tenant_id, event.event_id), record)
        for item in pending:
            try:
                applied = await self._retrying(partial(self._apply, [item]))
            except Exception as error:
                if is_transient(error):
                    raise
                dead.append(
                    self._dead_letter(record_of_key[item[0]], type(error).__name__, str(error))
                )
                continue
            outcome.applied += applied
            outcome.duplicates += 1 - applied

    async def _retrying(self, operation: Callable[[], Awaitable[Any]]) -> Any:
        delay = 0.1
        while True:
            try:
                result = await operation()
            except Exception as error:
                if not is_transient(error):
                    raise
                if self.retry_state.failing_since is None:
                    self.retry_state.failing_since = time.monotonic()
                self.retry_state.last_error = f"{type(error).__name__}: {error}"
                self.metrics.transient_failures.labels(self.spec.name).inc()
                if is_schema_change(error):
                    await reset_after_schema_change(self.pool)
                logger.warning(
                    "%s: transient failure, retrying in %.1fs: %s",
                    self.spec.name,
                    delay,
                    self.retry_state.last_error,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_seconds)
                continue
            self.retry_state.failing_since = None
            self.retry_state.last_error = None
            return result

    def _dead_letter(self, record: Record, error_class: str, message: str) -> DeadLetter:
        logger.warning(
            "%s: dead-lettering %s[%d]@%d: %s: %s",
            self.spec.name,
            record.topic,
            record.partition,
            record.offset,
            error_class,
            message[:300],
        )
        return DeadLetter(record, error_class, message, self.spec.name)

    def _record(self, outcome: BatchOutcome, seconds: float) -> None:
        self.metrics.count("applied", outcome.applied)
        self.metrics.count("duplicate", outcome.duplicates)
        self.metrics.count("ignored", outcome.ignored)
        self.metrics.count("dead_lettered", outcome.dead_lettered)
        self.metrics.batch_seconds.labels(self.spec.name).observe(seconds)


def consecutive_runs(effects: Sequence[Any]) -> list[tuple[type, list[Any]]]:
    """Group effects into runs of one type, keeping order, so a repository can write each run
    with one statement without reordering, say, an erasure and the feedback before it."""
    runs: list[tuple[type, list[Any]]] = []
    for effect in effects:
        if runs and runs[-1][0] is type(effect):
            runs[-1][1].append(effect)
        else:
            runs.append((type(effect), [effect]))
    return runs


def grouped_runs(
    effects: Sequence[Any], *, barriers: tuple[type, ...] = ()
) -> list[tuple[type, list[Any]]]:
    """Group effects into as few runs of one type as the repository's order allows.

    For a repository whose writes of different types commute (inserts that skip conflicts,
    flags recomputed from the stored rows, counters added up), except for the `barriers`
    (an erasure, a consent change: what comes after one must see it, what came before must be
    seen by it): between two barriers, every effect of a type joins that type's run, placed
    where the type first appeared, each run keeping the effects' order; barriers stay where
    they are (consecutive ones of a type in one run). Mixed traffic alternates types event by
    event, so `consecutive_runs` would give runs of one or two effects: one statement each.
    """
    runs: list[tuple[type, list[Any]]] = []
    open_runs: dict[type, list[Any]] = {}
    for effect in effects:
        kind = type(effect)
        if issubclass(kind, barriers):
            open_runs.clear()
            if runs and runs[-1][0] is kind:
                runs[-1][1].append(effect)
            else:
                runs.append((kind, [effect]))
            continue
        run = open_runs.get(kind)
        if run is None:
            run = open_runs[kind] = []
            runs.append((kind, run))
        run.append(effect)
    return runs
