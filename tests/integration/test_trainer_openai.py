"""Failure explanations and failure patterns against real PostgreSQL and a real
OpenAI-compatible HTTP server that the test starts on localhost (the `openai` client is not
patched: it speaks HTTP to this server)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry

from feedbackloop.contract import Topic, decode_event
from feedbackloop.embedded import free_port
from feedbackloop.http.auth import ApiKeyVerifier
from feedbackloop.http.problems import install_problem_handlers
from feedbackloop.observability import JobMetrics
from feedbackloop.pipeline.jobs import JobRunner
from feedbackloop.postgres import create_pool
from feedbackloop.settings import Settings
from services.cli.admin import create_key
from services.query.deps import QueryState
from services.query.training import router
from services.trainer.examples.build import stable_split
from services.trainer.handlers import write_effects
from services.trainer.jobs.explanations import RateLimiter, build_client, explain_pending_failures
from services.trainer.jobs.retraining import (
    RetrainingConfig,
    RetrainingFailed,
    poll_fine_tune_jobs,
    run_retraining,
    run_retraining_if_due,
)
from services.trainer.main import training_jobs
from services.trainer.processing import process_message
from tests.infra import (
    create_database,
    create_topics,
    eventually,
    idempotence_supported,
    unique_prefix,
)

pytestmark = pytest.mark.integration
USER, OPTED_OUT = "a" * 64, "c" * 64


class OpenAICompatibleServer:
    """Chat completions as an OpenAI-compatible provider serves them; a message containing
    FAIL gets a 500. Every request body is kept for the test to inspect."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.port = free_port()
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> JSONResponse:
            body = await request.json()
            self.requests.append(body | {"authorization": request.headers.get("authorization")})
            if "FAIL" in body["messages"][-1]["content"]:
                return JSONResponse({"error": {"message": "boom", "type": "server_error"}}, 500)
            return JSONResponse({
                "id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion",
                "created": int(time.time()), "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop", "message": {
                    "role": "assistant",
                    "content": "The reply confirmed the wrong list; the user asked for groceries.",
                }}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 12, "total_tokens": 22},
            })

        @app.post("/v1/files")
        async def upload(request: Request) -> JSONResponse:
            body = await request.body()
            self.uploads.append(body)
            return JSONResponse({
                "id": f"file-{len(self.uploads)}", "object": "file", "bytes": len(body),
                "created_at": int(time.time()), "filename": "train.jsonl",
                "purpose": "fine-tune", "status": "processed",
            })

        @app.post("/v1/fine_tuning/jobs")
        async def create_job(request: Request) -> JSONResponse:
            body = await request.json()
            self.jobs.append(body)
            return JSONResponse(self._job(f"ftjob-{len(self.jobs)}", body, "validating_files"))

        @app.get("/v1/fine_tuning/jobs/{job_id}")
        async def retrieve_job(job_id: str) -> JSONResponse:
            self.polls += 1
            status = "running" if self.polls == 1 else "succeeded"
            return JSONResponse(self._job(job_id, self.jobs[0], status))

        self.uploads: list[bytes] = []
        self.jobs: list[dict[str, Any]] = []
        self.polls = 0
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @staticmethod
    def _job(job_id: str, body: dict[str, Any], status: str) -> dict[str, Any]:
        return {
            "id": job_id, "object": "fine_tuning.job", "status": status,
            "model": body["model"], "training_file": body["training_file"],
            "created_at": 1_763_000_000, "finished_at": None, "error": None,
            "fine_tuned_model": "ft:gpt-4o-mini:acme::x1" if status == "succeeded" else None,
            "hyperparameters": {"n_epochs": "auto"}, "organization_id": "org-1",
            "result_files": [], "seed": 1, "trained_tokens": None, "validation_file": None,
            "method": body.get("method"),
        }

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> OpenAICompatibleServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.server.started
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(5)


@pytest.fixture(scope="module")
def provider() -> Iterator[OpenAICompatibleServer]:
    with OpenAICompatibleServer() as server:
        yield server


def _doc(kind: str, user: str, payload: dict[str, Any], minute: int = 0) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()), "type": kind, "tenant_id": "acme",
        "occurred_at": f"2026-11-20T10:{minute:02d}:00Z", "received_at": "2026-11-20T10:59:00Z",
        "user_id": user, "payload": payload,
    }


def _response(response_id: str, prompt: str, output: str) -> dict[str, Any]:
    return _doc("response.logged", USER, {
        "response_id": response_id, "model": "m", "action_type": "todo",
        "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}],
        "output": output,
    })


