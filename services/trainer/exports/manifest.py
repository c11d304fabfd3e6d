"""The manifest of an export: what a file holds and where each line came from. Pure.

OpenAI's formats allow no keys beyond their own, so lines carry no ids; the manifest names, per
line, the example id, its revision, its split and quality and the events it was built from,
together with the filters, the counts, the file's sha256 and what to mind when training:
- KTO: the desirable and undesirable counts and the weights to give TRL's `KTOConfig` so that
  `desirable_weight * desirable / (undesirable_weight * undesirable)` is 1, inside the 1 to 4/3
  range TRL recommends;
- an eval split too small to mean anything (under `EVAL_MIN_EXAMPLES` examples).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

MANIFEST_VERSION = 1
EVAL_MIN_EXAMPLES = 100
PII_POLICY = (
    "Redacted when an example is built: e-mail addresses, phone numbers, payment cards (Luhn), "
    "IBANs (mod 97), IP addresses, credentials in URLs, US SSNs and UK National Insurance "
    "numbers, each replaced by a placeholder naming its kind; names where the text says they "
    "are names (greetings, sign-offs, titles, 'my name is', 'my wife ...'), not every name. "
    "Users who opted out of training use or were erased are left out; near duplicates are "
    "kept once."
)


@dataclass
class ExportManifest:
    """Collects the lines of one export as they are written, then describes them."""

    export_format: str
    filters: dict[str, Any]
    examples: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0

    def add(self, document: dict[str, Any]) -> None:
        """The example written as the next line."""
        self.examples.append({
            "line": len(self.examples) + 1,
            "example_id": document["example_id"],
            "revision": document.get("revision"),
            "kind": document["kind"],
            "split": document["split"],
            "label": document.get("label"),
            "quality": document.get("quality"),
            "source_event_ids": document.get("provenance", {}).get("source_event_ids", []),
        })

    def describe(
        self, *, created_at: datetime, files: list[dict[str, Any]],
        snapshot: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The manifest document; `files` names each written file with its sha256 and size;
        `snapshot` the snapshot kept or exported again, with the lines left out since."""
        splits = Counter(example["split"] for example in self.examples)
        manifest: dict[str, Any] = {
            "manifest_version": MANIFEST_VERSION,
            "format": self.export_format,
            "created_at": created_at.isoformat(),
            "filters": self.filters,
            "files": files,
            "counts": {
                "examples": len(self.examples),
                "skipped": self.skipped,
                "by_split": dict(sorted(splits.items())),
                "by_kind": dict(sorted(Counter(e["kind"] for e in self.examples).items())),
            },
            "pii": PII_POLICY,
            "snapshot": snapshot,
            "warnings": self.warnings(),
            "examples": self.examples,
        }
        kto = [example for example in self.examples if example["kind"] == "kto"]
        if kto:
            manifest["kto"] = kto_balance(
                desirable=sum(1 for e in kto if e["label"] is True),
                undesirable=sum(1 for e in kto if e["label"] is False),
            )
        return manifest

    def warnings(self) -> list[str]:
        found = []
        evaluated = sum(1 for example in self.examples if example["split"] == "eval")
        if evaluated and evaluated < EVAL_MIN_EXAMPLES:
            found.append(
                f"the eval split holds {evaluated} examples; under {EVAL_MIN_EXAMPLES}, a score "
                "on it says little (one example moves it by "
                f"{100 / evaluated:.1f} points)"
            )
        if self.filters.get("split") is None and evaluated == 0 and self.examples:
            found.append("no example is in the eval split")
        return found


def kto_balance(*, desirable: int, undesirable: int) -> dict[str, Any]:
    """The counts, and weights for TRL's KTO that balance them (ratio 1)."""
    balance: dict[str, Any] = {"desirable": desirable, "undesirable": undesirable}
    if desirable and undesirable:
        ratio = desirable / undesirable
        balance["trl"] = {
            "desirable_weight": round(1 / ratio, 4) if ratio < 1 else 1.0,
            "undesirable_weight": round(ratio, 4) if ratio > 1 else 1.0,
        }
    else:
        missing = "undesirable" if desirable else "desirable"
        balance["warning"] = f"no {missing} examples: KTO needs both"
    return balance
