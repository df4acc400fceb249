"""Batch scoring with ``score.explain``: the reason columns, in Parquet and DuckDB."""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest

from tests.pipelines.score.conftest import production_quirks
from tsa_kedro.datasets.duckdb_table import DuckDBTableDataset
from tsa_kedro.parameters import ScoreExplainParams
from tsa_kedro.pipelines.score.nodes import (
    REASON_COLUMNS,
    SCORE_COLUMNS,
    load_model,
    score_orders,
)

SCORE = {"model": "", "tracking_uri": None, "batch_orders": 20, "device": "cpu"}


@pytest.fixture(scope="module")
def archive_model(model_archive):
    return load_model({**SCORE, "model": str(model_archive)}, {"tracking_uri": ""})


def _partitions(frame: pd.DataFrame) -> dict:
    return {"part-00000": lambda: frame}


def test_reason_columns_when_enabled(tiny_model, archive_model, tmp_path):
    raw, rejected = production_quirks(tiny_model.raw_cali)
    raw = raw.iloc[:30]
    _, plain, _ = score_orders(_partitions(raw), archive_model, SCORE)
    assert list(plain.columns) == list(SCORE_COLUMNS)
    disabled = {**SCORE, "explain": {"enabled": False, "top_k": 3}}
    _, table, _ = score_orders(_partitions(raw), archive_model, disabled)
    assert list(table.columns) == list(SCORE_COLUMNS)

    enabled = {**SCORE, "explain": {"enabled": True, "top_k": 2}}
    parts, table, _ = score_orders(_partitions(raw), archive_model, enabled)
    assert list(table.columns) == [*SCORE_COLUMNS, *REASON_COLUMNS]
    pd.testing.assert_series_equal(table["score"], plain["score"])
    scored = table[table["error"].isna()]
    for text in scored["reason_features"]:
        entries = text.split(";")
        assert len(entries) == 2
        name, value = entries[0].rsplit(":", 1)
        assert name and float(value) > 0
    for text in scored["reason_cid_orders"]:
        for entry in filter(None, text.split(";")):
            position, value = entry.split(":")
            assert int(position) >= 1 and float(value) > 0
    is_rejected = table["order_id"] == rejected
    assert table.loc[is_rejected, list(REASON_COLUMNS)].isna().all(axis=None)
    assert (table[list(REASON_COLUMNS)].dtypes == "string").all()

    # both writers take the text columns
    parquet = tmp_path / "scores.parquet"
    table.to_parquet(parquet, index=False)
    pd.testing.assert_frame_equal(pd.read_parquet(parquet), table, check_dtype=False)
    path = tmp_path / "scores.duckdb"
    DuckDBTableDataset(filepath=str(path), table="scores").save(table)
    with duckdb.connect(str(path), read_only=True) as con:
        texts = con.execute("select reason_features from scores").fetchall()
    expected = table["reason_features"].astype(object).where(table["error"].isna())
    assert [t for (t,) in texts] == [None if pd.isna(t) else t for t in expected]


def test_explain_parameters_are_checked():
    assert ScoreExplainParams().model_dump() == {"enabled": False, "top_k": 3}
    for bad in ({"top_k": 0}, {"top_k": 51}, {"enabled": True, "topk": 3}):
        with pytest.raises(ValueError, match="top_k|topk"):
            ScoreExplainParams(**bad)
