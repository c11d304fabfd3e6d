"""Building training examples from feedback joined with its response: the pairing rules, the
similarity threshold, eval cases, provenance, redaction and the stable split."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from feedbackloop.contract import decode_event, load_samples
from services.trainer import processing
from services.trainer.examples.build import (
    MATERIAL_SIMILARITY,
    FeedbackRecord,
    ResponseRecord,
    build_examples,
    similarity,
    stable_split,
)

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
PROMPT = [{"role": "system", "content": "You help with lists."},
          {"role": "user", "content": "Add milk to my list"}]


def response(**changes: Any) -> ResponseRecord:
    values: dict[str, Any] = dict(
        event_id=uuid.UUID(int=1), user_id="u-hash", session_id="conv-1", prompt=PROMPT,
        context=[{"text": "Lists: groceries", "source": None, "document_id": "d1"}],
        output="Added milk to your list.", model="gpt-4o-mini", action_type="todo",
        action_data={"list": "groceries"}, feature="chat", language="en",
        prompt_version="v3", occurred_at=T0,
    )
    return ResponseRecord(**(values | changes))


def feedback(n: int = 2, **changes: Any) -> FeedbackRecord:
    values: dict[str, Any] = dict(
        event_id=uuid.UUID(int=n), user_id="u-hash", session_id=None, kind="thumb", thumb=None,
        rating=None, correction=None, replay=None, inline_prompt=None, inline_output=None,
        inline_model=None, inline_action_type=None, occurred_at=T0 + timedelta(minutes=n),
    )
    return FeedbackRecord(**(values | changes))


def build(resp: ResponseRecord | None, *items: FeedbackRecord) -> list[Any]:
    return build_examples(tenant_id="acme", response_id="r1", response=resp, feedback=items)


def kinds(examples: list[Any]) -> list[tuple[str, Any]]:
    return [(e.kind, e.record["label"]) for e in examples]


def test_similarity_threshold_as_documented() -> None:
    assert MATERIAL_SIMILARITY == 0.9
    assert similarity("Added milk to your list.", "Added milk to your shopping list.") == (
        pytest.approx(0.909, abs=0.001)
    )
    assert similarity("Added milk", "Added oat milk") == pytest.approx(0.8)
    assert similarity("Added milk to your list.", "added milk to your list!") == 1.0


def test_material_correction_gives_a_preference_pair_and_sft() -> None:
    fix = feedback(kind="correction", correction="I added oat milk to your groceries list.")
    examples = build(response(), fix)
    assert kinds(examples) == [("preference", None), ("sft", None)]
    pair, sft = examples
    assert pair.record["chosen"] == "I added oat milk to your groceries list."
    assert pair.record["rejected"] == "Added milk to your list."
    assert pair.record["provenance"]["similarity"] < MATERIAL_SIMILARITY
    assert sft.record["completion"] == "I added oat milk to your groceries list."
    assert (pair.quality, sft.quality) == (1.0, 1.0)


def test_cosmetic_correction_gives_only_the_sft_example() -> None:
    examples = build(response(), feedback(kind="correction", correction="Added milk to your list!"))
    assert kinds(examples) == [("sft", None)]


@pytest.mark.parametrize(
    ("signal", "expected", "quality"),
    [
        ({"thumb": "up"}, [("sft", None), ("kto", True)], 0.75),
        ({"kind": "rating", "rating": 5}, [("sft", None), ("kto", True)], 1.0),
        ({"kind": "rating", "rating": 4}, [("sft", None), ("kto", True)], 0.75),
        ({"kind": "rating", "rating": 3}, [], None),
        ({"kind": "rating", "rating": 2}, [("kto", False), ("eval", None)], 0.75),
        ({"thumb": "down"}, [("kto", False), ("eval", None)], 0.75),
        ({"kind": "rating", "rating": 1}, [("kto", False), ("eval", None)], 1.0),
        ({"kind": "comment"}, [], None),
    ],
)
def test_thumbs_and_ratings(signal: dict[str, Any], expected: list[Any], quality: Any) -> None:
    examples = build(response(), feedback(**signal))
    assert kinds(examples) == expected
    assert all(e.quality == quality for e in examples)
    for example in examples:
        if example.kind in ("sft", "kto"):
            assert example.record["completion"] == "Added milk to your list."


def test_low_rating_eval_case_takes_the_correction_as_reference_in_either_order() -> None:
    down = feedback(2, thumb="down")
    fix = feedback(3, kind="correction", correction="Added oat milk to the groceries list.")
    forward = build(response(), down, fix)
    backward = build(response(), fix, down)
    assert [e.example_id for e in forward] == [e.example_id for e in backward]
    eval_case = next(e for e in forward if e.kind == "eval")
    # In its conversation's split, like the conversation's other examples.
    assert {e.split for e in forward} == {stable_split("acme", "r1", 0.1)}
    assert eval_case.record["output"] == "Added milk to your list."
    assert eval_case.record["reference"] == "Added oat milk to the groceries list."
    assert eval_case.record["provenance"]["source_event_ids"] == [
        str(uuid.UUID(int=1)), str(uuid.UUID(int=2)), str(uuid.UUID(int=3)),
    ]


def test_replay_with_a_different_agent_reply() -> None:
    replay = {"ai_reply": "Your refund is on its way.", "useful": False,
              "agent_reply": "I am sorry: the refund failed; I issued it again today, ref 8812.",
              "message": "I never got my refund"}
    examples = build(None, feedback(kind="replay", replay=replay))
    assert kinds(examples) == [("preference", None), ("sft", None), ("kto", False), ("eval", None)]
    pair, _, _, eval_case = examples
    assert pair.record["prompt"] == [{"role": "user", "content": "I never got my refund"}]
    assert pair.record["rejected"] == "Your refund is on its way."
    assert pair.record["provenance"]["response_logged"] is False
    # No logged output: the replay's AI reply is what the eval case evaluates.
    assert eval_case.record["output"] == "Your refund is on its way."
    assert eval_case.record["reference"] == replay["agent_reply"]
    assert eval_case.record["provenance"]["source_event_ids"] == [str(uuid.UUID(int=2))]


def test_feedback_with_inline_context_before_the_response_arrives() -> None:
    early = feedback(thumb="up", inline_prompt=PROMPT, inline_output="Milk added.",
                     inline_model="gpt-x", inline_action_type="todo")
    before = build(None, early)
    after = build(response(), early)
    assert [e.record["completion"] for e in before] == ["Milk added.", "Milk added."]
    assert [e.record["completion"] for e in after] == ["Added milk to your list."] * 2
    assert [e.example_id for e in before] == [e.example_id for e in after]
    assert before[0].model == "gpt-x" and after[0].model == "gpt-4o-mini"


def test_no_prompt_no_examples() -> None:
    assert build(None, feedback(thumb="up", inline_output="Milk added.")) == []


def test_provenance_and_redaction() -> None:
    resp = response(prompt=[{"role": "user", "content": "Mail jane@example.com the list"}],
                    action_data={"to": "jane@example.com", "n": 2})
    fix = feedback(kind="correction",
                   correction="Sent the list to [you]; call +44 20 7946 0958 for changes.")
    pair, sft = build(resp, fix)
    assert pair.record["prompt"] == [{"role": "user", "content": "Mail [EMAIL] the list"}]
    assert pair.record["action_data"] == {"to": "[EMAIL]", "n": 2}
    assert sft.record["completion"] == "Sent the list to [you]; call [PHONE] for changes."
    provenance = sft.record["provenance"]
    assert provenance["redactions"] == {"EMAIL": 2, "PHONE": 1}
    assert provenance["source_event_ids"] == [str(uuid.UUID(int=1)), str(uuid.UUID(int=2))]
    assert {key: provenance[key] for key in (
        "tenant_id", "model", "action_type", "prompt_version", "feedback_kind",
    )} == {"tenant_id": "acme", "model": "gpt-4o-mini", "action_type": "todo",
           "prompt_version": "v3", "feedback_kind": "correction"}
    assert provenance["response_occurred_at"] == T0.isoformat()
    assert "jane@example.com" not in orjson.dumps(pair.record).decode()
    assert sft.user_ids == ("u-hash",)


def test_ids_and_records_are_deterministic() -> None:
    items = (feedback(2, thumb="up"), feedback(3, kind="correction", correction="Oat milk added."))
    first, second = build(response(), *items), build(response(), *items)
    assert [(e.example_id, e.record) for e in first] == [(e.example_id, e.record) for e in second]
    assert len({e.example_id for e in first}) == len(first)


def test_no_conversation_has_examples_in_both_splits_eval_cases_included() -> None:
    splits: dict[str, set[str]] = {}
    for n in range(200):
        conversation = f"chat-{n}"
        examples = build(response(session_id=conversation), feedback(2, thumb="down"),
                         feedback(3, kind="correction", correction=f"Oat milk, take {n}."))
        assert "eval" in {e.kind for e in examples}
        splits[conversation] = {e.split for e in examples}
    assert all(len(found) == 1 for found in splits.values()), splits
    held_out = sum(found == {"eval"} for found in splits.values())
    assert 5 <= held_out <= 40, held_out  # about a tenth


def test_split_is_stable_and_follows_the_conversation() -> None:
    splits = [stable_split("acme", f"conversation-{i}", 0.1) for i in range(20_000)]
    assert 0.09 < splits.count("eval") / len(splits) < 0.11
    assert splits == [stable_split("acme", f"conversation-{i}", 0.1) for i in range(20_000)]
    conversation = next(f"c{i}" for i in range(1000) if stable_split("acme", f"c{i}", 0.1) == "eval")
    examples = build(response(session_id=conversation), feedback(2, thumb="up"),
                     feedback(3, kind="rating", rating=5))
    assert {(e.conversation_id, e.split) for e in examples} == {(conversation, "eval")}
    no_session = build(response(session_id=None), feedback(2, thumb="up"))
    assert no_session[0].conversation_id == "r1"


def test_trainer_processing_keeps_the_session() -> None:
    doc = load_samples()["response.logged"][0] | {"session_id": "s-9"}
    effect = processing.process_message(decode_event(orjson.dumps(doc)))
    assert isinstance(effect, processing.ResponseStored)
    assert effect.session_id == "s-9"


def test_tool_calls_are_kept_with_their_arguments_redacted() -> None:
    prompt = [
        {"role": "user", "content": "Where is order 42?"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "type": "function",
         "function": {"name": "lookup", "arguments": '{"email": "jo@example.com"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "shipped to jo@example.com"},
    ]
    [sft, _] = build(response(prompt=prompt), feedback(2, thumb="up"))
    stored = sft.record["prompt"]
    assert stored[1]["tool_calls"][0]["function"] == {"name": "lookup",
                                                      "arguments": '{"email": "[EMAIL]"}'}
    assert stored[2] == {"role": "tool", "tool_call_id": "call_1", "content": "shipped to [EMAIL]"}
    assert sft.record["provenance"]["redactions"] == {"EMAIL": 2}
