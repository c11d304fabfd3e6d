"""Query latency against the number of events (issue 7, measurement 4).

`measure_queries` fills a database's read models with what N feedback events spread over 30
days leave in them, for N = 1 million then 10 million, and times the analytics endpoints over
HTTP against a running query service at each N, beside the old minute-scan SQL of the approval
endpoint timed directly. The target: p95 under 50 ms at 10 million, flat in N.

`python -m tests.bench.queries` runs it on embedded PostgreSQL with the query service as a
process, and prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from feedbackloop.identity import hash_user_id
from services.metrics import reads as repository
from services.metrics.processing import COUNTERS

SPAN = timedelta(days=30)
CHUNK_EVENTS = 500_000
BASELINE_REQUESTS = 20
ROLLUPS = ("metrics.feedback_minute", "metrics.feedback_hour", "metrics.feedback_day")
READ_TABLES = (*ROLLUPS, "profiles.feedback", "profiles.responses", "profiles.users")

# The shape of the generated events. Weights need not sum to 1 (they are normalized).
ACTION_TYPES = (
    "draft_reply", "summarize_ticket", "suggest_macro", "classify_intent", "extract_order",
    "translate_reply", "rewrite_tone", "answer_faq", "route_ticket", "detect_sentiment",
    "write_followup", "propose_refund", "fill_form", "search_kb", "close_ticket",
    "escalate", "tag_ticket", "generate_title", "check_policy", "recommend_product",
)  # drawn with density falling linearly: the first is ~10%, the last ~0.25%
MODELS = {"gpt-4o-mini": 0.5, "gpt-4o": 0.25, "claude-sonnet": 0.15, "llama-3-70b": 0.1}
PROMPT_VERSIONS = {"v1": 0.2, "v2": 0.5, "v3": 0.3}
LANGUAGES = {"en": 0.6, "de": 0.2, "fr": 0.12, "ja": 0.08}
FEATURES = ("inbox", "composer", "triage", "knowledge", "commerce")  # one per action type
VARIANTS = {"unknown/unknown": 0.7, "tone/a": 0.15, "tone/b": 0.15}  # experiment/variant
KINDS = {"thumb": 0.6, "rating": 0.25, "comment": 0.1, "correction": 0.05}
REASONS = ("too_long", "wrong_tone", "inaccurate", "missing_context", "helpful")


def _weighted(draw: str, choices: Mapping[str, float]) -> str:
    """A SQL CASE choosing among `choices` (our constants) by the uniform draw `draw`."""
    total, bound, arms = sum(choices.values()), 0.0, []
    names = list(choices)
    for name in names[:-1]:
        bound += choices[name] / total
        arms.append(f"WHEN {draw} < {bound!r} THEN '{name}'")
    return f"CASE {' '.join(arms)} ELSE '{names[-1]}' END"


def _array(values: tuple[str, ...]) -> str:
    return "ARRAY[" + ", ".join(f"'{value}'" for value in values) + "]"


# One uniform draw in [0, 1) per (event number, purpose): every attribute of event i is a pure
# function of i (and of the window and the sizes), so a run is reproducible.
_DRAW_FUNCTION = """
CREATE FUNCTION pg_temp.draw(i bigint, purpose bigint) RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT (hashint8extended(i, purpose) & 4503599627370495)::float8 / 4503599627370496 $$
"""

# Events numbered [$1, $2) of tenant $3, by users numbered from 0 (bench_users: number -> hash),
# user k's share of events falling as 1/sqrt(k). The $7 events numbered from $6 are spread evenly
# over [$4, $4 + $5) in the order of their numbers, so that a chunk is a slice of time (its rows
# land together in the rollups' indexes, as a consumer's would).
_EVENTS = f"""
CREATE TEMP TABLE bench_events ON COMMIT DROP AS
WITH drawn AS (
    SELECT i,
           floor({len(ACTION_TYPES)} * (1 - sqrt(1 - pg_temp.draw(i, 1))))::int AS action,
           $4::timestamptz
             + $5::interval * ((i - $6::bigint + pg_temp.draw(i, 2)) / $7::bigint) AS occurred_at,
           floor(pg_temp.draw(i, 3) ^ 2 * (SELECT count(*) FROM bench_users))::int AS user_number,
           {_weighted("pg_temp.draw(i, 4)", KINDS)} AS kind,
           pg_temp.draw(i, 5) AS signal,
           {_weighted("pg_temp.draw(i, 6)", VARIANTS)} AS experiment_variant
    FROM generate_series($1::bigint, $2::bigint - 1) AS i
)
SELECT d.i, md5($3::text || ':' || d.i)::uuid AS event_id, 'r' || d.i AS response_id,
       d.occurred_at, u.user_hash, d.kind,
       ({_array(ACTION_TYPES)})[d.action + 1] AS action_type,
       {_weighted("pg_temp.draw(d.i, 7)", MODELS)} AS model,
       {_weighted("pg_temp.draw(d.i, 8)", PROMPT_VERSIONS)} AS prompt_version,
       split_part(d.experiment_variant, '/', 1) AS experiment,
       split_part(d.experiment_variant, '/', 2) AS variant,
       {_weighted("pg_temp.draw(d.i, 9)", LANGUAGES)} AS language,
       ({_array(FEATURES)})[d.action % {len(FEATURES)} + 1] AS feature,
       CASE WHEN d.kind = 'thumb' THEN
            CASE WHEN d.signal < 0.6 + 0.015 * d.action THEN 'up' ELSE 'down' END END AS thumb,
       CASE WHEN d.kind = 'rating' THEN 1 + floor(5 * sqrt(d.signal))::smallint END AS rating,
       CASE WHEN d.kind = 'comment' THEN 'comment on response ' || d.i END AS comment,
       CASE WHEN d.kind = 'comment'
            THEN ARRAY[({_array(REASONS)})[1 + floor({len(REASONS)} * d.signal)::int]]
            ELSE '{{}}'::text[] END AS reasons,
       CASE WHEN d.kind = 'correction' THEN 'the text finally sent, ' || d.i END AS correction
