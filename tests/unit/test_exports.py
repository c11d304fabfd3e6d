"""Export formats: each line as the provider documents it, the validators catch what the
provider rejects, and each format's file loads as a Hugging Face dataset with the columns
TRL expects (when the `datasets` package is installed)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from services.trainer.examples.build import (
    FeedbackRecord,
    ResponseRecord,
    build_examples,
    published_document,
)
from services.trainer.exports.formats import (
    EXPORT_FORMATS,
    format_example,
    line_errors,
    validate_lines,
)

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def _documents(count: int = 12) -> list[dict[str, Any]]:
    """Published documents of every kind, from `count` responses with varied feedback."""
    documents = []
    for n in range(count):
        response = ResponseRecord(
            event_id=uuid.UUID(int=n), user_id="u", session_id=f"s{n}",
            prompt=[{"role": "system", "content": "Be brief."},
                    {"role": "user", "content": f"Question number {n}?"}],
            context=[], output=f"Answer {n}.", model="m", action_type="qa", action_data=None,
            feature=None, language=None, prompt_version="v1", occurred_at=T0,
        )
        feedback = [
            FeedbackRecord(
                event_id=uuid.UUID(int=1000 + n * 10 + i), user_id="u", session_id=None,
                kind=kind, thumb=thumb, rating=None, correction=correction, replay=None,
                inline_prompt=None, inline_output=None, inline_model=None,
                inline_action_type=None, occurred_at=T0 + timedelta(minutes=i),
            )
            for i, (kind, thumb, correction) in enumerate([
                ("thumb", "down" if n % 2 else "up", None),
                ("correction", None, f"A much better and longer answer to question {n}."),
            ])
        ]
        for example in build_examples(
            tenant_id="acme", response_id=f"r{n}", response=response, feedback=feedback
        ):
            documents.append(published_document(example.record, revision=1, created_at=T0))
    return documents


def _lines(export_format: str, documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        line for document in documents
        if (line := format_example(document, export_format)) is not None
    ]


def test_openai_supervised_lines() -> None:
    lines = _lines("openai-sft", _documents())
    assert lines[0] == {"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Question number 0?"},
        {"role": "assistant", "content": "Answer 0."},
    ]}
    assert validate_lines(lines, "openai-sft").valid


def test_openai_preference_lines() -> None:
    lines = _lines("openai-preference", _documents())
    assert lines[0] == {
        "input": {"messages": [{"role": "system", "content": "Be brief."},
                               {"role": "user", "content": "Question number 0?"}]},
        "preferred_output": [{"role": "assistant",
                              "content": "A much better and longer answer to question 0."}],
        "non_preferred_output": [{"role": "assistant", "content": "Answer 0."}],
    }
    assert validate_lines(lines, "openai-preference").valid


def test_trl_lines() -> None:
    documents = _documents()
    kto = _lines("trl-kto", documents)
    assert [line["label"] for line in kto[:2]] == [True, False]
    assert set(kto[0]) == {"prompt", "completion", "label"}
    assert set(_lines("trl-preference", documents)[0]) == {"prompt", "chosen", "rejected"}
    assert set(_lines("trl-sft", documents)[0]) == {"prompt", "completion"}
    cases = _lines("eval-cases", documents)
    assert len(cases) == 6 and all(case["reference"] for case in cases)
    for export_format in EXPORT_FORMATS:
        report = validate_lines(_lines(export_format, documents), export_format)
        assert report.valid, (export_format, report.errors)


def test_validators_reject_what_the_providers_reject() -> None:
    good = {"messages": [{"role": "user", "content": "hi"},
                         {"role": "assistant", "content": "hello"}]}
    assert line_errors(good, "openai-sft") == []
    assert line_errors({"messages": good["messages"][:1]}, "openai-sft") == [
        "messages: the last message must be from the assistant"
    ]
    empty = {"messages": [{"role": "user", "content": " "}, {"role": "assistant", "content": "x"}]}
    assert line_errors(empty, "openai-sft") == ["messages[0]: content must be a non-empty string"]
    tool = {"messages": [{"role": "tool", "content": "x"}, *good["messages"]]}
    # A tool message is OpenAI's only as the answer to an earlier call.
    assert line_errors(tool, "openai-sft") == ["messages[0]: answers no earlier tool call"]
    assert line_errors(good | {"metadata": {}}, "openai-sft")
    two = {"input": {"messages": good["messages"][:1]},
           "preferred_output": good["messages"], "non_preferred_output": good["messages"][1:]}
    assert line_errors(two, "openai-preference") == [
        "preferred_output: must be exactly one assistant message"
    ]
    assert line_errors({"prompt": good["messages"][:1], "completion": good["messages"][1:],
                        "label": "yes"}, "trl-kto") == ["label: must be true or false"]
    nine = validate_lines([good] * 9, "openai-sft")
    assert nine.errors == ["OpenAI fine-tuning needs at least 10 examples, the file has 9"]
    assert validate_lines([good] * 10, "openai-sft").valid


def test_examples_that_cannot_be_written_for_openai_are_skipped() -> None:
    document = _documents(1)[0]
    with_tool = document | {"prompt": [*document["prompt"], {"role": "tool", "content": "42"}]}
    assert format_example(with_tool, "openai-sft") is None
    assert format_example(with_tool, "trl-sft") is not None
    no_user = document | {"prompt": [{"role": "system", "content": "Be brief."},
                                     {"role": "user", "content": ""}]}
    assert format_example(no_user, "trl-sft") is None
    assert format_example(document, "openai-preference") is None  # an sft document


# The columns and feature types TRL reads: conversational prompt-completion, preference and
# unpaired preference datasets, and OpenAI's files loaded the same way.
MESSAGES = [{"role": "string", "content": "string"}]
EXPECTED_FEATURES: dict[str, dict[str, Any]] = {
    "openai-sft": {"messages": MESSAGES},
    "openai-preference": {"input": {"messages": MESSAGES}, "preferred_output": MESSAGES,
                          "non_preferred_output": MESSAGES},
    "trl-sft": {"prompt": MESSAGES, "completion": MESSAGES},
    "trl-preference": {"prompt": MESSAGES, "chosen": MESSAGES, "rejected": MESSAGES},
    "trl-kto": {"prompt": MESSAGES, "completion": MESSAGES, "label": "bool"},
}


def _simple(feature: Any) -> Any:
    """A `datasets` feature as plain data: {"dtype"} -> dtype, List -> [inner], dict -> dict."""
    if isinstance(feature, dict):
        return {key: _simple(value) for key, value in feature.items()}
    if hasattr(feature, "feature"):  # datasets.List / Sequence
        return [_simple(feature.feature)]
    if isinstance(feature, list):
        return [_simple(feature[0])]
    return feature.dtype


@pytest.mark.parametrize("export_format", sorted(EXPECTED_FEATURES))
def test_every_format_loads_as_a_hugging_face_dataset(export_format: str, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    lines = _lines(export_format, _documents())
    path = tmp_path / f"{export_format}.jsonl"
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    dataset = datasets.load_dataset("json", data_files=str(path), split="train")
    assert dataset.num_rows == len(lines) >= 6
    assert _simple(dict(dataset.features)) == EXPECTED_FEATURES[export_format]
    assert dataset[0] == lines[0]


def test_openai_sft_trains_only_on_the_example_reply_not_on_the_history() -> None:
    document = {
        "kind": "sft", "completion": "Booked for Tuesday at 10.",
        "prompt": [
            {"role": "system", "content": "You book appointments."},
            {"role": "user", "content": "Book me in"},
            {"role": "assistant", "content": "Booked for Monday."},  # down-voted earlier
            {"role": "user", "content": "No, Tuesday"},
        ],
    }
    line = format_example(document, "openai-sft")
    assert line is not None
    assert [(m["role"], m.get("weight")) for m in line["messages"]] == [
        ("system", None), ("user", None), ("assistant", 0), ("user", None), ("assistant", None)]
    assert line_errors(line, "openai-sft") == []
    line["messages"][2]["weight"] = 2
    assert line_errors(line, "openai-sft") == ["messages[2]: weight must be 0 or 1"]
    line["messages"][1]["weight"] = 0
    assert "messages[1]" in line_errors(line, "openai-sft")[0]


def test_tool_calls_and_retrieved_context_in_the_chat_formats() -> None:
    document = {
        "kind": "sft", "completion": "Your order ships Tuesday.",
        "context": [{"text": "Orders ship within 2 days.", "source": "faq.md"}],
        "prompt": [
            {"role": "system", "content": "You are support."},
            {"role": "user", "content": "Where is order 42?"},
            {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1",
             "type": "function", "function": {"name": "order", "arguments": "{\"id\": 42}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"status\": \"packed\"}"},
        ],
    }
    line = format_example(document, "openai-sft", context="system")
    assert line is not None and line_errors(line, "openai-sft") == []
    roles = [m["role"] for m in line["messages"]]
    assert roles == ["system", "system", "user", "assistant", "tool", "assistant"]
    assert line["messages"][1]["content"] == "Context:\n[1] Orders ship within 2 days. (source: faq.md)"
    assert line["messages"][3]["tool_calls"][0]["function"]["name"] == "order"
    assert line["messages"][3]["weight"] == 0
    assert line["messages"][4] == {"role": "tool", "tool_call_id": "call_1",
                                   "content": "{\"status\": \"packed\"}"}
    # Without asking for it, no context; TRL keeps plain messages.
    plain = format_example(document, "openai-sft")
    assert plain is not None and [m["role"] for m in plain["messages"]][:2] == ["system", "user"]
    trl = format_example(document, "trl-sft")
    assert trl is not None and line_errors(trl, "trl-sft") == []
    # A tool answer without its call cannot be written for OpenAI.
    orphan = document | {"prompt": [document["prompt"][1], document["prompt"][3]]}
    assert format_example(orphan, "openai-sft") is None
