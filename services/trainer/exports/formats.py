"""Export formats of the training examples, and the rules each format's reader enforces. Pure.

| format              | examples   | one JSONL line                                                  |
|---------------------|------------|-----------------------------------------------------------------|
| `openai-sft`        | sft        | `{"messages": [...prompt, {"role": "assistant", ...}]}`         |
| `openai-preference` | preference | `{"input": {"messages": [...]}, "preferred_output": [assistant],|
|                     |            | "non_preferred_output": [assistant]}`                           |
| `trl-sft`           | sft        | `{"prompt": [...], "completion": [assistant]}`                  |
| `trl-preference`    | preference | `{"prompt": [...], "chosen": [assistant], "rejected": [...]}`   |
| `trl-kto`           | kto        | `{"prompt": [...], "completion": [assistant], "label": bool}`   |
| `eval-cases`        | eval       | `{"prompt": [...], "output": str, "reference": str or null,     |
|                     |            | "example_id": ...}`                                             |
| `raw`               | every kind | the document published on the training-examples topic           |

TRL lines are TRL's conversational dataset formats (prompt-completion, preference, unpaired
preference). The OpenAI rules checked are the fine-tuning guide's: every message has a role
of system, user or assistant and non-empty string content; a supervised example ends with an
assistant message and has one; a preference example has a non-empty input conversation and
exactly one assistant message on each side; a file holds at least 10 examples. OpenAI lines
carry no other keys (the API rejects unknown ones). In an SFT line, every assistant message of
the history carries `"weight": 0` (the example's own reply keeps the default, 1): OpenAI trains
on every assistant turn by default, and an earlier reply in the history may be one the person
down-voted or corrected; only the reply the example is about is known to be wanted. Tool
calls are written in OpenAI's shape (an assistant message's `tool_calls`, a `tool` message's
`tool_call_id`); an example with a tool answer that follows no call cannot be written for
OpenAI and is skipped, counted by the caller, as is one with no user message. Prompt messages
with empty content (and no tool calls) are dropped. TRL lines keep plain `role`/`content`
messages. With `context="system"` the retrieved documents become a numbered system message
after the prompt's own system messages.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

ExportFormat = Literal[
    "openai-sft", "openai-preference", "trl-sft", "trl-preference", "trl-kto", "eval-cases", "raw"
]
FORMAT_KINDS: dict[str, tuple[str, ...]] = {
    "openai-sft": ("sft",),
    "openai-preference": ("preference",),
    "trl-sft": ("sft",),
    "trl-preference": ("preference",),
    "trl-kto": ("kto",),
    "eval-cases": ("eval",),
    "raw": (),
}
EXPORT_FORMATS: tuple[str, ...] = tuple(FORMAT_KINDS)
OPENAI_MIN_EXAMPLES = 10
_OPENAI_ROLES = frozenset({"system", "user", "assistant", "tool"})
_TRL_ROLES = frozenset({"system", "user", "assistant", "tool"})


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


ContextMode = Literal["none", "system"]
CONTEXT_MODES: tuple[str, ...] = ("none", "system")


def _context_message(document: dict[str, Any]) -> dict[str, str] | None:
    """The retrieved documents as one system message, numbered, with their sources."""
    documents = [d for d in document.get("context") or [] if str(d.get("text", "")).strip()]
    if not documents:
        return None
    lines = ["Context:"] + [
        f"[{n}] {d['text']}" + (f" (source: {d['source']})" if d.get("source") else "")
        for n, d in enumerate(documents, start=1)
    ]
    return {"role": "system", "content": "\n".join(lines)}


def _openai_message(message: dict[str, Any]) -> dict[str, Any] | None:
    """A prompt message in OpenAI's chat shape, tool calls and tool answers included; None
    when it has nothing to say, or is a tool answer without the call it answers."""
    content = str(message.get("content") or "")
    if message.get("tool_calls") and message["role"] == "assistant":
        return {"role": "assistant", "content": content, "tool_calls": [
            {"id": call["id"], "type": "function",
             "function": {"name": call["function"]["name"],
                          "arguments": call["function"].get("arguments", "{}")}}
            for call in message["tool_calls"]]}
    if message["role"] == "tool":
        if not message.get("tool_call_id"):
            return None
        return {"role": "tool", "tool_call_id": message["tool_call_id"], "content": content}
    if not content.strip():
        return None
    return {"role": str(message["role"]), "content": content}


def _prompt(
    document: dict[str, Any], *, openai: bool, context: ContextMode = "none"
) -> list[dict[str, Any]] | None:
    raw = list(document["prompt"])
    if context == "system" and (extra := _context_message(document)) is not None:
        leading = next((i for i, m in enumerate(raw) if m.get("role") != "system"), len(raw))
        raw.insert(leading, extra)
    if openai:
        messages: list[dict[str, Any]] = []
        calls: set[str] = set()
        for message in raw:
            converted = _openai_message(message)
            if message.get("role") == "tool" and (
                converted is None or converted["tool_call_id"] not in calls
            ):
                return None  # a tool answer OpenAI cannot tie to its call
            if converted is not None:
                calls |= {call["id"] for call in converted.get("tool_calls", [])}
                messages.append(converted)
        if any(message["role"] not in _OPENAI_ROLES for message in messages):
            return None
    else:
        messages = [
            {"role": str(message["role"]), "content": str(message.get("content") or "")}
            for message in raw
            if str(message.get("content") or "").strip()
        ]
    if not any(message["role"] == "user" for message in messages):
        return None
    return messages


def format_example(
    document: dict[str, Any], export_format: str, *, context: ContextMode = "none"
) -> dict[str, Any] | None:
    """One published example document as one line of `export_format`; None when the example
    is of another kind or cannot be written in that format. `context="system"` puts the
    retrieved documents in a system message of the prompt (chat formats)."""
    kinds = FORMAT_KINDS[export_format]
    if export_format == "raw":
        return document
    if document["kind"] not in kinds:
        return None
    prompt = _prompt(document, openai=export_format.startswith("openai"), context=context)
    if prompt is None:
        return None
    match export_format:
        case "openai-sft":
            history = [message | {"weight": 0} if message["role"] == "assistant" else message
                       for message in prompt]
            return {"messages": history + _assistant(document["completion"])}
        case "openai-preference":
            return {
                "input": {"messages": prompt},
                "preferred_output": _assistant(document["chosen"]),
                "non_preferred_output": _assistant(document["rejected"]),
            }
        case "trl-sft":
            return {"prompt": prompt, "completion": _assistant(document["completion"])}
        case "trl-preference":
            return {
                "prompt": prompt,
                "chosen": _assistant(document["chosen"]),
                "rejected": _assistant(document["rejected"]),
            }
        case "trl-kto":
            return {
                "prompt": prompt,
                "completion": _assistant(document["completion"]),
                "label": bool(document["label"]),
            }
        case "eval-cases":
            return {
                "example_id": document["example_id"],
                "prompt": prompt,
                "output": document["output"],
                "reference": document["reference"],
            }
    raise ValueError(f"unknown export format {export_format!r}")


def _allowed_keys(message: dict[str, Any], *, openai: bool, weights: bool) -> set[str]:
    keys = {"role", "content"}
    if openai and message.get("role") == "assistant":
        keys |= {"tool_calls"} | ({"weight"} if weights else set())
    if openai and message.get("role") == "tool":
        keys |= {"tool_call_id"}
    return keys


def _messages_errors(
    messages: Any, where: str, roles: frozenset[str], *, openai: bool = False,
    weights: bool = False,
) -> list[str]:
    """`openai`: OpenAI's chat shape, where an assistant message may make `tool_calls` and a
    tool message answers one by `tool_call_id`; `weights`: assistant messages may also carry a
    `weight` of 0 or 1 (chat SFT)."""
    if not isinstance(messages, list) or not messages:
        return [f"{where}: must be a non-empty list of messages"]
    errors = []
    calls: set[str] = set()
    for index, message in enumerate(messages):
        here = f"{where}[{index}]"
        if not isinstance(message, dict) or not {"role", "content"} <= set(message):
            errors.append(f"{here}: must have `role` and `content`")
            continue
        extra = set(message) - _allowed_keys(message, openai=openai, weights=weights)
        if extra:
            errors.append(f"{here}: keys {sorted(extra)} are not allowed")
            continue
        if message["role"] not in roles:
            errors.append(f"{here}: role {message['role']!r} is not allowed")
        if "weight" in message and message["weight"] not in (0, 1):
            errors.append(f"{here}: weight must be 0 or 1")
        if "tool_calls" in message:
            made = message["tool_calls"]
            if not isinstance(made, list) or not made or not all(
                isinstance(c, dict) and c.get("type") == "function" and c.get("id")
                and isinstance(c.get("function"), dict) and c["function"].get("name")
                and isinstance(c["function"].get("arguments"), str) for c in made
            ):
                errors.append(f"{here}: tool_calls must be function calls with an id, a name "
                              "and arguments")
            else:
                calls |= {str(call["id"]) for call in made}
        if message["role"] == "tool" and openai and message.get("tool_call_id") not in calls:
            errors.append(f"{here}: answers no earlier tool call")
        empty_allowed = "tool_calls" in message or message["role"] == "tool"
        if not isinstance(message["content"], str) or (
            not message["content"].strip() and not empty_allowed
        ):
            errors.append(f"{here}: content must be a non-empty string")
    return errors


def _single_assistant(messages: Any, where: str, roles: frozenset[str]) -> list[str]:
    errors = _messages_errors(messages, where, roles)
    if not errors and (len(messages) != 1 or messages[0]["role"] != "assistant"):
        errors.append(f"{where}: must be exactly one assistant message")
    return errors


def _keys_errors(line: dict[str, Any], expected: set[str]) -> list[str]:
    if set(line) != expected:
        return [f"keys must be {sorted(expected)}, got {sorted(line)}"]
    return []


def line_errors(line: Any, export_format: str) -> list[str]:
    """What the format's reader would reject in one line (empty: valid)."""
    if not isinstance(line, dict):
        return ["a line must be a JSON object"]
    match export_format:
        case "openai-sft":
            errors = _keys_errors(line, {"messages"})
            messages: Any = line.get("messages")
            errors += _messages_errors(messages, "messages", _OPENAI_ROLES, openai=True,
                                       weights=True)
            if not errors:
                if messages[-1]["role"] != "assistant":
                    errors.append("messages: the last message must be from the assistant")
                if not any(message["role"] == "user" for message in messages):
                    errors.append("messages: needs a user message")
            return errors
        case "openai-preference":
            errors = _keys_errors(line, {"input", "preferred_output", "non_preferred_output"})
            conversation = line.get("input")
            if not isinstance(conversation, dict) or "messages" not in conversation:
                return [*errors, "input: must be an object with `messages`"]
            errors += _messages_errors(conversation["messages"], "input.messages", _OPENAI_ROLES,
                                       openai=True)
            errors += _single_assistant(
                line.get("preferred_output"), "preferred_output", _OPENAI_ROLES
            )
            errors += _single_assistant(
                line.get("non_preferred_output"), "non_preferred_output", _OPENAI_ROLES
            )
            return errors
        case "trl-sft" | "trl-preference" | "trl-kto":
            targets = {"trl-sft": ("completion",), "trl-preference": ("chosen", "rejected"),
                       "trl-kto": ("completion",)}[export_format]
            keys = {"prompt", *targets} | ({"label"} if export_format == "trl-kto" else set())
            errors = _keys_errors(line, keys)
            errors += _messages_errors(line.get("prompt"), "prompt", _TRL_ROLES)
            for target in targets:
                errors += _single_assistant(line.get(target), target, _TRL_ROLES)
            if export_format == "trl-kto" and not isinstance(line.get("label"), bool):
                errors.append("label: must be true or false")
            return errors
        case "eval-cases":
            errors = _keys_errors(line, {"example_id", "prompt", "output", "reference"})
            errors += _messages_errors(line.get("prompt"), "prompt", _TRL_ROLES)
            if not isinstance(line.get("output"), str) or not line["output"].strip():
                errors.append("output: must be a non-empty string")
            if line.get("reference") is not None and not isinstance(line["reference"], str):
                errors.append("reference: must be a string or null")
            return errors
        case "raw":
            return [] if line.get("type") == "training_example" else ["not a training example"]
    raise ValueError(f"unknown export format {export_format!r}")


@dataclass
class ValidationReport:
    """The outcome of checking a whole export; `errors` names lines by their 1-based number."""

    export_format: str
    lines: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.errors


def validate_lines(lines: Iterable[Any], export_format: str) -> ValidationReport:
    """Checks every line, then the file-wide rules (OpenAI: at least 10 examples)."""
    report = ValidationReport(export_format)
    for number, line in enumerate(lines, start=1):
        report.lines = number
        report.errors += [f"line {number}: {error}" for error in line_errors(line, export_format)]
    report.errors += file_errors(report.lines, export_format)
    return report


def file_errors(line_count: int, export_format: str) -> list[str]:
    """The rules about a whole file: OpenAI fine-tuning needs at least 10 examples."""
    if export_format.startswith("openai") and line_count < OPENAI_MIN_EXAMPLES:
        return [
            f"OpenAI fine-tuning needs at least {OPENAI_MIN_EXAMPLES} examples,"
            f" the file has {line_count}"
        ]
    return []
