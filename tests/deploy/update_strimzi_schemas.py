"""Refresh schemas/strimzi-v1.json from the CustomResourceDefinitions of a Strimzi release.

    python tests/deploy/update_strimzi_schemas.py VERSION CRD.yaml [CRD.yaml ...]

with the files 040-Crd-kafka.yaml, 043-Crd-kafkatopic.yaml and 045-Crd-kafkanodepool.yaml from
the release's install/cluster-operator/ folder. Keeps the `v1` openAPIV3Schema of each kind,
without descriptions and status, which the API server does not need to validate a resource.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

TARGET = Path(__file__).parent / "schemas" / "strimzi-v1.json"
API_VERSION = "v1"


def _without_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: _without_descriptions(value) for key, value in node.items() if key != "description"}
    if isinstance(node, list):
        return [_without_descriptions(value) for value in node]
    return node


def main(version: str, crd_files: list[str]) -> None:
    kinds: dict[str, Any] = {}
    for crd_file in crd_files:
        crd = yaml.safe_load(Path(crd_file).read_text())
        served = [entry for entry in crd["spec"]["versions"] if entry["name"] == API_VERSION]
        if not served:
            raise SystemExit(f"{crd_file}: no {API_VERSION} version")
        schema = _without_descriptions(served[0]["schema"]["openAPIV3Schema"])
        schema["properties"].pop("status", None)
        kinds[crd["spec"]["names"]["kind"]] = schema
    document = {
        "strimzi": version,
        "group": "kafka.strimzi.io",
        "version": API_VERSION,
        "kinds": kinds,
    }
    TARGET.write_text(json.dumps(document, sort_keys=True, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2:])