FROM drawn d
JOIN bench_users u ON u.user_number = d.user_number
"""

_VERDICT = """
CASE WHEN thumb = 'up' OR rating >= 4 THEN 'accepted'
     WHEN thumb = 'down' OR rating <= 2 OR kind = 'correction' THEN 'rejected'
     ELSE 'neutral' END
"""

_COUNTERS = {
    "thumbs_up": "count(*) FILTER (WHERE thumb = 'up')",
    "thumbs_down": "count(*) FILTER (WHERE thumb = 'down')",
    "rating_sum": "coalesce(sum(rating), 0)",
    "rating_count": "count(rating)",
    "comments": "count(comment)",
    "corrections": "count(correction)",
}
_DIMENSIONS = ("action_type", "model", "prompt_version", "experiment", "variant", "language",
               "feature")


def _rollup_upsert(table: str, truncate_to: str) -> str:
    """The chunk's counts added into one rollup, bucketed like the metrics consumer does (UTC
    truncation of the event's minute), and added to what earlier chunks wrote."""
    key = ("tenant_id", "bucket", *_DIMENSIONS)
    return f"""
    INSERT INTO {table} ({", ".join(key)}, {", ".join(_COUNTERS)})
    SELECT $1::text, date_trunc('{truncate_to}', occurred_at, 'UTC'), {", ".join(_DIMENSIONS)},
           {", ".join(_COUNTERS.values())}
    FROM bench_events
    GROUP BY 2, {", ".join(_DIMENSIONS)}
    ORDER BY 2, {", ".join(_DIMENSIONS)}
    ON CONFLICT ({", ".join(key)}) DO UPDATE SET
        {", ".join(f"{name} = {table}.{name} + EXCLUDED.{name}" for name in _COUNTERS)}
    """


