"""The tensor chunk build on several hosts of one SageMaker step: each host builds its
share of the raw chunks into the same location, and the committed dataset is the
one-host dataset, file for file."""

from __future__ import annotations

import json
from io import BytesIO
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pytest
from kedro.io.core import DatasetError

from tests.pipelines.preprocess.test_pipeline import _params, _raw
from tsa_kedro.datasets import TensorChunksDataset
from tsa_kedro.datasets.tensor_chunks import PARTS
from tsa_kedro.hosts import RESOURCE_CONFIG_VARIABLE
from tsa_kedro.pipelines.fit_transforms.nodes import fit_preprocessing_transforms
from tsa_kedro.pipelines.preprocess.nodes import (
    HostShareError,
    build_tensor_chunks,
    merge_tensor_chunks,
    report_preprocessing,
)

HOSTS = ["algo-1", "algo-2"]
JOB = "arn:aws:sagemaker:eu-west-1:1:processing-job/train-build-tensor-chunks-"
# what a chunk's statistics say about the process that built it, not about the chunk
VOLATILE = {"seconds", "worker"}


@pytest.fixture(scope="module")
def raw_chunks() -> dict[str, pd.DataFrame]:
    """Five training chunks (downsampled: each chunk's seed comes from its id)."""
    return {f"chunk-{i}": _raw(12 + 3 * i, 40 + i) for i in range(5)}


@pytest.fixture(scope="module")
def transforms(raw_chunks) -> dict:
    params = _params()
    cat_to_index, scaling, default_values = fit_preprocessing_transforms(
        raw_chunks, params["raw_schema"], params["fit_transforms"]
    )
    return {
        "cat_to_index": cat_to_index,
        "scaling": scaling,
        "default_values": default_values,
    }


def _on_host(tmp_path: Path, monkeypatch, host: str | None, hosts=HOSTS, job="1"):
    """Make this process one of ``hosts`` of processing job ``job`` (None: a run
    without SageMaker's host list)."""
    folder = tmp_path / "config" / f"{job}-{host}"
    folder.mkdir(parents=True, exist_ok=True)
    if host is not None:
        (folder / "resourceconfig.json").write_text(
            json.dumps({"current_host": host, "hosts": hosts})
        )
        (folder / "processingjobconfig.json").write_text(
            json.dumps({"ProcessingJobArn": JOB + job})
        )
    monkeypatch.setenv(RESOURCE_CONFIG_VARIABLE, str(folder / "resourceconfig.json"))


def _build(raw: dict, transforms: dict, location: str) -> None:
    params = _params()
    bundles = build_tensor_chunks(
        raw_chunks=raw,
        **transforms,
        raw_schema=params["raw_schema"],
        preprocess=params["preprocess"],
        downsample=params["preprocess"]["downsample"]["train"],
    )
    TensorChunksDataset(path=location, overwrite=True).save(bundles)


def _contents(location: str) -> dict[str, object]:
    """Every file under ``location`` by relative path: bytes, except what records the
    building process (timings, process ids) in the chunk statistics."""
    fs, root = fsspec.core.url_to_fs(location)
    contents = {}
    for path in fs.find(root):
        name = path[len(root) :].lstrip("/")
        data = fs.cat_file(path)
        if name.endswith("/manifest.json"):
            manifest = json.loads(data)
            del manifest["arrays"]["stats_json"]
            data = manifest
        elif name.endswith("/stats_json.npy"):
            stats = json.loads(str(np.load(BytesIO(data))[()]))
            data = {k: v for k, v in stats.items() if k not in VOLATILE}
        contents[name] = data
    return contents


def _model_input(location: str, transforms: dict) -> tuple[dict, dict]:
    """What the report and merge nodes make of the committed chunks."""
    params = _params()
    chunks = TensorChunksDataset(path=location).load()
    report = report_preprocessing(chunks)
    for chunk in report["chunks"].values():
        del chunk["seconds"]
    merged = merge_tensor_chunks(
        chunks, transforms["cat_to_index"], params["raw_schema"], params["preprocess"]
    )
    return report, {name: np.asarray(array) for name, array in merged.items()}


def _check_sharded_build(raw_chunks, transforms, root: str, tmp_path, monkeypatch):
    single, sharded = f"{root}/single", f"{root}/sharded"
    _on_host(tmp_path, monkeypatch, None)
    _build(raw_chunks, transforms, single)
    # an earlier build with another chunk set: the sharded build replaces it
    _build({**raw_chunks, "chunk-9": _raw(5, 9)}, transforms, sharded)

    _on_host(tmp_path, monkeypatch, "algo-2")
    _build(raw_chunks, transforms, sharded)
    with pytest.raises(DatasetError, match=r"parts of hosts \['algo-2'\]"):
        TensorChunksDataset(path=sharded).load()  # nothing visible before algo-1
    _on_host(tmp_path, monkeypatch, "algo-1")
    _build(raw_chunks, transforms, sharded)

    assert sorted(TensorChunksDataset(path=sharded).load()) == sorted(raw_chunks)
    one, two = _contents(single), _contents(sharded)
    assert not any(PARTS in name or "chunk-9" in name for name in two)
    assert sorted(one) == sorted(two)
    assert one == two
    report_one, input_one = _model_input(single, transforms)
    report_two, input_two = _model_input(sharded, transforms)
    assert report_one == report_two
    assert report_two["downsampled_negatives"] > 0
    assert input_one.keys() == input_two.keys()
    for name, array in input_one.items():
        assert array.dtype == input_two[name].dtype
        assert array.tobytes() == input_two[name].tobytes(), name


