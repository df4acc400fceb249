"""The score nodes in process: model sources, rejected inputs, the DuckDB table."""

from __future__ import annotations

import json
import pickle
import shutil

import duckdb
import pandas as pd
import pytest
from kedro.io.core import DatasetError

from tests.pipelines.score.conftest import production_quirks
from tsa_kedro.datasets.duckdb_table import DuckDBTableDataset
from tsa_kedro.datasets.raw_export import RawExportDataset
from tsa_kedro.pipelines.score.model_source import ModelSourceError
from tsa_kedro.pipelines.score.nodes import ScoreInputError, load_model, score_orders
from tsa_kedro.registry.mlflow_registry import register_package
from tsa_kedro.serving.handler import TSAPredictor

SCORE = {"model": "", "tracking_uri": None, "batch_orders": 20, "device": "cpu"}


def _load(model: str, tracking_uri: str = "sqlite:///unused.db"):
    return load_model({**SCORE, "model": model}, {"tracking_uri": tracking_uri})


def _partitions(*frames: pd.DataFrame) -> dict:
    return {f"part-{i:05d}": (lambda f=f: f) for i, f in enumerate(frames)}


@pytest.fixture(scope="module")
def archive_model(model_archive):
    return _load(str(model_archive))


def test_registry_versions_by_alias_and_number(tiny_package, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/registry/mlflow.db"
    for _ in range(2):
        registered = register_package(
            tiny_package[0],
            model_name="tsa-fraud",
            tracking_uri=uri,
            experiment_name="tsa_kedro",
            artifact_location=str(tmp_path / "artifacts"),
            tags={},
            metrics={},
            extra_files={},
            description="test",
            alias="candidate",
        )
    assert registered["version"] == "2"
    by_alias = _load("models:/tsa-fraud@candidate", uri)
    assert (by_alias.name, by_alias.version) == ("tsa-fraud", "2")
    by_number = _load("models:/tsa-fraud/1", uri)
    assert (by_number.name, by_number.version) == ("tsa-fraud", "1")
    with pytest.raises(ModelSourceError, match="score.model.*not a model version"):
        _load("models:/tsa-fraud@champion", uri)
    with pytest.raises(ModelSourceError, match="is not models:/<name>@<alias>"):
        _load("models:/tsa-fraud", uri)


def test_archive_folder_and_unpacked_bundle(model_archive, model_dir, archive_model):
    assert archive_model.name == "model.tar.gz"
    assert archive_model.version.startswith("sha256:")
    from_folder = _load(str(model_archive.parent))
    assert from_folder.version == archive_model.version
    unpacked = _load(str(model_dir))
    assert unpacked.name == model_dir.name
    assert unpacked.version.startswith("sha256:")


def test_unusable_models_are_refused(model_archive, model_dir, tmp_path):
    with pytest.raises(ModelSourceError, match="score.model.*does not exist"):
        _load(str(tmp_path / "missing.tar.gz"))
    corrupt = tmp_path / "model.tar.gz"
    corrupt.write_bytes(model_archive.read_bytes()[:200])
    with pytest.raises(ModelSourceError, match="not a readable model archive"):
        _load(str(corrupt))
    altered = tmp_path / "altered"
    shutil.copytree(model_dir, altered)
    percentile_map = altered / "percentile_map.json"
    values = json.loads(percentile_map.read_text())
    values[0][1] = values[0][1] + 1.0
    percentile_map.write_text(json.dumps(values))
    with pytest.raises(ModelSourceError, match="not an intact model bundle.*sha256"):
        _load(str(altered))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelSourceError, match="without manifest.json"):
        _load(str(empty))


