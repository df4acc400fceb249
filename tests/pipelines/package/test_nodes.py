"""select_sample_payload on hand-built chunks."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from tests.serving.conftest import PROJECT
from tsa_kedro.pipelines.package.nodes import select_sample_payload
from tsa_kedro.schema import RawSchema

SCHEMA = yaml.safe_load((PROJECT / "conf/base/parameters.yml").read_text())[
    "raw_schema"
]


def _chunk(ids: list[str], labels: list) -> pd.DataFrame:
    schema = RawSchema.from_params(SCHEMA)
    frame = pd.DataFrame({c: ["x"] * len(ids) for c in schema.all_columns()})
    frame[schema.order_id] = ids
    frame[schema.label] = pd.array(labels, dtype="Int8")
    frame["amount"] = [float("nan")] + [1.5] * (len(ids) - 1)
    return frame


def test_picks_scored_orders_with_one_fraud_and_no_label() -> None:
    chunks = {
        "part-00001": lambda: _chunk(["d", "e", "f"], [0, 1, None]),
        "part-00000": lambda: _chunk(["a", "b", "c"], [0, None, 0]),
    }
    scores = pd.DataFrame({"order_id": ["a", "c", "d", "e"], "score": [0.1] * 4})
    payload = select_sample_payload(chunks, scores, SCHEMA, {"sample_size": 3})
    assert [r["order_id"] for r in payload] == ["a", "c", "e"]
    assert "is_fraud" not in payload[0]
    assert payload[0]["amount"] is None  # NaN travels as JSON null


def test_rejects_bad_size_and_unscored_chunks() -> None:
    chunks = {"part-00000": _chunk(["a"], [0])}
    with pytest.raises(ValueError, match="sample_size"):
        select_sample_payload(chunks, pd.DataFrame({"order_id": ["a"]}), SCHEMA, {})
    with pytest.raises(ValueError, match="no order that score_file scored"):
        select_sample_payload(
            chunks, pd.DataFrame({"order_id": ["z"]}), SCHEMA, {"sample_size": 2}
        )
