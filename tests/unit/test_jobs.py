"""The background job runner: work drains at once, failures back off boundedly and show."""

from __future__ import annotations

import asyncio
import itertools

from prometheus_client import CollectorRegistry

from feedbackloop.observability import JobMetrics
from feedbackloop.pipeline.jobs import Job, JobRunner


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