async def _apply(pool: Any, docs: list[dict[str, Any]]) -> None:
    effects = [process_message(decode_event(orjson.dumps(doc))) for doc in docs]
    async with pool.acquire() as connection, connection.transaction():
        await write_effects(connection, [effect for effect in effects if effect is not None])


@pytest.fixture
async def database(postgres_url: str) -> str:
    return await create_database(postgres_url)


@pytest.fixture
async def pool(database: str) -> AsyncIterator[Any]:
    pool = await create_pool(database, min_size=1, max_size=3)
    await _apply(pool, [
        _response("r1", "Add milk to my groceries list, mail jo@ex.com", "Added milk to work."),
        _doc("feedback.submitted", USER, {"response_id": "r1", "thumb": "down"}, 1),
        _doc("feedback.submitted", USER, {"response_id": "r2", "replay": {
            "ai_reply": "FAIL: refund sent", "useful": False, "message": "Where is my refund?"}}, 2),
        _response("r3", "Add eggs", "Added eggs."),
        _doc("feedback.submitted", USER, {"response_id": "r3", "thumb": "up"}, 3),
        _doc("user.consent_changed", OPTED_OUT, {"training_allowed": False}),
        _response("r4", "Add bread", "Added bread to work."),
        _doc("feedback.submitted", OPTED_OUT, {"response_id": "r4", "thumb": "down"}, 4),
        _doc("feedback.submitted", USER, {"response_id": "r5", "thumb": "down"}, 5),  # no prompt
    ])
    yield pool
    await pool.close()


async def _explanations(pool: Any) -> dict[str, Any]:
    rows = await pool.fetch(
        "SELECT response_id, status, explanation, attempts, error, model "
        "FROM trainer.failure_explanations"
    )
    return {row["response_id"]: dict(row) for row in rows}


async def test_down_votes_are_explained_through_an_openai_compatible_server(
    pool: Any, provider: OpenAICompatibleServer
) -> None:
    client = build_client(base_url=provider.base_url, api_key="sk-test", timeout_seconds=5)
    limiter = RateLimiter(per_minute=6_000)
    sent_before = len(provider.requests)
    done = await explain_pending_failures(
        pool, client, model="explainer-1", limiter=limiter, max_attempts=2
    )
    assert done == 2  # r1 and r2; not r3 (up), r4 (opted out), r5 (no prompt yet)
    requests = provider.requests[sent_before:]
    assert [request["model"] for request in requests] == ["explainer-1"] * 2
    assert requests[0]["authorization"] == "Bearer sk-test"
    question = requests[0]["messages"][-1]["content"]
    assert "marked the reply as not useful" in question and "(action: todo)" in question
    assert "user: Add milk to my groceries list, mail [EMAIL]" in question
    assert "jo@ex.com" not in question and "Be brief." not in question
    stored = await _explanations(pool)
    assert stored["r1"]["status"] == "explained" and stored["r1"]["model"] == "explainer-1"
    assert stored["r1"]["explanation"].startswith("The reply confirmed the wrong list")
    assert (stored["r2"]["status"], stored["r2"]["attempts"]) == ("failed", 1)
    assert "InternalServerError" in stored["r2"]["error"]

    # The failed one is tried again, up to max_attempts; the explained one never again.
    assert await explain_pending_failures(pool, client, model="explainer-1", limiter=limiter,
                                          max_attempts=2) == 1
    assert (await _explanations(pool))["r2"]["attempts"] == 2
    assert await explain_pending_failures(pool, client, model="explainer-1", limiter=limiter,
                                          max_attempts=2) == 0
    assert len(provider.requests) == sent_before + 3

    # Erasure removes the user's explanations with the feedback.
    await _apply(pool, [_doc("user.erasure_requested", USER, {})])
    assert await _explanations(pool) == {}


async def test_an_unreachable_provider_is_recorded_not_raised(pool: Any) -> None:
    client = build_client(base_url=f"http://127.0.0.1:{free_port()}/v1", api_key="k",
                          timeout_seconds=2)
    done = await explain_pending_failures(
        pool, client, model="m", limiter=RateLimiter(6_000), batch_size=1
    )
    assert done == 1
    stored = await _explanations(pool)
    assert stored["r1"]["status"] == "failed" and "APIConnectionError" in stored["r1"]["error"]


async def test_rate_limiter_spaces_calls() -> None:
    limiter = RateLimiter(per_minute=600)  # one every 0.1 s
    started = time.monotonic()
    for _ in range(4):
        await limiter.acquire()
    assert 0.28 <= time.monotonic() - started < 1.0


