"""Training examples from feedback joined with the response it is about. Pure.

`build_examples` takes one response (or the inline context its feedback carried) and every
feedback event on it, and returns the examples they give:

| signal                                                  | examples                          |
|---------------------------------------------------------|-----------------------------------|
| correction or agent reply that differs materially       | preference pair (human text       |
| from the AI reply (similarity < `MATERIAL_SIMILARITY`)  | chosen, AI text rejected) + SFT   |
|                                                         | of the human text                 |
| correction or agent reply that does not differ          | SFT of the human text (it is what |
| materially (a typo fix)                                 | the person sent)                  |
| thumbs up, rating 4-5, replay marked useful             | SFT of the AI text + KTO `true`   |
| thumbs down, rating 1-2, replay marked not useful       | KTO `false`                       |
| rating 3, comments                                      | none                              |

Any low signal (thumbs down, rating 1-2, replay not useful) also makes the response an eval
case, one per response, with the most recent human text on that response as its reference.

Similarity is difflib's ratio over the word tokens of the case-folded texts (2 * matching
words / total words; punctuation and case do not count): 1.0 for "Added milk to your list."
against "added milk to your list!"; "Added milk to your list." against "Added milk to your
shopping list." is 0.91, not material; "Added milk" against "Added oat milk" is 0.80, material.

Every text (prompt, context, action data strings, outputs) is PII-redacted before anything else
sees it; the examples carry provenance and the redactions applied. `quality` (0-1) is the
strength of the human signal behind an example: 1.0 for human-written text and the extreme
ratings (5, 1), 0.75 for thumbs, replays and ratings 4 and 2.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from services.trainer.examples import dedupe
from services.trainer.examples.records import (
    ExampleKind,
    FeedbackRecord,
    ResponseRecord,
    Split,
    TrainingExample,
    published_document,
)
from services.trainer.examples.redaction import Redactor

__all__ = [
    "FeedbackRecord",
    "ResponseRecord",
    "TrainingExample",
    "build_examples",
    "published_document",
    "similarity",
    "stable_split",
]

MATERIAL_SIMILARITY = 0.90
DEFAULT_EVAL_FRACTION = 0.1
EXAMPLE_SCHEMA_VERSION = 1
_EXAMPLE_NAMESPACE = uuid.UUID("6f1d8a52-3b0e-4f57-9a8c-2d4b7e1c9f30")
_TOKEN = re.compile(r"\w+")

def similarity(ai_text: str, human_text: str) -> float:
    """difflib ratio over the word tokens of the case-folded texts (0-1)."""
    first = _TOKEN.findall(ai_text.casefold())
    second = _TOKEN.findall(human_text.casefold())
    if not first and not second:
        return 1.0
    return difflib.SequenceMatcher(None, first, second, autojunk=False).ratio()


def stable_split(tenant_id: str, conversation_id: str, eval_fraction: float) -> Split:
    """The same conversation always lands in the same split, whatever else changes."""
    digest = hashlib.sha256(f"{tenant_id}\x1f{conversation_id}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    return "eval" if position < eval_fraction else "train"


@dataclass(frozen=True)
class _Context:
    """What every example of one response shares, already redacted."""

    tenant_id: str
    response_id: str
    conversation_id: str
    response: ResponseRecord | None
    prompt: list[dict[str, Any]]
    context: list[dict[str, Any]]
    action_data: Any
    ai_output: str | None
    model: str | None
    action_type: str | None
    user_ids: tuple[str, ...]
    redactions: Counter[str]
    eval_fraction: float


def _human_text(feedback: FeedbackRecord) -> str | None:
    if feedback.correction:
        return feedback.correction
    if feedback.replay and feedback.replay.get("agent_reply"):
        return str(feedback.replay["agent_reply"])
    return None


def _ai_text(feedback: FeedbackRecord, context: _Context) -> str | None:
    if feedback.replay and feedback.replay.get("ai_reply"):
        return str(feedback.replay["ai_reply"])
    return context.ai_output


def _signal(feedback: FeedbackRecord) -> tuple[bool | None, float, str]:
    """(accepted?, quality, name) of a thumb, rating or replay verdict; None when neutral."""
    if feedback.thumb is not None:
        return feedback.thumb == "up", 0.75, f"thumb_{feedback.thumb}"
    if feedback.rating is not None:
        quality = 1.0 if feedback.rating in (1, 5) else 0.75
        verdict = True if feedback.rating >= 4 else False if feedback.rating <= 2 else None
        return verdict, quality, f"rating_{feedback.rating}"
    if feedback.replay is not None and feedback.replay.get("useful") is not None:
        useful = bool(feedback.replay["useful"])
        return useful, 0.75, "replay_useful" if useful else "replay_not_useful"
    return None, 0.0, feedback.kind


def _prompt_of(response: ResponseRecord | None, feedback: Sequence[FeedbackRecord]) -> list[Any]:
    if response is not None:
        return response.prompt
    for item in feedback:
        if item.inline_prompt:
            return item.inline_prompt
    for item in feedback:
        if item.replay and item.replay.get("message"):
            return [{"role": "user", "content": str(item.replay["message"])}]
    return []


def build_examples(
    *,
    tenant_id: str,
    response_id: str,
    response: ResponseRecord | None,
    feedback: Sequence[FeedbackRecord],
    eval_fraction: float = DEFAULT_EVAL_FRACTION,
) -> list[TrainingExample]:
    """Every example the feedback on one response gives, in feedback order, then its eval case.
    `feedback` is the current feedback only: per signal identity its latest event, no
    retraction (the repository selects it).

    Deterministic: the same inputs give the same example ids and records, so rebuilding after
    more feedback or the late response changes only what really changed. The storage adds
    `provenance.created_at` and `revision` when the record is published or exported.
    Feedback without a known prompt gives nothing: an example needs one.
    """
    feedback = sorted(feedback, key=lambda item: (item.occurred_at, str(item.event_id)))
    raw_prompt = _prompt_of(response, feedback)
    if not raw_prompt:
        return []
    context = _context_of(tenant_id, response_id, response, feedback, raw_prompt, eval_fraction)
    examples: list[TrainingExample] = []
    for item in feedback:
        examples += _examples_of(item, context)
    eval_case = _eval_case(feedback, context)
    if eval_case is not None:
        examples.append(eval_case)
    return examples


def _context_of(
    tenant_id: str, response_id: str, response: ResponseRecord | None,
    feedback: Sequence[FeedbackRecord], raw_prompt: list[Any], eval_fraction: float,
) -> _Context:
    """What the response's examples share, redacted: from the logged response, or else from
    the inline context its feedback carried (the first feedback that has one)."""
    redactor = Redactor()
    inline = next((item for item in feedback if item.inline_output or item.inline_model), None)
    session = (response.session_id if response else None) or next(
        (item.session_id for item in feedback if item.session_id), None
    )
    users = {item.user_id for item in feedback} | {response.user_id if response else None}
    ai_output = response.output if response else (inline.inline_output if inline else None)
    return _Context(
        tenant_id=tenant_id,
        response_id=response_id,
        conversation_id=session or response_id,
        response=response,
        prompt=redactor.messages(raw_prompt),
        context=[
            document
            | {"text": redactor.text(document.get("text") or "")}
            | {"source": redactor.text(document["source"]) if document.get("source") else None}
            for document in (response.context if response else [])
        ],
        action_data=redactor.json(response.action_data) if response else None,
        ai_output=redactor.text(ai_output) if ai_output else None,
        model=response.model if response else (inline.inline_model if inline else None),
        action_type=(
            response.action_type if response else (inline.inline_action_type if inline else None)
        ),
        user_ids=tuple(sorted(user for user in users if user)),
        redactions=redactor.counts,
        eval_fraction=eval_fraction,
    )


def _examples_of(feedback: FeedbackRecord, context: _Context) -> list[TrainingExample]:
    redactor = Redactor()
    examples: list[TrainingExample] = []
    human = _human_text(feedback)
    raw_ai = _ai_text(feedback, context)
    ai = redactor.text(raw_ai) if raw_ai and feedback.replay else context.ai_output
    if human:
        human = redactor.text(human)
        score = similarity(ai, human) if ai else None
        if ai and score is not None and score < MATERIAL_SIMILARITY:
            examples.append(
                _example(context, feedback, redactor, "preference", quality=1.0,
                         fields={"chosen": human, "rejected": ai}, similarity=score)
            )
        examples.append(
            _example(context, feedback, redactor, "sft", quality=1.0,
                     fields={"completion": human}, similarity=score)
        )
    accepted, quality, _ = _signal(feedback)
    if accepted is not None and ai:
        if accepted and not human:
            examples.append(
                _example(context, feedback, redactor, "sft", quality=quality,
                         fields={"completion": ai})
            )
        examples.append(
            _example(context, feedback, redactor, "kto", quality=quality,
                     fields={"completion": ai, "label": accepted})
        )
    return examples


def _eval_case(feedback: Sequence[FeedbackRecord], context: _Context) -> TrainingExample | None:
    low = [item for item in feedback if _signal(item)[0] is False]
    redactor = Redactor()
    # Without a logged or inline output, a not-useful replay's own AI reply is the output.
    replayed = next((_ai_text(item, context) for item in low if item.replay), None)
    output = context.ai_output or (redactor.text(replayed) if replayed else None)
    if not low or not output:
        return None
    humans = [(item, text) for item in feedback if (text := _human_text(item))]
    reference = redactor.text(humans[-1][1]) if humans else None
    sources = {item.event_id: item for item in [*low, *(item for item, _ in humans)]}
    quality = max(_signal(item)[1] for item in low)
    return _example(
        context, low[0], redactor, "eval", quality=quality,
        fields={"output": output, "reference": reference},
        sources=sorted(sources.values(), key=lambda item: (item.occurred_at, str(item.event_id))),
    )


def _example(
    context: _Context,
    feedback: FeedbackRecord,
    redactor: Redactor,
    kind: ExampleKind,
    *,
    quality: float,
    fields: dict[str, Any],
    similarity: float | None = None,
    sources: Sequence[FeedbackRecord] | None = None,
) -> TrainingExample:
    sources = list(sources or [feedback])
    identity = _identity(context, feedback, kind, fields)
    # Every example of a conversation, its eval case included, lands in the conversation's
    # split: an eval case held out while its conversation's SFT, KTO and preference rows train
    # would score the model on what it was trained on.
    split = stable_split(context.tenant_id, context.conversation_id, context.eval_fraction)
    example_id = uuid.uuid5(_EXAMPLE_NAMESPACE, identity)
    redactions = dict(sorted((context.redactions + redactor.counts).items()))
    body = {
        "completion": None, "label": None, "chosen": None, "rejected": None,
        "output": None, "reference": None,
    } | fields
    provenance = _provenance(context, feedback, _source_ids(context, sources), similarity,
                             redactions)
    record = _record(context, example_id, kind, split, body, quality, provenance)
    prompt_text = "\n".join(str(message.get("content", "")) for message in context.prompt)
    targets = [str(value) for value in body.values() if value is not None]
    group = f"kto:{str(fields['label']).lower()}" if kind == "kto" else kind
    return TrainingExample(
        example_id=example_id,
        tenant_id=context.tenant_id,
        kind=kind,
        split=split,
        conversation_id=context.conversation_id,
        response_id=context.response_id,
        user_ids=context.user_ids,
        model=context.model,
        action_type=context.action_type,
        quality=quality,
        occurred_at=max(item.occurred_at for item in sources),
        record=record,
        dedupe_group=group,
        content_hash=dedupe.content_hash([prompt_text, *targets]),
        sketch=dedupe.sketch("\n".join([prompt_text, *targets])),
    )


def _source_ids(context: _Context, sources: Sequence[FeedbackRecord]) -> list[str]:
    """The events an example comes from: the logged response first, then its feedback."""
    source_ids = [str(item.event_id) for item in sources]
    if context.response is not None:
        source_ids.insert(0, str(context.response.event_id))
    return source_ids


def _record(
    context: _Context, example_id: uuid.UUID, kind: ExampleKind, split: Split,
    body: dict[str, Any], quality: float, provenance: dict[str, Any],
) -> dict[str, Any]:
    """The example's published document (before the storage adds its revision)."""
    return {
        "example_id": str(example_id),
        "schema_version": EXAMPLE_SCHEMA_VERSION,
        "kind": kind,
        "split": split,
        "tenant_id": context.tenant_id,
        "conversation_id": context.conversation_id,
        "response_id": context.response_id,
        "prompt": context.prompt,
        "context": context.context,
        "action_data": context.action_data,
        **body,
        "quality": quality,
        "provenance": provenance,
    }


