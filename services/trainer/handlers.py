"""The trainer consumer: responses, feedback and consent in; the trainer schema out."""

from collections.abc import Sequence

import asyncpg

from feedbackloop.contract import Topic
from feedbackloop.pipeline.consumer import ConsumerSpec
from services.trainer import repository
from services.trainer.examples.rebuild import rebuild_examples
from services.trainer.processing import (
    ConsentSet,
    TrainerEffect,
    UserErased,
    process_message,
)


async def write_effects(connection: asyncpg.Connection, effects: Sequence[TrainerEffect]) -> None:
    """Applies the effects in order, then rebuilds the training examples of every response
    the batch touched, in the same transaction: whichever of a response and its feedback
    arrives second completes the join, and an erasure or opt-out later in the batch wins."""
    touched = await repository.store_effects(connection, effects)
    if touched:
        await rebuild_examples(connection, responses=touched)


def subjects(effect: TrainerEffect) -> tuple[str, ...]:
    """Examples join a response with its feedback and its user's consent: each effect locks
    what it joins on, so replicas holding different topics never build from half the rows."""
    if isinstance(effect, ConsentSet | UserErased):
        return (f"user:{effect.tenant_id}:{effect.user_id}",)
    response = f"response:{effect.tenant_id}:{effect.response_id}"
    if effect.user_id is None:
        return (response,)
    return (response, f"user:{effect.tenant_id}:{effect.user_id}")


SPEC: ConsumerSpec[TrainerEffect] = ConsumerSpec(
    name="trainer",
    schema="trainer",
    topics=(Topic.RESPONSES, Topic.FEEDBACK, Topic.CONSENT),
    process=process_message,
    write=write_effects,
    subjects=subjects,
)
