"""A word-level diff of two texts, for showing the AI's reply beside the agent's. Pure.

Texts are split into words, each with the whitespace after it (so the marked-up result reads
exactly like each original); difflib's matcher aligns the words, and each run is `same`,
`del` (only in the first text) or `ins` (only in the second). The template renders each run
as text inside `<del>` / `<ins>`: nothing here is HTML.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Literal

# A word with the whitespace after it is one unit (so "oat " is inserted, not "oat" and a space
# matched elsewhere); whitespace before the first word is a unit of its own.
_TOKENS = re.compile(r"\s+|\S+\s*")

Op = Literal["same", "del", "ins"]


@dataclass(frozen=True)
class Run:
    op: Op
    text: str


def tokens(text: str) -> list[str]:
    """Words with their trailing whitespace, in order: `"".join(tokens(t)) == t`."""
    return _TOKENS.findall(text)


def word_diff(before: str, after: str) -> list[Run]:
    """The runs turning `before` into `after`, adjacent runs of one kind merged. Joining the
    `same` and `del` runs gives `before`; joining `same` and `ins` gives `after`."""
    a, b = tokens(before), tokens(after)
    matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    runs: list[Run] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            _append(runs, "same", "".join(a[i1:i2]))
            continue
        if tag in ("delete", "replace"):
            _append(runs, "del", "".join(a[i1:i2]))
        if tag in ("insert", "replace"):
            _append(runs, "ins", "".join(b[j1:j2]))
    return runs


def _append(runs: list[Run], op: Op, text: str) -> None:
    if not text:
        return
    if runs and runs[-1].op == op:
        runs[-1] = Run(op, runs[-1].text + text)
    else:
        runs.append(Run(op, text))


def side(runs: list[Run], which: Literal["before", "after"]) -> list[Run]:
    """The runs one side shows: the first text's (`same` + `del`) or the second's."""
    hidden: Op = "ins" if which == "before" else "del"
    return [run for run in runs if run.op != hidden]
