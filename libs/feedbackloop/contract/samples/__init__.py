"""Sample events per schema version, sample messages of the output topics that consumers read
(`outputs/`): every processor is tested against every one of them; and sample weights versions
(`weights/`), read by the product's own ranking outside the platform."""

from __future__ import annotations

from importlib import resources
from typing import Any

import orjson


def load_samples(version: int = 1) -> dict[str, list[dict[str, Any]]]:
    """Sample event documents by event type, for one schema version."""
    folder = resources.files(__package__) / f"v{version}"
    samples: dict[str, list[dict[str, Any]]] = {}
    for entry in sorted(folder.iterdir(), key=lambda item: item.name):
        if entry.name.endswith(".json"):
            samples[entry.name.removesuffix(".json")] = orjson.loads(entry.read_bytes())
    return samples


def load_output_samples(version: int = 1) -> dict[str, list[dict[str, Any]]]:
    """Sample messages of the output topics a consumer reads (training examples, alert
    changes) by type, for a version."""
    return _load(resources.files(__package__) / "outputs" / f"v{version}")


def load_weights_samples(version: int) -> dict[str, list[dict[str, Any]]]:
    """Sample messages of the weights topic (read outside the platform), for a version."""
    return _load(resources.files(__package__) / "weights" / f"v{version}")


def _load(folder: Any) -> dict[str, list[dict[str, Any]]]:
    samples: dict[str, list[dict[str, Any]]] = {}
    for entry in sorted(folder.iterdir(), key=lambda item: item.name):
        if entry.name.endswith(".json"):
            samples[entry.name.removesuffix(".json")] = orjson.loads(entry.read_bytes())
    return samples