def _identity(
    context: _Context, feedback: FeedbackRecord, kind: ExampleKind, fields: dict[str, Any]
) -> str:
    """What makes an example the same example again (its id is a UUID5 of it)."""
    if kind == "eval":
        return f"{context.tenant_id}/{context.response_id}/eval"
    if feedback.person is not None:
        # One example per signal identity: a flipped thumb is a new revision of the same
        # KTO example with the other label, an edited correction revises its pair.
        return (f"{context.tenant_id}/{context.response_id}/{feedback.person}"
                f"/{feedback.kind}/{kind}")
    label = f"/{fields['label']}" if kind == "kto" else ""
    return f"{context.tenant_id}/{feedback.event_id}/{kind}{label}"


def _provenance(
    context: _Context, feedback: FeedbackRecord, source_ids: list[str],
    similarity: float | None, redactions: dict[str, int],
) -> dict[str, Any]:
    response = context.response
    return {
        "source_event_ids": source_ids,
        "tenant_id": context.tenant_id,
        "model": context.model,
        "action_type": context.action_type,
        "prompt_version": response.prompt_version if response else None,
        "feature": response.feature if response else None,
        "language": response.language if response else None,
        "feedback_kind": feedback.kind,
        "signal": _signal(feedback)[2],
        "similarity": None if similarity is None else round(similarity, 4),
        "response_logged": response is not None,
        "response_occurred_at": response.occurred_at.isoformat() if response else None,
        "feedback_occurred_at": feedback.occurred_at.isoformat(),
        "redactions": redactions,
    }
