"""Where `feedbackloop export` writes: a JSONL file, a Parquet file, or a Hugging Face dataset
directory (the `datasets.save_to_disk` layout, one split per directory, with a dataset card).

Each output names its files with their sha256 and size for the manifest. JSONL is written as
the lines come; Parquet and the dataset directory hold the export in memory until it is closed
(Parquet infers one schema from all the lines).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Protocol

import orjson

OUTPUT_KINDS = ("jsonl", "parquet", "hf-dataset")


class Output(Protocol):
    manifest_path: Path

    def add(self, document: dict[str, Any], line: dict[str, Any]) -> None: ...

    def close(self) -> list[dict[str, Any]]:
        """Finish the files; each with its path, sha256 and size."""
        ...

    def describe(self, manifest: dict[str, Any]) -> None:
        """Write what describes the export beside it (the manifest, a dataset card)."""
        ...


def open_output(kind: str, path: Path) -> Output:
    if kind == "jsonl":
        return JsonlOutput(path)
    if kind == "parquet":
        return ParquetOutput(path)
    if kind == "hf-dataset":
        return DatasetOutput(path)
    raise ValueError(f"unknown output {kind!r}")


def _described(path: Path, root: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return {"path": str(path.relative_to(root)), "sha256": digest.hexdigest(),
            "bytes": path.stat().st_size}


class JsonlOutput:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.manifest_path = path.with_name(path.name + ".manifest.json")
        self._file = path.open("wb")

    def add(self, document: dict[str, Any], line: dict[str, Any]) -> None:
        self._file.write(orjson.dumps(line) + b"\n")

    def close(self) -> list[dict[str, Any]]:
        self._file.close()
        return [_described(self.path, self.path.parent)]

    def describe(self, manifest: dict[str, Any]) -> None:
        _write_manifest(self.manifest_path, manifest)


class ParquetOutput:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.manifest_path = path.with_name(path.name + ".manifest.json")
        self.lines: list[dict[str, Any]] = []

    def add(self, document: dict[str, Any], line: dict[str, Any]) -> None:
        self.lines.append(line)

    def close(self) -> list[dict[str, Any]]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(self.lines), self.path)
        return [_described(self.path, self.path.parent)]

    def describe(self, manifest: dict[str, Any]) -> None:
        _write_manifest(self.manifest_path, manifest)


class DatasetOutput:
    """A `DatasetDict` saved with `save_to_disk`: loads again with `datasets.load_from_disk`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.manifest_path = path / "manifest.json"
        self.splits: dict[str, list[dict[str, Any]]] = {}

    def add(self, document: dict[str, Any], line: dict[str, Any]) -> None:
        self.splits.setdefault(str(document["split"]), []).append(line)

    def close(self) -> list[dict[str, Any]]:
        from datasets import Dataset, DatasetDict

        DatasetDict({
            split: Dataset.from_list(lines) for split, lines in sorted(self.splits.items())
        }).save_to_disk(str(self.path))
        return [_described(file, self.path) for file in sorted(self.path.rglob("*"))
                if file.is_file()]

    def describe(self, manifest: dict[str, Any]) -> None:
        _write_manifest(self.manifest_path, manifest)
        (self.path / "README.md").write_text(dataset_card(manifest))


def _write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    path.write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n")


def dataset_card(described: dict[str, Any]) -> str:
    """A dataset card (the README.md of a Hugging Face dataset) for a described export."""
    splits = described["counts"]["by_split"]
    rows = "\n".join(f"| {split} | {count} |" for split, count in sorted(splits.items()))
    kto = described.get("kto")
    export_format = described["format"]
    filters = ", ".join(f"{name}={value}" for name, value in described["filters"].items()
                        if value is not None)
    return "\n".join([
        "---",
        "configs:",
        "- config_name: default",
        "---",
        f"# feedbackloop export: {export_format}",
        "",
        "Training examples built from people's feedback on an AI product's replies.",
        "",
        "| split | examples |",
        "|---|---|",
        rows or "| (none) | 0 |",
        "",
        f"Format: `{export_format}` (see feedbackloop's README). Filters: {filters}.",
        f"Skipped (not representable in the format): {described['counts']['skipped']}.",
        *([f"KTO: {kto['desirable']} desirable, {kto['undesirable']} undesirable; "
           f"TRL weights {kto.get('trl', kto.get('warning'))}."] if kto else []),
        "",
        "## Personal data",
        "",
        described["pii"],
        "",
        *(f"Warning: {warning}." for warning in described["warnings"]),
        "Per-example ids, revisions and source events are in `manifest.json`.",
        "",
    ])