def test_two_hosts_commit_the_one_host_dataset(
    raw_chunks, transforms, tmp_path: Path, monkeypatch
):
    _check_sharded_build(
        raw_chunks, transforms, str(tmp_path / "data"), tmp_path, monkeypatch
    )


@pytest.mark.slow
def test_two_hosts_commit_the_one_host_dataset_on_s3(
    raw_chunks, transforms, s3_bucket: str, tmp_path: Path, monkeypatch
):
    _check_sharded_build(
        raw_chunks, transforms, f"s3://{s3_bucket}/tensor_chunks", tmp_path, monkeypatch
    )


def _failing(chunk_id: str):
    def load() -> pd.DataFrame:
        raise OSError(f"cannot read {chunk_id}")

    return load


def test_a_failed_host_leaves_no_result_and_a_rerun_commits(
    raw_chunks, transforms, tmp_path: Path, monkeypatch
):
    location = str(tmp_path / "sharded")
    _on_host(tmp_path, monkeypatch, None)
    _build(raw_chunks, transforms, location)  # an earlier, complete result
    single = _contents(location)

    _on_host(tmp_path, monkeypatch, "algo-1", job="2")
    _build(raw_chunks, transforms, location)
    _on_host(tmp_path, monkeypatch, "algo-2", job="2")
    broken = {**raw_chunks, "chunk-3": _failing("chunk-3")}  # algo-2's chunk
    with pytest.raises(DatasetError, match="chunk .chunk-3.: OSError: cannot read"):
        _build(broken, transforms, location)
    assert not [p for p in Path(location).rglob("manifest.json")]
    with pytest.raises(DatasetError, match=r"parts of hosts \['algo-1'\].*rerun"):
        TensorChunksDataset(path=location).load()

    # the retry is a new job: algo-2 finishing first must not commit job 2's part
    _on_host(tmp_path, monkeypatch, "algo-2", job="3")
    _build(raw_chunks, transforms, location)
    assert not [p for p in Path(location).rglob("manifest.json")]
    _on_host(tmp_path, monkeypatch, "algo-1", job="3")
    _build(raw_chunks, transforms, location)
    assert _contents(location) == single


def test_more_hosts_than_chunks_is_refused(
    raw_chunks, transforms, tmp_path: Path, monkeypatch
):
    hosts = [f"algo-{i}" for i in range(1, 7)]
    _on_host(tmp_path, monkeypatch, "algo-6", hosts=hosts)
    with pytest.raises(
        HostShareError,
        match=r"host algo-6 \(6 of 6\).*5 chunks.*instance_count.*at most 5",
    ):
        _build(raw_chunks, transforms, str(tmp_path / "sharded"))


def test_a_host_without_the_job_description_stages_nothing(
    raw_chunks, transforms, tmp_path: Path, monkeypatch
):
    _on_host(tmp_path, monkeypatch, "algo-1")
    config = Path(tmp_path / "config" / "1-algo-1" / "processingjobconfig.json")
    config.unlink()
    with pytest.raises(DatasetError, match="cannot read .*processingjobconfig.json"):
        _build(raw_chunks, transforms, str(tmp_path / "sharded"))
    assert not (tmp_path / "sharded").exists()


def test_a_commit_that_stops_half_way_is_not_a_result(
    raw_chunks, transforms, tmp_path: Path, monkeypatch
):
    location = tmp_path / "sharded"
    _on_host(tmp_path, monkeypatch, "algo-1")
    _build(raw_chunks, transforms, str(location))
    part = json.loads((location / PARTS / "algo-1.json").read_text())
    lost = Path(part["chunks"]["chunk-2"]["location"])
    for path in lost.iterdir():  # algo-1's staged chunk-2 is lost before the commit
        path.unlink()
    lost.rmdir()
    _on_host(tmp_path, monkeypatch, "algo-2")
    with pytest.raises(DatasetError, match="chunk-2"):
        _build(raw_chunks, transforms, str(location))
    committed = sorted(p.parent.name for p in location.rglob("manifest.json"))
    assert committed == ["chunk-0", "chunk-1"]
    with pytest.raises(DatasetError, match=r"not committed.*\['algo-1', 'algo-2'\]"):
        TensorChunksDataset(path=str(location)).load()