_LOAD_CHUNK = (
    """
    INSERT INTO profiles.responses (tenant_id, response_id, action_type, model, occurred_at)
    SELECT $1::text, response_id, action_type, model, occurred_at - interval '90 seconds'
    FROM bench_events
    ORDER BY occurred_at
    """,
    f"""
    INSERT INTO profiles.feedback (tenant_id, event_id, user_id, response_id, kind, verdict,
        thumb, rating, comment, reasons, correction, action_type, occurred_at)
    SELECT $1::text, event_id, user_hash, response_id, kind, {_VERDICT}, thumb, rating, comment,
           reasons, correction, NULL, occurred_at
    FROM bench_events
    ORDER BY occurred_at
    """,
    """
    INSERT INTO profiles.users (tenant_id, user_id, first_seen_at, last_seen_at)
    SELECT $1::text, user_hash, min(occurred_at), max(occurred_at) FROM bench_events GROUP BY 2
    ON CONFLICT (tenant_id, user_id) DO UPDATE SET
        first_seen_at = LEAST(profiles.users.first_seen_at, EXCLUDED.first_seen_at),
        last_seen_at = GREATEST(profiles.users.last_seen_at, EXCLUDED.last_seen_at)
    """,
    *(
        _rollup_upsert(table, truncate_to)
        for table, truncate_to in zip(ROLLUPS, ("minute", "hour", "day"), strict=True)
    ),
)
_PROCESSED = (
    "INSERT INTO profiles.processed_events (tenant_id, event_id) SELECT $1::text, event_id "
    "FROM bench_events",
    "INSERT INTO metrics.processed_events (tenant_id, event_id) SELECT $1::text, event_id "
    "FROM bench_events",
)

# The approval query before the day and hour rollups were read: the side-by-side baseline.
_MINUTE_SCAN = """
SELECT action_type AS grp, sum(thumbs_up)::bigint AS up, sum(thumbs_down)::bigint AS down
FROM metrics.feedback_minute
WHERE tenant_id = $1 AND bucket >= $2 AND bucket < $3
GROUP BY action_type
HAVING sum(thumbs_up) + sum(thumbs_down) > 0
ORDER BY action_type
"""
# The alert evaluator's window totals as they were (every tenant, minute rollup only).
_ALERT_MINUTE_SCAN = f"""
SELECT tenant_id, action_type, model, {", ".join(f"sum({c})::bigint" for c in COUNTERS)}
FROM metrics.feedback_minute
WHERE bucket >= $1 AND bucket < $2
GROUP BY tenant_id, action_type, model
"""


def raw_user_id(number: int) -> str:
    return f"user-{number}"


async def _prepare(
    connection: asyncpg.Connection, *, tenant_id: str, hmac_secret: str, users: int
) -> bool:
    """Session setup for the load; whether the erasure-tombstone triggers are skipped."""
    for table in ("profiles.feedback", "metrics.feedback_minute"):
        if await connection.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table} WHERE tenant_id = $1)",
                                     tenant_id):
            raise ValueError(f"{table} already holds rows of tenant {tenant_id!r}")
    await connection.execute(_DRAW_FUNCTION)
    await connection.execute(
        "CREATE TEMP TABLE bench_users (user_number int PRIMARY KEY, user_hash text NOT NULL)"
    )
    secret = hmac_secret.encode()
    await connection.copy_records_to_table("bench_users", records=[
        (number, hash_user_id(secret, tenant_id, raw_user_id(number))) for number in range(users)
    ])
    await connection.execute("ANALYZE bench_users")
    # Group a chunk's rollup rows in memory rather than in batches spilled to disk.
    await connection.execute("SET work_mem = '256MB'")
    # No user is erased here: the per-row tombstone trigger would only make the load slower.
    try:
        await connection.execute("SET session_replication_role = replica")
    except asyncpg.InsufficientPrivilegeError:
        return False
    return True


async def _load(
    connection: asyncpg.Connection, *, tenant_id: str, first: int, last: int,
    window_start: datetime, processed_events: bool,
) -> None:
    """Events numbered [first, last), spread over the window, in chunks of consecutive
    events (slices of time), each chunk in one transaction."""
    for low in range(first, last, CHUNK_EVENTS):
        high = min(last, low + CHUNK_EVENTS)
        async with connection.transaction():
            await connection.execute(_EVENTS, low, high, tenant_id, window_start, SPAN,
                                     first, last - first)
            await connection.execute("ANALYZE bench_events")
            for statement in _LOAD_CHUNK + (_PROCESSED if processed_events else ()):
                await connection.execute(statement, tenant_id)


