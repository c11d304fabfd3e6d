"""The background job runner: work drains at once, failures back off boundedly and show; and
the outbox, which marks only what the broker acknowledged."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from feedbackloop.kafka import OutgoingMessage, PublishRejected, PublishUnavailable
from feedbackloop.observability import JobMetrics
from feedbackloop.pipeline.jobs import Job, JobRunner, lock_key
from feedbackloop.pipeline.outbox import Outbox


async def test_a_failing_job_backs_off_reports_itself_and_recovers() -> None:
    outcomes = [3, 0, RuntimeError("receiver table gone"), RuntimeError("still gone"), 0]
    runs: list[float] = []
    recovered = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def run() -> int:
        runs.append(loop.time())
        outcome = outcomes.pop(0) if outcomes else 0
        if not outcomes:
            recovered.set()
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    registry = CollectorRegistry()
    runner = JobRunner([Job("demo", run, interval=0.05, retry_max_seconds=0.08)], JobMetrics(registry))
    runner.start()
    seen_unhealthy = False
    try:
        async with asyncio.timeout(5):
            while not recovered.is_set():
                if runner.checks() == {"job:demo": False}:
                    seen_unhealthy = True
                    assert runner.errors() == {"demo": "RuntimeError: receiver table gone"} or \
                        runner.errors() == {"demo": "RuntimeError: still gone"}
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.02)
    finally:
        await runner.stop()
    assert seen_unhealthy and runner.checks() == {"job:demo": True} and runner.errors() == {}
    # An idle run waits the interval, a failure the backoff: the first failure 0.05 s, the
    # second double that, capped at 0.08 s (lower bounds only: a busy machine sleeps longer).
    gaps = [b - a for a, b in itertools.pairwise(runs)]
    assert gaps[1] >= 0.05 and gaps[2] >= 0.05 and gaps[3] >= 0.08
    value = registry.get_sample_value("feedbackloop_job_runs_total", {"job": "demo", "outcome": "failed"})
    assert value == 2


class _Escaped(BaseException):
    """What no run should raise: it goes past the runner's `except Exception`."""


async def test_a_job_whose_task_ended_is_reported_unhealthy_with_why() -> None:
    escaped = asyncio.Event()

    async def run() -> int:
        escaped.set()
        raise _Escaped("out of the runner")

    runner = JobRunner([Job("escapes", run, interval=0.01)], JobMetrics(CollectorRegistry()))
    runner.start()
    try:
        async with asyncio.timeout(5):
            await escaped.wait()
        await asyncio.sleep(0.05)  # the task ends as the exception leaves it
        assert runner.ended() == ["escapes"]
        assert runner.checks() == {"job:escapes": False}
        assert "the job ended" in runner.errors()["escapes"]
        assert "out of the runner" in runner.errors()["escapes"]
    finally:
        with pytest.raises(_Escaped):
            await runner.stop()


async def _runs_of(job_of: Callable[[Callable[[], Awaitable[int]]], Job], outcomes: list[int],
                   ) -> list[float]:
    """When each run of the job began, until `outcomes` (what the runs did) are used up."""
    runs: list[float] = []
    done = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def run() -> int:
        runs.append(loop.time())
        if len(runs) == len(outcomes):
            done.set()
        return outcomes[min(len(runs), len(outcomes)) - 1]

    runner = JobRunner([job_of(run)], JobMetrics(CollectorRegistry()))
    started = loop.time()
    runner.start()
    try:
        async with asyncio.timeout(5):
            await done.wait()
    finally:
        await runner.stop()
    return [started, *runs]


async def test_a_batched_job_goes_again_at_once_only_after_a_full_batch() -> None:
    times = await _runs_of(lambda run: Job("batched", run, interval=0.3, batch=10), [10, 4, 0])
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # A full batch: at once again; a partial one drained the backlog: the interval.
    assert gaps[1] < 0.2 and gaps[2] >= 0.3


async def test_a_periodic_job_waits_its_interval_after_every_run_and_before_the_first() -> None:
    times = await _runs_of(
        lambda run: Job("periodic", run, interval=0.2, periodic=True, first_delay=0.25), [5, 5])
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] >= 0.25 and gaps[1] >= 0.2


def test_lock_keys_are_stable_per_name_and_fit_a_postgres_bigint() -> None:
    assert lock_key("training-relay") == lock_key("training-relay")
    assert lock_key("training-relay") != lock_key("weights-relay")
    assert all(-(2**63) <= lock_key(name) < 2**63 for name in ("a", "alert-relay", "x" * 200))


async def test_an_outbox_marks_only_what_the_broker_acknowledged() -> None:
    queue = [("acme", "c1", b"one"), ("acme", "c2", b"two"), ("beta", "c1", b"three")]
    marked: list[list[tuple[str, str, bytes]]] = []

    async def pending(connection: Any, limit: int) -> list[tuple[str, str, bytes]]:
        done = {item for batch in marked for item in batch}
        return [item for item in queue if item not in done][:limit]

    async def mark(connection: Any, items: Sequence[tuple[str, str, bytes]]) -> None:
        marked.append(list(items))

    outbox = Outbox("demo", "p.demo", pending, lambda i: (f"{i[0]}:{i[1]}".encode(), i[2]), mark,
                    batch_size=2)
    sent: list[OutgoingMessage] = []

    async def refused(messages: Sequence[OutgoingMessage]) -> None:
        raise PublishUnavailable("broker away")

    async def acknowledged(messages: Sequence[OutgoingMessage]) -> None:
        sent.extend(messages)

    with pytest.raises(PublishUnavailable):
        await outbox.relay(None, refused)
    assert marked == []
    assert await outbox.relay(None, acknowledged) == 2
    assert await outbox.relay(None, acknowledged) == 1
    assert await outbox.relay(None, acknowledged) == 0
    assert sent == [OutgoingMessage("p.demo", b"acme:c1", b"one"),
                    OutgoingMessage("p.demo", b"acme:c2", b"two"),
                    OutgoingMessage("p.demo", b"beta:c1", b"three")]
    assert marked == [queue[:2], queue[2:]]


async def test_a_message_the_broker_refuses_for_good_holds_back_nothing_after_it() -> None:
    queue = [("acme", "c1", b"one"), ("acme", "c2", b"x" * 2_000), ("acme", "c3", b"three")]
    marked: list[tuple[str, str, bytes]] = []

    async def pending(connection: Any, limit: int) -> list[tuple[str, str, bytes]]:
        return [item for item in queue if item not in marked][:limit]

    async def mark(connection: Any, items: Sequence[tuple[str, str, bytes]]) -> None:
        marked.extend(item for item in items if item not in marked)

    outbox = Outbox("demo", "p.demo", pending, lambda i: (f"{i[0]}:{i[1]}".encode(), i[2]), mark)
    sent: list[bytes] = []

    async def publish(messages: Sequence[OutgoingMessage]) -> None:
        if any(len(message.value) > 1_000 for message in messages):
            raise PublishRejected("MessageSizeTooLargeError")
        sent.extend(message.value for message in messages)

    with pytest.raises(PublishRejected, match=r"keyed b'acme:c2' \(2000 bytes\)"):
        await outbox.relay(None, publish)
    assert sent == [b"one"] and marked == queue[:2]
    assert await outbox.relay(None, publish) == 1
    assert sent == [b"one", b"three"] and marked == queue