async def test_failure_patterns_group_near_duplicates_with_explanations(
    pool: Any, database: str, provider: OpenAICompatibleServer
) -> None:
    docs = []
    for n, (prompt, minute) in enumerate([
        ("Add milk to my groceries list", 10), ("add milk to my groceries list!", 11),
        ("Add milk to my groceries list.", 12), ("Book a table for two at 8pm", 13),
        ("Book a table for two at 8pm", 14),
    ]):
        output = "Added milk to your work list." if "milk" in prompt else "Booked for 9pm."
        docs += [_response(f"p{n}", prompt, output),
                 _doc("feedback.submitted", USER, {"response_id": f"p{n}", "thumb": "down"}, minute)]
    await _apply(pool, docs)
    client = build_client(base_url=provider.base_url, api_key="k", timeout_seconds=5)
    await explain_pending_failures(pool, client, model="m", limiter=RateLimiter(6_000))

    app = FastAPI()
    install_problem_handlers(app)
    app.include_router(router)
    app.state.query = QueryState(pool=pool, verifier=ApiKeyVerifier(pool, cache_seconds=0),
                                 hmac_secret=b"x" * 32)
    _, key = await create_key(database, tenant_id="acme", name="ml", scopes=["read"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://q",
                                 headers={"Authorization": f"Bearer {key}"}) as http:
        response = await http.get("/v1/training/failure-patterns", params={
            "from": "2026-11-20T00:00:00Z", "to": "2026-11-21T00:00:00Z"})
        two = await http.get("/v1/training/failure-patterns", params={
            "from": "2026-11-20T00:00:00Z", "to": "2026-11-21T00:00:00Z", "min_count": 2})
    assert response.status_code == 200
    report = response.json()
    # r1, r2, r5 (no prompt: not grouped), p0-p4; not r4, the down-vote of a user who opted out.
    assert report["down_votes_read"] == 8
    [pattern] = report["patterns"]
    assert (pattern["action_type"], pattern["count"]) == ("todo", 3)
    assert sorted(pattern["response_ids"]) == ["p0", "p1", "p2"]
    assert pattern["explanations"] == [
        "The reply confirmed the wrong list; the user asked for groceries."
    ]
    assert [p["count"] for p in two.json()["patterns"]] == [3, 2]


async def _patterns(pool: Any, database: str) -> list[str]:
    app = FastAPI()
    install_problem_handlers(app)
    app.include_router(router)
    app.state.query = QueryState(pool=pool, verifier=ApiKeyVerifier(pool, cache_seconds=0),
                                 hmac_secret=b"x" * 32)
    _, key = await create_key(database, tenant_id="acme", name="ml", scopes=["read"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://q",
                                 headers={"Authorization": f"Bearer {key}"}) as http:
        response = await http.get("/v1/training/failure-patterns", params={
            "from": "2026-11-20T00:00:00Z", "to": "2026-11-21T00:00:00Z", "min_count": 1})
    assert response.status_code == 200, response.text
    return sorted(i for pattern in response.json()["patterns"] for i in pattern["response_ids"])


async def test_failure_patterns_forget_whoever_opts_out_before_or_after(
    database: str, provider: OpenAICompatibleServer
) -> None:
    voter, owner = "d" * 64, "e" * 64
    pool = await create_pool(database, min_size=1, max_size=2)
    try:
        await _apply(pool, [
            _response("kept", "Add milk", "Added milk to work."),
            _doc("feedback.submitted", USER, {"response_id": "kept", "thumb": "down"}, 1),
            # A voter who opts out after voting.
            _response("voted", "Add jam", "Added jam to work."),
            _doc("feedback.submitted", voter, {"response_id": "voted", "thumb": "down"}, 2),
            # A conversation whose user opts out after someone else down-voted it.
            _doc("response.logged", owner, {
                "response_id": "owned", "model": "m", "action_type": "todo", "output": "No.",
                "prompt": [{"role": "user", "content": "Add tea for my mother Ann"}]}),
            _doc("feedback.submitted", USER, {"response_id": "owned", "thumb": "down"}, 3),
        ])
        client = build_client(base_url=provider.base_url, api_key="k", timeout_seconds=5)
        await explain_pending_failures(pool, client, model="m", limiter=RateLimiter(6_000))
        assert await _patterns(pool, database) == ["kept", "owned", "voted"]
        await _apply(pool, [
            _doc("user.consent_changed", voter, {"training_allowed": False}, 30),
            _doc("user.consent_changed", owner, {"training_allowed": False}, 31),
        ])
        assert await _patterns(pool, database) == ["kept"]
        # Nothing of theirs is sent for explanation either.
        await _apply(pool, [
            _doc("feedback.submitted", USER, {"response_id": "owned", "thumb": "down"}, 40)])
        before = len(provider.requests)
        await explain_pending_failures(pool, client, model="m", limiter=RateLimiter(6_000))
        assert len(provider.requests) == before
    finally:
        await pool.close()


AGENT_REPLIES = [
    "Your refund of 42 euros was approved on Monday; it reaches your card within five days.",
    "The bank rejected the first transfer, so I issued the refund again to your PayPal.",
    "I can see the return is still in transit; the refund starts once the warehouse scans it.",
    "Refunds for gift cards go back as store credit, which I have now added to your account.",
    "The refund was split: 30 euros went back yesterday and the shipping fee follows today.",
    "Your order was cancelled before shipping, so no charge was taken in the first place.",
    "I escalated this to our payments team; they will email you a confirmation by Friday.",
    "It looks like the refund went to an expired card, so I sent a cheque to your address.",
    "We refunded the voucher part immediately and the rest will appear as a separate line.",
    "The courier lost the parcel; I refunded it in full and added a ten euro apology code.",
    "Your bank needs the reference RF-7781 to trace the refund; it was sent on the 12th.",
    "Since you paid with Klarna, the refund shows in the Klarna app rather than on your card.",
]


def _refund_docs(tenant: str, count: int) -> list[dict[str, Any]]:
    """`count` down-voted copies of one refund answer (one worst prompt), each with an agent's
    better reply, in train-split conversations."""
    ids = [f"rf{n}" for n in range(100) if stable_split(tenant, f"rf{n}", 0.1) == "train"]
    docs = []
    for n, response_id in enumerate(ids[:count]):
        response = _response(response_id, "Where is my refund?", "Your refund is on its way.")
        feedback = _doc("feedback.submitted", USER, {"response_id": response_id, "replay": {
            "ai_reply": "Your refund is on its way.", "useful": False,
            "agent_reply": AGENT_REPLIES[n], "message": "Where is my refund?"}}, 20 + n)
        docs += [response | {"tenant_id": tenant}, feedback | {"tenant_id": tenant}]
    return docs


async def test_retraining_stores_for_review_or_submits_and_polls(
    pool: Any, provider: OpenAICompatibleServer, tmp_path: Path
) -> None:
    await _apply(pool, _refund_docs("acme", 12) + _refund_docs("globex", 6))
    now = datetime(2026, 11, 21, tzinfo=UTC)
    review = RetrainingConfig(export_dir=tmp_path / "review")
    jobs = await run_retraining(pool, review, now=now, client=None)
    assert [(j.tenant_id, j.status, j.prompt_count, j.example_count) for j in jobs] == [
        ("acme", "stored_for_review", 1, 12), ("globex", "stored_for_review", 1, 6),
    ]
    exported = await asyncio.to_thread(Path(jobs[0].file_path or "").read_bytes)
    lines = [orjson.loads(line) for line in exported.splitlines()]
    assert sorted(line["messages"][-1]["content"] for line in lines) == sorted(AGENT_REPLIES)
    assert lines[0]["messages"][:2] == [{"role": "system", "content": "Be brief."},
                                        {"role": "user", "content": "Where is my refund?"}]
    assert provider.uploads == [] and provider.jobs == []

    tune = RetrainingConfig(export_dir=tmp_path / "tune", mode="fine_tune", model="gpt-4o-mini",
                            base_url=provider.base_url)
    client = build_client(base_url=provider.base_url, api_key="sk-ft", timeout_seconds=5)
    jobs = await run_retraining(pool, tune, now=now, client=client)
    acme, globex = jobs
    assert (acme.status, acme.provider_file_id, acme.provider_job_id) == (
        "validating_files", "file-1", "ftjob-1")
    assert (globex.status, globex.provider_job_id) == ("too_few_examples", None)
    assert "at least 10 examples" in (globex.error or "")
    assert len(provider.uploads) == 1 and provider.uploads[0].count(b'"messages"') == 12
    assert provider.jobs[0]["model"] == "gpt-4o-mini"
    assert provider.jobs[0]["method"] == {"type": "supervised"}

    assert await poll_fine_tune_jobs(pool, client) == 1
    assert await poll_fine_tune_jobs(pool, client) == 1
    assert await poll_fine_tune_jobs(pool, client) == 0  # finished: no longer polled
    rows = await pool.fetch(
        "SELECT tenant_id, mode, status, fine_tuned_model FROM trainer.retraining_jobs "
        "ORDER BY created_at, tenant_id"
    )
    assert [tuple(row) for row in rows] == [
        ("acme", "review", "stored_for_review", None),
        ("globex", "review", "stored_for_review", None),
        ("acme", "fine_tune", "succeeded", "ft:gpt-4o-mini:acme::x1"),
        ("globex", "fine_tune", "too_few_examples", None),
    ]


async def test_a_tenant_that_fails_does_not_make_the_others_run_again(
    pool: Any, tmp_path: Path
) -> None:
    """globex's export directory cannot be made (a file stands in its place): acme's job is
    recorded, the run is recorded, the failure is reported, and the next poll submits nothing
    again."""
    await _apply(pool, _refund_docs("acme", 6) + _refund_docs("globex", 6))
    config = RetrainingConfig(export_dir=tmp_path, min_not_useful=5)
    (tmp_path / "globex").write_text("not a directory")
    week = timedelta(days=7)
    start = datetime(2026, 11, 21, tzinfo=UTC)
    with pytest.raises(RetrainingFailed, match=r"globex: (FileExistsError|NotADirectoryError)"):
        await run_retraining_if_due(pool, config, interval=week, client=None, now=start)
    assert [row["tenant_id"] for row in await pool.fetch(
        "SELECT tenant_id FROM trainer.retraining_jobs")] == ["acme"]
    assert await run_retraining_if_due(
        pool, config, interval=week, client=None, now=start + timedelta(minutes=1)) is None
    assert await pool.fetchval("SELECT count(*) FROM trainer.retraining_jobs") == 1


async def test_retraining_runs_once_per_interval(pool: Any, tmp_path: Path) -> None:
    await _apply(pool, _refund_docs("acme", 6))
    config = RetrainingConfig(export_dir=tmp_path, min_not_useful=5)
    week = timedelta(days=7)
    start = datetime(2026, 11, 21, tzinfo=UTC)
    first = await run_retraining_if_due(pool, config, interval=week, client=None, now=start)
    assert first is not None and [job.prompt_count for job in first] == [1]
    assert await run_retraining_if_due(
        pool, config, interval=week, client=None, now=start + timedelta(days=6)
    ) is None
    # A week on, the down-votes are out of the lookback: the run happens and finds nothing.
    assert await run_retraining_if_due(
        pool, config, interval=week, client=None, now=start + week
    ) == []
    # Five signals are not more than five: no worst prompt.
    strict = RetrainingConfig(export_dir=tmp_path, min_not_useful=6)
    assert await run_retraining(pool, strict, now=start, client=None) == []


@pytest.mark.parametrize("explanations", [False, True], ids=["explanations-off", "on"])
async def test_training_tasks_publish_and_call_the_model_only_when_enabled(
    explanations: bool, pool: Any, database: str, provider: OpenAICompatibleServer,
    kafka_bootstrap: str,
) -> None:
    from aiokafka import AIOKafkaConsumer

    names = await create_topics(kafka_bootstrap, unique_prefix())
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap, database_url=database,
        kafka_topic_prefix=names.prefix,
        kafka_enable_idempotence=idempotence_supported(kafka_bootstrap),
        training_relay_interval_seconds=0.1,
        failure_explanations_enabled=explanations,
        failure_explanations_base_url=provider.base_url,
        failure_explanations_api_key="sk-x",
        failure_explanations_requests_per_minute=6_000,
    )
    calls_before = len(provider.requests)
    runner = JobRunner(training_jobs(pool, settings), JobMetrics(CollectorRegistry()))
    runner.start()
    consumer = AIOKafkaConsumer(
        names.physical(Topic.TRAINING_EXAMPLES), bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest", group_id=f"ml-{uuid.uuid4().hex[:6]}",
    )
    await consumer.start()
    received: list[Any] = []
    try:
        async def examples_arrived() -> bool:
            for part in (await consumer.getmany(timeout_ms=300)).values():
                received.extend(part)
            return len(received) >= 6

        await eventually(examples_arrived, timeout=30)

        async def explained() -> int:
            return await pool.fetchval("SELECT count(*) FROM trainer.failure_explanations")

        if explanations:
            assert await eventually(explained, timeout=15) == 2
        else:
            await asyncio.sleep(1.0)
            assert await explained() == 0
    finally:
        await consumer.stop()
        await runner.stop()
    # The fixture's examples: r1 (down: KTO + eval), r2 (not-useful replay: KTO + eval),
    # r3 (up: SFT + KTO); r4's user opted out, r5 has no prompt.
    kinds = sorted(orjson.loads(record.value)["kind"] for record in received)
    assert kinds == ["eval", "eval", "kto", "kto", "kto", "sft"]
    assert len(provider.requests) - calls_before == (2 if explanations else 0)