async def _row_counts(connection: asyncpg.Connection, tables: tuple[str, ...]) -> dict[str, int]:
    return {table: await connection.fetchval(f"SELECT count(*) FROM {table}") for table in tables}


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)

    def at(share: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, int(share * len(ordered)))], 2)

    return {"p50_ms": at(0.5), "p95_ms": at(0.95), "max_ms": at(1.0), "requests": len(ordered)}


async def _timed(call: Callable[[], Awaitable[object]], count: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        await call()
    seconds = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        seconds.append(time.perf_counter() - started)
    return seconds


class _Explained:
    """Stands in for a connection: runs each query the repository sends under EXPLAIN."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self.connection = connection
        self.plans: list[str] = []

    async def fetch(self, query: str, *args: object) -> list[object]:
        rows = await self.connection.fetch("EXPLAIN (ANALYZE, BUFFERS) " + query, *args)
        self.plans.append("\n".join(row[0] for row in rows))
        return []


async def _plans(connection: asyncpg.Connection, tenant_id: str) -> dict[str, str]:
    end = datetime.now(UTC)
    explained = _Explained(connection)
    await repository.approval_by_group(
        explained, tenant_id=tenant_id, group_by="action_type",  # type: ignore[arg-type]
        start=end - SPAN, end=end,
    )
    old = await connection.fetch("EXPLAIN (ANALYZE, BUFFERS) " + _MINUTE_SCAN,
                                 tenant_id, end - SPAN, end)
    return {"approval_rollups": explained.plans[0],
            "approval_minute_scan": "\n".join(row[0] for row in old)}


async def _time_sql(connection: asyncpg.Connection, tenant_id: str, count: int) -> dict[str, Any]:
    """The approval SQL, rollups against the minute scan, alternating (same 30 days up to now),
    the SQL of the hourly trend over 7 days, and the alert evaluator's 24-hour baseline input
    (every tenant) now and as it was (minute rollup only)."""
    rollups: list[float] = []
    minutes: list[float] = []

    async def by_rollups(end: datetime | None = None) -> list[asyncpg.Record]:
        end = end or datetime.now(UTC)
        return await repository.approval_by_group(
            connection, tenant_id=tenant_id, group_by="action_type", start=end - SPAN, end=end
        )

    async def by_minutes(end: datetime | None = None) -> list[asyncpg.Record]:
        end = end or datetime.now(UTC)
        return await connection.fetch(_MINUTE_SCAN, tenant_id, end - SPAN, end)

    async def trend_hours() -> object:
        end = datetime.now(UTC)
        return await repository.rollup_series(
            connection, family="feedback", tenant_id=tenant_id, interval="hour",
            group_by="action_type", start=end - timedelta(days=7), end=end,
        )

    async def alert_baseline() -> object:
        end = datetime.now(UTC) - timedelta(hours=1)
        return await repository.feedback_window_totals(
            connection, start=end - timedelta(hours=24), end=end
        )

    async def alert_baseline_by_minutes() -> object:
        end = datetime.now(UTC) - timedelta(hours=1)
        return await connection.fetch(_ALERT_MINUTE_SCAN, end - timedelta(hours=24), end)

    end = datetime.now(UTC)
    if list(map(tuple, await by_rollups(end))) != list(map(tuple, await by_minutes(end))):
        raise AssertionError("approval from the rollups differs from the minute scan")
    for _ in range(count):
        rollups += await _timed(by_rollups, 1, warmup=0)
        minutes += await _timed(by_minutes, 1, warmup=0)
    trends = await _timed(trend_hours, count, warmup=1)
    alerts = await _timed(alert_baseline, count, warmup=1)
    alerts_by_minutes = await _timed(alert_baseline_by_minutes, count, warmup=1)
    new, old = _percentiles(rollups), _percentiles(minutes)
    return {
        "approval_sql_rollups": new,
        "approval_sql_minute_scan": old,
        "minute_scan_over_rollups_p50": round(old["p50_ms"] / new["p50_ms"], 1),
        "trends_hour_7d_sql": _percentiles(trends),
        "alert_baseline_24h_sql": _percentiles(alerts),
        "alert_baseline_24h_sql_minute_scan": _percentiles(alerts_by_minutes),
    }


async def _time_http(
    client: httpx.AsyncClient, connection: asyncpg.Connection, *, tenant_id: str, count: int
) -> dict[str, Any]:
    """Each endpoint `count` times in sequence (one request in flight), after 3 warm-ups."""

    async def get(path: str, params: dict[str, str] | None = None) -> None:
        answer = await client.get(path, params=params)
        if answer.status_code != 200:
            raise RuntimeError(f"GET {path} {params}: {answer.status_code} {answer.text[:500]}")

    def since(delta: timedelta) -> dict[str, str]:
        end = datetime.now(UTC)
        return {"from": (end - delta).isoformat(), "to": end.isoformat()}

    # Users who gave feedback, in a fixed pseudo-random order, and the one who gave the most.
    sampled = await connection.fetch(
        """
        SELECT b.user_number, count(*) AS feedback
        FROM bench_users b JOIN profiles.feedback f ON f.tenant_id = $1 AND f.user_id = b.user_hash
        WHERE b.user_number IN (SELECT user_number FROM bench_users
                                ORDER BY md5(user_number::text) LIMIT $2)
           OR b.user_number = 0
        GROUP BY b.user_number
        """,
        tenant_id, count,
    )
    counts = {row["user_number"]: row["feedback"] for row in sampled}
    heavy = max(counts, key=counts.__getitem__)
    typical = [number for number in counts if number != heavy]
    rotation = iter(typical * (count // max(1, len(typical)) + 1))
    endpoints: dict[str, Callable[[], Awaitable[None]]] = {
        "approval_by_action_type_30d": lambda: get(
            "/v1/analytics/approval", {"group_by": "action_type"}),
        "trends_approval_hour_7d_by_action_type": lambda: get("/v1/analytics/trends", {
            "metric": "approval", "interval": "hour", "group_by": "action_type",
            **since(timedelta(days=7))}),
        "trends_approval_day_30d_by_action_type": lambda: get("/v1/analytics/trends", {
            "metric": "approval", "interval": "day", "group_by": "action_type"}),
        "user_summary_sampled_users": lambda: get(
            f"/v1/users/{raw_user_id(next(rotation))}/feedback-summary"),
        "user_summary_heaviest_user": lambda: get(
            f"/v1/users/{raw_user_id(heavy)}/feedback-summary"),
    }
    timings: dict[str, Any] = {
        name: _percentiles(await _timed(call, count)) for name, call in endpoints.items()
    }
    timings["user_summary_sampled_users"]["feedback_per_user_median"] = statistics.median(
        counts[number] for number in typical)
    timings["user_summary_heaviest_user"]["feedback_of_user"] = counts[heavy]
    return timings


async def measure_queries(
    database_url: str,
    query_url: str,
    api_key: str,
    tenant_id: str,
    sizes: tuple[int, ...] = (1_000_000, 10_000_000),
    requests_per_endpoint: int = 200,
    *,
    user_id_hmac_secret: str,
    users: int = 100_000,
    processed_events: bool = False,
) -> dict[str, Any]:
    """p50/p95 (ms) of the analytics endpoints at each number of events in `sizes`.

    What is loaded: rows are bulk-loaded with server-side SQL (`INSERT ... SELECT` over
    `generate_series`, 500,000 events per transaction), NOT run through ingest, Kafka or the
    consumers: the rows the profiles and metrics consumers would have left after N
    `feedback.submitted` events of tenant `tenant_id`, each about its own logged response, over
    the 30 days up to the start of the call. Sizes load cumulatively: going from 1M to 10M adds
    9M events to the same tables, spread evenly over the same 30 days (each transaction loads a
    slice of time, in time order, as consumers would write them). Into:
    - `metrics.feedback_minute`, `_hour` and `_day`: each event counted in its minute and its UTC
      hour and day, under 7 dimensions: 20 action types (linearly falling frequency, 10% to
      0.25%), 4 models, 3 prompt versions, 4 languages, a feature per action type, and an
      experiment with two variants on 30% of responses (up to 2,880 combinations). The three
      rollups always agree, as the consumer keeps them.
    - `profiles.responses` (one per event), `profiles.feedback` (60% thumbs, approval 60-90% by
      action type; 25% ratings skewed high; 10% comments with a reason; 5% corrections), and
      `profiles.users`: `users` users, user k giving a share of events falling like 1/sqrt(k)
      (user 0 about 0.3% of all events), user ids hashed with `user_id_hmac_secret` (the query
      service's `FEEDBACKLOOP_USER_ID_HMAC_SECRET`) so that the summary endpoint finds them.
    - `*.processed_events` only with `processed_events=True`. Not loaded: `metrics.feedback_facts`
      and `metrics.response_dims` (no endpoint measured reads them), recommendations.
    The erasure-tombstone trigger is skipped during the load when the role may set
    `session_replication_role` (a superuser); no user is erased, so the rows are the same.
    After each load: `VACUUM ANALYZE` of the tables read, then the timings.

    What is timed, one request at a time: over HTTP against `query_url` (key `api_key` of tenant
    `tenant_id`), the approval by action type over the default 30 days, the approval trend by
    action type per hour over 7 days and per day over 30 days, and the feedback summary (its
    default 50 items of history) of up to `requests_per_endpoint` users drawn uniformly among
    the users, in turn, and of the heaviest user. Directly over asyncpg, `BASELINE_REQUESTS` times
    each: the approval SQL now (day + hour + minute rollups) against the old minute-rollup scan,
    alternating; the hourly trend's SQL; the alert evaluator's 24-hour baseline input, now and
    as it was. Medians and p95 of one run; the ratio is of the medians. The database is
    whatever `database_url` names; on the embedded server of `python -m tests.bench.queries`
    shared buffers are 256 MB, and whether reads hit a disk is up to the OS page cache.

    The database must hold no feedback of `tenant_id` yet (ValueError otherwise).
    """
    window_start = datetime.now(UTC) - SPAN
    report: dict[str, Any] = {
        "loaded": "bulk SQL into the read models (cumulative across sizes), not via consumers",
        "window": {"start": window_start.isoformat(), "days": SPAN.days},
        "users": users,
        "sizes": {},
    }
    connection = await asyncpg.connect(database_url)
    try:
        report["erasure_trigger_skipped_during_load"] = await _prepare(
            connection, tenant_id=tenant_id, hmac_secret=user_id_hmac_secret, users=users
        )
        loaded = 0
        async with httpx.AsyncClient(
            base_url=query_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=120
        ) as client:
            for size in sorted(sizes):
                started = time.perf_counter()
                await _load(connection, tenant_id=tenant_id, first=loaded, last=size,
                            window_start=window_start, processed_events=processed_events)
                load_seconds = time.perf_counter() - started
                started = time.perf_counter()
                for table in READ_TABLES:
                    await connection.execute(f"VACUUM ANALYZE {table}")
                vacuum_seconds = time.perf_counter() - started
                report["sizes"][str(size)] = {
                    "events_loaded": size - loaded,
                    "load_seconds": round(load_seconds, 1),
                    "vacuum_analyze_seconds": round(vacuum_seconds, 1),
                    "rows": await _row_counts(connection, READ_TABLES),
                    "load_average_before_timing": os.getloadavg(),
                    "http": await _time_http(client, connection, tenant_id=tenant_id,
                                             count=requests_per_endpoint),
                    "sql": await _time_sql(connection, tenant_id,
                                           min(BASELINE_REQUESTS, requests_per_endpoint)),
                    "plans": await _plans(connection, tenant_id),
                    "load_average_after_timing": os.getloadavg(),
                }
                loaded = size
    finally:
        await connection.close()
    return report


def table(report: dict[str, Any]) -> str:
    """The report as a fixed-width table: one column pair (p50 / p95 ms) per size."""
    sizes = list(report["sizes"])
    lines = ["ms, p50 / p95".ljust(44) + "".join(f"{int(s):>20,}" for s in sizes)]

    def row(label: str, cells: list[str]) -> None:
        lines.append(label.ljust(44) + "".join(f"{cell:>20}" for cell in cells))

    first = report["sizes"][sizes[0]]
    for name in first["http"]:
        row(f"HTTP {name}", [
            f"{report['sizes'][s]['http'][name]['p50_ms']:.1f} / "
            f"{report['sizes'][s]['http'][name]['p95_ms']:.1f}" for s in sizes])
    for name in ("approval_sql_rollups", "approval_sql_minute_scan", "trends_hour_7d_sql",
                 "alert_baseline_24h_sql", "alert_baseline_24h_sql_minute_scan"):
        row(f"SQL {name}", [
            f"{report['sizes'][s]['sql'][name]['p50_ms']:.1f} / "
            f"{report['sizes'][s]['sql'][name]['p95_ms']:.1f}" for s in sizes])
    row("minute scan / rollups (p50 ratio)",
        [f"{report['sizes'][s]['sql']['minute_scan_over_rollups_p50']:.1f}x" for s in sizes])
    row("load average (1 min) before / after timing", [
        f"{report['sizes'][s]['load_average_before_timing'][0]:.1f} / "
        f"{report['sizes'][s]['load_average_after_timing'][0]:.1f}" for s in sizes])
    row("load s (+ vacuum analyze s)", [
        f"{report['sizes'][s]['load_seconds']:.0f} (+{report['sizes'][s]['vacuum_analyze_seconds']:.0f})"
        for s in sizes])
    for name in first["rows"]:
        row(f"rows {name}", [f"{report['sizes'][s]['rows'][name]:,}" for s in sizes])
    row("feedback of the heaviest user", [
        f"{report['sizes'][s]['http']['user_summary_heaviest_user']['feedback_of_user']:,}"
        for s in sizes])
    row("feedback per sampled user (median)", [
        f"{report['sizes'][s]['http']['user_summary_sampled_users']['feedback_per_user_median']:,}"
        for s in sizes])
    return "\n".join(lines)


async def _run(arguments: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Embedded PostgreSQL, a fresh migrated database, a read key, the query service."""
    from feedbackloop.embedded import EmbeddedPostgres, free_port
    from feedbackloop.http.auth import Scope
    from services.cli.admin import create_key
    from tests.infra import ServiceProcesses, create_database

    postgres = EmbeddedPostgres(workdir / "pg", free_port(), fast=True)
    postgres.start()
    services: ServiceProcesses | None = None
    try:
        database_url = await create_database(postgres.url)
        tenant_id, secret = "bench", "bench-secret-" + "x" * 32
        _, key = await create_key(database_url, tenant_id=tenant_id, name="bench",
                                  scopes=[Scope.READ.value])
        services = ServiceProcesses(dict(os.environ) | {
            # The query service reads no topic; the setting is only required to be present.
            "FEEDBACKLOOP_KAFKA_BOOTSTRAP_SERVERS": "unused:9092",
            "FEEDBACKLOOP_DATABASE_URL": database_url,
            "FEEDBACKLOOP_USER_ID_HMAC_SECRET": secret,
            "FEEDBACKLOOP_RATE_LIMIT_REQUESTS_PER_SECOND": "0",
        }, workdir)
        services.start(("query",))
        return await measure_queries(
            database_url, services.url("query"), key, tenant_id,
            sizes=tuple(arguments.sizes), requests_per_endpoint=arguments.requests,
            user_id_hmac_secret=secret, users=arguments.users,
            processed_events=arguments.processed_events,
        )
    finally:
        if services is not None:
            services.stop()
        postgres.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--processed-events", action="store_true")
    parser.add_argument("--out", type=Path, help="write the report as JSON here")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fbl-bench-queries-") as workdir:
        report = asyncio.run(_run(arguments, Path(workdir)))
    if arguments.out:
        arguments.out.write_text(json.dumps(report, indent=2))
    print(table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
