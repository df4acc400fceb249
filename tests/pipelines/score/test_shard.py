"""Scoring on several hosts: each host scores its own export files, and the hosts'
outputs together are the one-host output."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tsa_kedro.datasets.raw_export import RawExportDataset
from tsa_kedro.datasets.sagemaker_steps import (
    ExecutionPickleDataset,
    PerHostJSONDataset,
)
from tsa_kedro.hosts import (
    RESOURCE_CONFIG_VARIABLE,
    ShardConfigError,
    current_job,
    current_shard,
    shard_keys,
)
from tsa_kedro.pipelines.score.nodes import ScoreInputError, load_model, score_orders

SCORE = {"model": "", "tracking_uri": None, "batch_orders": 7, "device": "cpu"}
KEYS = [f"part-{i:05d}.parquet" for i in range(7)]


@pytest.mark.parametrize("count", [1, 2, 3, 7, 9])
def test_shards_are_disjoint_and_cover_every_key(count: int):
    shards = [shard_keys(reversed(KEYS), rank, count) for rank in range(count)]
    flat = [key for shard in shards for key in shard]
    assert sorted(flat) == KEYS
    assert len(flat) == len(set(flat))
    assert shards[0][0] == KEYS[0]
    if count == 2:
        assert shards == [KEYS[0::2], KEYS[1::2]]


@pytest.mark.parametrize(("rank", "count"), [(0, 0), (2, 2), (-1, 2)])
def test_a_shard_outside_the_hosts_is_refused(rank: int, count: int):
    with pytest.raises(ValueError, match=f"no shard {rank} of {count} hosts"):
        shard_keys(KEYS, rank, count)


def _resource_config(folder: Path, current: str, hosts: list) -> Path:
    path = folder / f"resourceconfig-{current}.json"
    path.write_text(json.dumps({"current_host": current, "hosts": hosts}))
    return path


def test_the_host_list_decides_the_shard(tmp_path: Path):
    assert not current_shard(tmp_path / "missing.json").sharded
    one = current_shard(_resource_config(tmp_path, "algo-1", ["algo-1"]))
    assert (one.sharded, one.partition_name(3)) == (False, "batch-00003")
    second = current_shard(_resource_config(tmp_path, "algo-2", ["algo-1", "algo-2"]))
    assert (second.rank, second.count) == (1, 2)
    assert second.partition_name(3) == "algo-2-batch-00003"
    assert second.file_name("out/score_summary.json") == (
        "out/score_summary-algo-2.json"
    )
    with pytest.raises(ShardConfigError, match="`current_host` 'algo-3'"):
        current_shard(_resource_config(tmp_path, "algo-3", ["algo-1", "algo-2"]))
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ShardConfigError, match="broken.json"):
        current_shard(broken)


def test_the_job_description_names_the_job(tmp_path: Path):
    hosts = tmp_path / "resourceconfig.json"  # the job's file is read beside it
    job = tmp_path / "processingjobconfig.json"
    arn = "arn:aws:sagemaker:eu-west-1:1:processing-job/build-1"
    job.write_text(json.dumps({"ProcessingJobArn": arn, "Environment": {}}))
    assert current_job(hosts) == arn
    job.write_text(json.dumps({"ProcessingJobName": "build-1"}))
    with pytest.raises(ShardConfigError, match="no `ProcessingJobArn`"):
        current_job(hosts)
    job.unlink()
    with pytest.raises(ShardConfigError, match="processingjobconfig.json"):
        current_job(hosts)


@pytest.fixture(scope="module")
def split_export(score_export, tmp_path_factory) -> Path:
    """The score export's orders in four Parquet files."""
    _, raw, _ = score_export
    folder = tmp_path_factory.mktemp("split") / "orders"
    folder.mkdir()
    for index, part in enumerate(range(0, len(raw), len(raw) // 4 + 1)):
        chunk = raw.iloc[part : part + len(raw) // 4 + 1]
        chunk.to_parquet(folder / f"part-{index:05d}.parquet", index=False)
    return folder


def _score(export: Path, model) -> tuple:
    orders = RawExportDataset(path=str(export), dataset="pandas.ParquetDataset").load()
    return score_orders(orders, model, SCORE)


def _rows(table: pd.DataFrame) -> pd.DataFrame:
    columns = ["order_id", "score", "calibrated_probability", "percentile", "error"]
    return table[columns].sort_values("order_id").reset_index(drop=True)


def test_two_hosts_score_the_one_host_output_between_them(
    split_export: Path,
    model_archive: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    model = load_model({**SCORE, "model": str(model_archive)}, {"tracking_uri": ""})
    monkeypatch.setenv(RESOURCE_CONFIG_VARIABLE, str(tmp_path / "none.json"))
    single_parts, single_table, single_summary = _score(split_export, model)
    assert set(single_parts) == {f"batch-{i:05d}" for i in range(len(single_parts))}
    assert "host" not in single_summary

    hosts = ["algo-1", "algo-2"]
    outputs = {}
    for host in hosts:
        config = _resource_config(tmp_path, host, hosts)
        monkeypatch.setenv(RESOURCE_CONFIG_VARIABLE, str(config))
        outputs[host] = _score(split_export, model)

    (parts_1, table_1, summary_1), (parts_2, table_2, summary_2) = outputs.values()
    assert all(name.startswith("algo-1-batch-") for name in parts_1)
    assert all(name.startswith("algo-2-batch-") for name in parts_2)
    assert set(summary_1["files"]) == {"part-00000", "part-00002"}
    assert set(summary_2["files"]) == {"part-00001", "part-00003"}
    assert summary_2["host"] == {"name": "algo-2", "rank": 1, "of": 2}
    assert not set(table_1["order_id"]) & set(table_2["order_id"])
    union = pd.concat([*parts_1.values(), *parts_2.values()], ignore_index=True)
    pd.testing.assert_frame_equal(_rows(union), _rows(single_table))
    assert summary_1["rows_in"] + summary_2["rows_in"] == single_summary["rows_in"]
    assert summary_1["rejected"] + summary_2["rejected"] == single_summary["rejected"]


def test_a_host_without_files_is_named(
    split_export: Path,
    model_archive: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    model = load_model({**SCORE, "model": str(model_archive)}, {"tracking_uri": ""})
    hosts = [f"algo-{i}" for i in range(1, 6)]
    monkeypatch.setenv(
        RESOURCE_CONFIG_VARIABLE, str(_resource_config(tmp_path, "algo-5", hosts))
    )
    with pytest.raises(ScoreInputError, match=r"host algo-5 \(5 of 5\).*files: 4"):
        _score(split_export, model)


def test_the_sagemaker_datasets_of_a_host(tmp_path: Path, monkeypatch):
    hosts = ["algo-1", "algo-2"]
    monkeypatch.setenv(
        RESOURCE_CONFIG_VARIABLE, str(_resource_config(tmp_path, "algo-2", hosts))
    )
    summary = PerHostJSONDataset(filepath=str(tmp_path / "score_summary.json"))
    summary.save({"rows_in": 3})
    assert json.loads((tmp_path / "score_summary-algo-2.json").read_text()) == {
        "rows_in": 3
    }
    monkeypatch.delenv(RESOURCE_CONFIG_VARIABLE)
    monkeypatch.setenv(
        "KEDRO_SAGEMAKER_EXECUTION_ARN",
        "arn:aws:sagemaker:us-east-1:1:pipeline/tsa-kedro/execution/abc123",
    )
    handed = ExecutionPickleDataset(str(tmp_path / "steps"), "score_model")
    handed.save({"model": [1, 2]})
    assert (tmp_path / "steps/pipeline/tsa-kedro/execution/abc123").is_dir()
    assert ExecutionPickleDataset(str(tmp_path / "steps"), "score_model").load() == {
        "model": [1, 2]
    }