def test_every_order_gets_one_row(tiny_model, model_dir, archive_model):
    raw, rejected = production_quirks(tiny_model.raw_cali)
    parts, table, summary = score_orders(
        _partitions(raw.iloc[:45], raw.iloc[45:]), archive_model, SCORE
    )
    assert list(parts) == [f"batch-{i:05d}" for i in range(4)]  # 20, 20, 5, 15
    assert [len(p) for p in parts.values()] == [20, 20, 5, 15]
    assert table["order_id"].tolist() == raw["order_id"].tolist()
    expected = TSAPredictor.from_model_dir(model_dir, device="cpu").predict_frame(raw)
    pd.testing.assert_series_equal(table["score"], expected["score"], atol=1e-6)
    assert table.loc[table["order_id"] == rejected, "error"].item() == (
        "order rejected by preprocessing: negative_delta_cid"
    )
    assert summary["rows_in"] == summary["rows_out"] == len(raw)
    assert summary["files"] == {"part-00000": 45, "part-00001": 15}


def test_rejected_inputs_name_the_file(tiny_model, archive_model, tmp_path):
    raw, _ = production_quirks(tiny_model.raw_cali)
    with pytest.raises(ScoreInputError, match="file part-00001.*cid_hist_ts"):
        score_orders(
            _partitions(raw.iloc[:10], raw.iloc[10:20].drop(columns="cid_hist_ts")),
            archive_model,
            SCORE,
        )
    with pytest.raises(ScoreInputError, match="holds no orders"):
        score_orders(_partitions(raw.iloc[:0]), archive_model, SCORE)
    with pytest.raises(ScoreInputError, match="repeat across the files"):
        score_orders(_partitions(raw.iloc[:10], raw.iloc[5:15]), archive_model, SCORE)
    with pytest.raises(ScoreInputError, match="part-00000.*repeat"):
        score_orders(_partitions(pd.concat([raw.iloc[:3]] * 2)), archive_model, SCORE)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty"):
        RawExportDataset(
            path=str(tmp_path / "empty"), dataset="pandas.CSVDataset"
        ).load()


def _rows(version: str, ids: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "order_id": pd.array(ids, dtype="string"),
            "score": [0.5] * len(ids),
            "model_name": pd.array(["m"] * len(ids), dtype="string"),
            "model_version": pd.array([version] * len(ids), dtype="string"),
        }
    )


def test_duckdb_table_write_modes(tmp_path):
    path = tmp_path / "db" / "scores.duckdb"
    table = DuckDBTableDataset(
        filepath=str(path),
        table="scores",
        write_mode="replace_matching",
        match_columns=["model_name", "model_version"],
    )
    assert not table.exists()
    table.save(_rows("1", ["a", "b"]))
    table.save(_rows("2", ["a"]))
    table.save(_rows("1", ["c"]))
    with duckdb.connect(str(path), read_only=True) as con:
        rows = con.execute(
            "select model_version, order_id from scores order by all"
        ).fetchall()
    assert rows == [("1", "c"), ("2", "a")]
    with pytest.raises(DatasetError, match="no column.*'extra'"):
        table.save(_rows("3", ["d"]).assign(extra=1))
    assert len(table.load()) == 2  # the refused save changed nothing
    appending = DuckDBTableDataset(filepath=str(path), table="scores")
    appending.save(_rows("1", ["c"]))
    assert len(appending.load()) == 3
    DuckDBTableDataset(filepath=str(path), table="scores", write_mode="replace").save(
        _rows("4", ["e"])
    )
    assert table.load()["order_id"].tolist() == ["e"]
    with pytest.raises(DatasetError, match="write_mode 'upsert'"):
        DuckDBTableDataset(filepath=str(path), table="scores", write_mode="upsert")


def test_a_pickled_model_is_its_source_and_loads_again(tiny_model, archive_model):
    """What a SageMaker step hands to the next: the source, not weights or an ONNX
    Runtime session; the copy scores exactly like the original."""
    blob = pickle.dumps(archive_model)
    assert len(blob) < 2_000  # a reference, not the model
    copy = pickle.loads(blob)
    assert (copy.name, copy.version) == (archive_model.name, archive_model.version)
    orders = tiny_model.raw_cali.iloc[:30]
    pd.testing.assert_frame_equal(
        copy.predictor.predict_frame(orders),
        archive_model.predictor.predict_frame(orders),
    )
