"""Failure explanations: for a down-voted reply, ask an OpenAI-compatible chat model why the
user may have found it not useful, and store the answer with the feedback.

Off by default: nothing here runs, and no call is made, unless the trainer is wired with an
explainer (settings `failure_explanations_enabled`, `_base_url`, `_api_key`, `_model`). Calls
are made one at a time, at most `requests_per_minute`, outside the consumer pipeline (a slow
or failing model never holds up events). Only redacted text is sent; replies of users who
opted out of training use are not sent. A failed call is recorded and retried up to
`max_attempts` times on later rounds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import asyncpg
import openai

from feedbackloop.pipeline.jobs import Job, singleton
from feedbackloop.settings import Settings
from services.trainer.examples.redaction import redact
from services.trainer.jobs import explanation_store as store

logger = logging.getLogger(__name__)
JOB = "failure-explanations"

MAX_TEXT_CHARS = 4_000
SYSTEM_PROMPT = (
    "You review replies written by an AI assistant. Given the conversation and the AI reply "
    "that the user marked as not useful, explain in at most three sentences the most likely "
    "reason, naming the concrete flaw (wrong action, missing information, misunderstanding, "
    "tone, format). Do not repeat the reply."
)


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT_CHARS else text[:MAX_TEXT_CHARS] + " [...]"


def explanation_messages(
    prompt: list[dict[str, Any]], output: str, action_type: str | None
) -> list[dict[str, str]]:
    """The chat request for one failure, PII redacted. Pure."""
    conversation = "\n".join(
        f"{message.get('role', 'user')}: {_clip(redact(str(message.get('content', ''))).text)}"
        for message in prompt
        if message.get("role") != "system"
    )
    action = f" (action: {action_type})" if action_type and action_type != "unspecified" else ""
    question = (
        f"Here is the user message and the AI reply{action}. The user marked the reply as not "
        "useful. Why do you think that happened?\n\n"
        f"Conversation:\n{conversation}\n\nAI reply:\n{_clip(redact(output).text)}"
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}]


def build_client(*, base_url: str | None, api_key: str, timeout_seconds: float) -> openai.AsyncOpenAI:
    """A client that does not retry on its own: a failed call is recorded and retried later."""
    return openai.AsyncOpenAI(
        base_url=base_url, api_key=api_key, timeout=timeout_seconds, max_retries=0
    )


class RateLimiter:
    """At most `per_minute` acquisitions a minute, evenly spaced."""

    def __init__(self, per_minute: float) -> None:
        self.interval = 60.0 / per_minute
        self._next = 0.0

    async def acquire(self) -> None:
        now = time.monotonic()
        if self._next > now:
            await asyncio.sleep(self._next - now)
        self._next = max(now, self._next) + self.interval


async def explain_pending_failures(
    pool: asyncpg.Pool,
    client: openai.AsyncOpenAI,
    *,
    model: str,
    limiter: RateLimiter,
    batch_size: int = 20,
    max_attempts: int = 3,
) -> int:
    """Explains up to `batch_size` pending failures; returns how many calls were made.

    Errors of the model's API (refused, rate-limited, unreachable, timed out) are recorded
    on the failure and do not raise; Postgres errors do. Returns 0 at once when another
    explainer holds the lock.
    """
    async def explain(connection: asyncpg.Connection) -> int:
        failures = await store.failures_to_explain(
            connection, limit=batch_size, max_attempts=max_attempts
        )
        for failure in failures:
            await limiter.acquire()
            explanation, error = await _ask(client, model, failure)
            await store.record_explanation(
                connection, failure=failure, explanation=explanation, model=model, error=error
            )
        return len(failures)

    return await singleton(pool, JOB, explain)()


async def _ask(
    client: openai.AsyncOpenAI, model: str, failure: store.FailureToExplain
) -> tuple[str | None, str | None]:
    try:
        messages: Any = explanation_messages(failure.prompt, failure.output, failure.action_type)
        completion = await client.chat.completions.create(
            model=model,
            messages=messages,
            temperature=0,
            max_tokens=300,
        )
    except openai.OpenAIError as error:
        logger.warning("failure explanation for %s failed: %s", failure.feedback_event_id, error)
        return None, f"{type(error).__name__}: {error}"[:2_000]
    content = completion.choices[0].message.content if completion.choices else None
    if not content or not content.strip():
        return None, "the model returned no content"
    return content.strip(), None


def explanations_job(
    pool: asyncpg.Pool,
    client: openai.AsyncOpenAI,
    *,
    model: str,
    requests_per_minute: float,
    batch_size: int = 20,
    idle_seconds: float = 10.0,
) -> Job:
    """The explainer as a job: at once again while a batch was full, every `idle_seconds`
    otherwise; the client is closed with the job."""
    limiter = RateLimiter(requests_per_minute)

    async def run() -> int:
        return await explain_pending_failures(
            pool, client, model=model, limiter=limiter, batch_size=batch_size
        )

    return Job(JOB, run, interval=idle_seconds, retry_max_seconds=60.0, batch=batch_size,
               close=client.close)


def explanations_job_from_settings(pool: asyncpg.Pool, settings: Settings) -> Job:
    key = settings.failure_explanations_api_key
    return explanations_job(
        pool,
        build_client(
            base_url=settings.failure_explanations_base_url,
            api_key=key.get_secret_value() if key else "",
            timeout_seconds=settings.failure_explanations_timeout_seconds,
        ),
        model=settings.failure_explanations_model,
        requests_per_minute=settings.failure_explanations_requests_per_minute,
    )
