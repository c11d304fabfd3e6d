"""End to end under sustained load: the highest offered rate the running system holds.

A ladder of offered rates of realistic mixed traffic (`feedbackloop loadgen`'s generator: AI
responses with thumbs, ratings, corrections, comments and replays, recommendation sessions with
browsing and choices) goes through ingest and all four consumers into PostgreSQL. Each step lasts
`step_seconds`. Beside the load, probes measure freshness as a dashboard sees it: four times a
second one thumb is posted under its own action type for a separate probe tenant, and the query
API's approval by action type is polled every 100 ms until the probe's group appears; freshness is
the time from the probe's 2xx to that first sighting. After each step the load stops and the time
until every consumer group's lag is back to 0 is measured before the next step starts. A step is
held when the load generator achieved at least 95% of the offered rate, freshness p99 is under
2 s, and every consumer kept pace (lag back to 0 within `KEPT_PACE_SECONDS` of the stop; a
consumer falling behind would otherwise go unseen by the probes, which only the metrics consumer
serves). The ladder stops at the first step not held.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from services.cli.loadgen import generate

FRESHNESS_TARGET_SECONDS = 2.0
KEPT_PACE_SECONDS = 5.0
PROBES_PER_SECOND = 4
# A probe never seen this long after its 2xx counts as infinitely stale.
PROBE_GIVE_UP_SECONDS = 30.0


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


class Probes:
    """Probe thumbs sent under their own action types, and when the query API first showed each."""

    def __init__(self, ingest_url: str, query_url: str, key: str) -> None:
        self.ingest_url, self.query_url = ingest_url, query_url
        self.headers = {"Authorization": f"Bearer {key}"}
        self.accepted: dict[str, float] = {}
        self.seen: dict[str, float] = {}
        self.errors = 0

    async def send(self, client: httpx.AsyncClient, stop: asyncio.Event) -> None:
        while not stop.is_set():
            group = f"probe-{uuid.uuid4().hex[:12]}"
            body = {"response_id": group, "thumb": "up", "action_type": group}
            try:
                answer = await client.post(f"{self.ingest_url}/v1/feedback", json=body)
            except httpx.HTTPError:
                answer = None
            if answer is not None and answer.status_code == 202:
                self.accepted[group] = time.perf_counter()
            else:
                self.errors += 1
            await asyncio.sleep(1 / PROBES_PER_SECOND)

    async def watch(self, client: httpx.AsyncClient, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                answer = await client.get(f"{self.query_url}/v1/analytics/approval",
                                          params={"group_by": "action_type"})
                now = time.perf_counter()
                if answer.status_code == 200:
                    for group in answer.json()["groups"]:
                        self.seen.setdefault(group["group"], now)
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)

    def freshness(self, groups: set[str]) -> list[float]:
        return [self.seen[g] - self.accepted[g] if g in self.seen else float("inf")
                for g in groups]


async def sustained_load(
    ingest_url: str,
    query_url: str,
    load_key: str,
    probe_key: str,
    lag: Callable[[], Awaitable[int]],
    *,
    rates: list[int],
    step_seconds: float,
) -> dict[str, Any]:
    """Run the ladder; `lag()` returns the summed lag of every consumer group."""
    probes = Probes(ingest_url, query_url, probe_key)
    steps: list[dict[str, Any]] = []
    async with httpx.AsyncClient(headers=probes.headers, timeout=10) as client:
        for step, rate in enumerate(rates):
            before = set(probes.accepted)
            stop = asyncio.Event()
            sender = asyncio.create_task(probes.send(client, stop))
            stop_watching = asyncio.Event()
            watcher = asyncio.create_task(probes.watch(client, stop_watching))
            started = time.perf_counter()
            sent = await generate(ingest_url, load_key, rate=rate, seconds=step_seconds,
                                  seed=step)
            elapsed = time.perf_counter() - started
            stop.set()
            await sender
            groups = set(probes.accepted) - before
            deadline = time.perf_counter() + PROBE_GIVE_UP_SECONDS
            # Polling what the watcher records and the broker's offsets: nothing to wait on.
            while groups - set(probes.seen) and time.perf_counter() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            stop_watching.set()
            await watcher
            drain_started = time.perf_counter()
            while await lag() > 0 and time.perf_counter() - drain_started < 600:  # noqa: ASYNC110
                await asyncio.sleep(0.5)
            drained = time.perf_counter() - drain_started
            fresh = probes.freshness(groups)
            achieved = sum(sent.values()) / elapsed
            result = {
                "offered_events_per_second": rate,
                "achieved_events_per_second": round(achieved, 1),
                "events": sum(sent.values()),
                "probes": len(fresh),
                "freshness_p50_s": round(_percentile(fresh, 0.5), 3) if fresh else None,
                "freshness_p99_s": round(_percentile(fresh, 0.99), 3) if fresh else None,
                "seconds_to_zero_lag_after_stop": round(drained, 2),
            }
            result["held"] = bool(
                fresh and achieved >= 0.95 * rate
                and result["freshness_p99_s"] < FRESHNESS_TARGET_SECONDS
                and drained < KEPT_PACE_SECONDS
            )
            steps.append(result)
            if not result["held"]:
                break
    held = [s["offered_events_per_second"] for s in steps if s["held"]]
    return {
        "step_seconds": step_seconds,
        "freshness_target_s": FRESHNESS_TARGET_SECONDS,
        "highest_rate_held": max(held) if held else 0,
        "probe_errors": probes.errors,
        "steps": steps,
    }
