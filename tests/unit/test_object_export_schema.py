"""The Arrow schema of the `examples` stream's Parquet parts names every field of the published
document (the `training_example` contract), and a row with a key it does not name is refused
rather than written into a file whose schema would differ from its other parts'."""

from __future__ import annotations

import pytest

from feedbackloop.contract.training_examples import TrainingExample
from services.trainer.exports.object_files import parquet_bytes, stream_schema


def test_the_examples_schema_is_the_published_documents_fields() -> None:
    assert set(stream_schema("examples").names) == set(TrainingExample.model_fields)
    assert all(field.nullable for field in stream_schema("examples"))


def test_a_row_with_a_column_the_schema_does_not_name_is_refused() -> None:
    with pytest.raises(ValueError, match=r"no column \['surprise'\]"):
        parquet_bytes("responses", [{"response_id": "r1", "surprise": 1}])


def test_json_columns_hold_json_text_of_every_value_and_text_columns_only_text() -> None:
    import io
    import json

    import pyarrow.parquet as pq

    rows = [{"response_id": "r1", "action_data": "[1]", "output": "[1]"},
            {"response_id": "r2", "action_data": [1], "output": "plain"}]
    table = pq.read_table(io.BytesIO(parquet_bytes("responses", rows))).to_pylist()
    assert [json.loads(row["action_data"]) for row in table] == ["[1]", [1]]
    assert [row["output"] for row in table] == ["[1]", "plain"]
    with pytest.raises(ValueError, match="column output holds text, not dict"):
        parquet_bytes("responses", [{"response_id": "r1", "output": {"a": 1}}])
