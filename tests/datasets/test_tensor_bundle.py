"""TensorBundleDataset: round trips locally and on S3 (moto), errors on bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import s3fs
from kedro.io import DatasetError
from kedro_datasets.partitions import PartitionedDataset

from tsa_kedro.datasets import TensorBundleDataset


def _bundle(rows: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(rows)
    return {
        "X_seq_cat_cid": rng.integers(0, 9, (rows, 4, 2)).astype(np.int32),
        "X_seq_num_cid": rng.random((rows, 4, 3)).astype(np.float32),
        "Y": (rng.random(rows) < 0.5).astype(np.int8),
        "order_id": np.array([f"order-{i}" for i in range(rows)]),
    }


def _assert_same(loaded, expected):
    assert sorted(loaded) == sorted(expected)
    for key, array in expected.items():
        assert loaded[key].dtype == array.dtype, key
        np.testing.assert_array_equal(loaded[key], array, key)


def test_local_round_trip_memory_maps(tmp_path: Path):
    dataset = TensorBundleDataset(filepath=str(tmp_path / "bundle"))
    assert not dataset.exists()
    dataset.save(_bundle())
    assert dataset.exists()
    loaded = dataset.load()
    _assert_same(loaded, _bundle())
    assert isinstance(loaded["X_seq_num_cid"], np.memmap)
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert manifest["arrays"]["Y"]["shape"] == [3]
    assert len(manifest["arrays"]["Y"]["sha256"]) == 64
    in_memory = TensorBundleDataset(
        filepath=str(tmp_path / "bundle"), load_args={"mmap_mode": None}
    ).load()
    assert not isinstance(in_memory["X_seq_num_cid"], np.memmap)


def test_overwrite_replaces_the_whole_bundle(tmp_path: Path):
    dataset = TensorBundleDataset(filepath=str(tmp_path / "bundle"))
    dataset.save(_bundle(3))
    dataset.save({"Y": np.zeros(0, np.int8)})
    assert sorted(p.name for p in (tmp_path / "bundle").iterdir()) == [
        "Y.npy",
        "manifest.json",
    ]
    assert dataset.load()["Y"].shape == (0,)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_manifest_path_names_the_same_bundle(tmp_path: Path):
    TensorBundleDataset(filepath=str(tmp_path / "b")).save(_bundle())
    loaded = TensorBundleDataset(filepath=str(tmp_path / "b" / "manifest.json")).load()
    _assert_same(loaded, _bundle())


def test_missing_and_corrupt_manifest(tmp_path: Path):
    dataset = TensorBundleDataset(filepath=str(tmp_path / "b"))
    with pytest.raises(DatasetError, match="manifest.json is missing"):
        dataset.load()
    dataset.save(_bundle())
    (tmp_path / "b" / "manifest.json").write_text("{not json")
    with pytest.raises(
        DatasetError, match=r"corrupt tensor bundle manifest .*manifest\.json"
    ):
        dataset.load()
    (tmp_path / "b" / "manifest.json").write_text(
        json.dumps(
            {
                "format": "tsa-tensor-bundle",
                "arrays": {"Y": {"file": "../x.npy", "dtype": "|i1", "shape": [3]}},
            }
        )
    )
    with pytest.raises(DatasetError, match="bad entry for array 'Y'"):
        dataset.load()


def test_dtype_shape_and_checksum_mismatches_name_the_file(tmp_path: Path):
    dataset = TensorBundleDataset(filepath=str(tmp_path / "b"))
    dataset.save(_bundle())
    np.save(tmp_path / "b" / "Y.npy", np.zeros(3, np.int32))
    with pytest.raises(
        DatasetError, match=r"Y\.npy holds dtype int32, manifest says \|i1"
    ):
        dataset.load()["Y"]
    np.save(tmp_path / "b" / "Y.npy", np.zeros(4, np.int8))
    with pytest.raises(DatasetError, match=r"Y\.npy has shape \[4\]"):
        dataset.load()["Y"]
    np.save(tmp_path / "b" / "Y.npy", np.ones(3, np.int8))
    assert dataset.load()["Y"].sum() == 3  # checksums are opt-in on load
    verifying = TensorBundleDataset(
        filepath=str(tmp_path / "b"), load_args={"verify_checksums": True}
    )
    with pytest.raises(DatasetError, match=r"checksum mismatch .*Y\.npy"):
        verifying.load()["Y"]
    (tmp_path / "b" / "Y.npy").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match=r"cannot read .*Y\.npy"):
        dataset.load()["Y"]


def test_pickle_and_odd_names_are_rejected(tmp_path: Path):
    dataset = TensorBundleDataset(filepath=str(tmp_path / "b"))
    with pytest.raises(DatasetError, match="dtype object"):
        dataset.save({"o": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(DatasetError, match="not a plain file name"):
        dataset.save({"../evil": np.zeros(1)})
    assert not (tmp_path / "b").exists()
    with pytest.raises(DatasetError, match="unknown arguments"):
        TensorBundleDataset(
            filepath=str(tmp_path / "b"), load_args={"allow_pickle": True}
        )


def test_partitioned_dataset_of_bundles_lists_only_finished_chunks(tmp_path: Path):
    chunks = PartitionedDataset(
        path=str(tmp_path / "chunks"),
        dataset="tsa_kedro.datasets.TensorBundleDataset",
        filename_suffix="/manifest.json",
        overwrite=True,
    )
    chunks.save({"chunk-0": _bundle(2), "chunk-1": lambda: _bundle(5)})
    (tmp_path / "chunks" / "chunk-2").mkdir()  # an unfinished save: no manifest
    np.save(tmp_path / "chunks" / "chunk-2" / "Y.npy", np.zeros(1))
    fresh = PartitionedDataset(
        path=str(tmp_path / "chunks"),
        dataset="tsa_kedro.datasets.TensorBundleDataset",
        filename_suffix="/manifest.json",
    )
    loaded = fresh.load()
    assert sorted(loaded) == ["chunk-0", "chunk-1"]
    _assert_same(loaded["chunk-1"](), _bundle(5))


def test_s3_round_trip_and_partitions(s3_bucket: str):
    url = f"s3://{s3_bucket}/model_input/train"
    dataset = TensorBundleDataset(filepath=url)
    assert not dataset.exists()
    dataset.save(_bundle(4))
    assert dataset.exists()
    _assert_same(dataset.load(), _bundle(4))
    dataset.save({"Y": np.ones(2, np.int8)})
    fs = s3fs.S3FileSystem()
    fs.invalidate_cache()
    assert sorted(Path(p).name for p in fs.find(f"{s3_bucket}/model_input/train")) == [
        "Y.npy",
        "manifest.json",
    ]
    verifying = TensorBundleDataset(filepath=url, load_args={"verify_checksums": True})
    _assert_same(verifying.load(), {"Y": np.ones(2, np.int8)})

    chunks = PartitionedDataset(
        path=f"s3://{s3_bucket}/chunks",
        dataset="tsa_kedro.datasets.TensorBundleDataset",
        filename_suffix="/manifest.json",
        overwrite=True,
    )
    chunks.save({"a": _bundle(1), "b": _bundle(3)})
    fs.pipe(f"{s3_bucket}/chunks/c/Y.npy", b"half-written")  # no manifest
    listed = PartitionedDataset(
        path=f"s3://{s3_bucket}/chunks",
        dataset="tsa_kedro.datasets.TensorBundleDataset",
        filename_suffix="/manifest.json",
    ).load()
    assert sorted(listed) == ["a", "b"]
    _assert_same(listed["b"](), _bundle(3))


def test_s3_dtype_mismatch_names_the_object(s3_bucket: str):
    url = f"s3://{s3_bucket}/bundle"
    dataset = TensorBundleDataset(filepath=url)
    dataset.save(_bundle(2))
    fs = s3fs.S3FileSystem()
    with fs.open(f"{s3_bucket}/bundle/Y.npy", "wb") as stream:
        np.save(stream, np.zeros(2, np.float64))
    with pytest.raises(
        DatasetError, match=rf"{s3_bucket}/bundle/Y\.npy holds dtype float64"
    ):
        TensorBundleDataset(filepath=url).load()["Y"]


def test_staged_arrays_are_invisible_until_committed(tmp_path: Path):
    target = tmp_path / "chunks" / "a"
    dataset = TensorBundleDataset(filepath=str(target))
    dataset.save(_bundle(2))
    staged = dataset.stage(_bundle(3), info={"rows": 3})
    assert staged.shapes["Y"] == [3] and staged.info == {"rows": 3}
    _assert_same(dataset.load(), _bundle(2))  # the old bundle is still what loads
    dataset.save(staged)
    _assert_same(dataset.load(), _bundle(3))
    assert sorted(p.name for p in target.parent.iterdir()) == ["a"]

    discarded = dataset.stage(_bundle(4))
    dataset.discard(discarded)
    assert sorted(p.name for p in target.parent.iterdir()) == ["a"]
    elsewhere = TensorBundleDataset(filepath=str(tmp_path / "chunks" / "b"))
    with pytest.raises(DatasetError, match=r"staged for .*/a cannot be saved to"):
        elsewhere.save(dataset.stage(_bundle(1)))
    assert sorted(p.name for p in target.parent.iterdir()) == ["a"]


def test_s3_staging_deletes_the_manifest_first_and_discards(s3_bucket: str):
    url = f"s3://{s3_bucket}/chunks/a"
    dataset = TensorBundleDataset(filepath=url)
    dataset.save(_bundle(2))
    staged = dataset.stage(_bundle(3))
    assert not dataset.exists()  # never old manifest over new arrays
    dataset.save(staged)
    _assert_same(dataset.load(), _bundle(3))
    dataset.discard(dataset.stage(_bundle(4)))
    fs = s3fs.S3FileSystem()
    fs.invalidate_cache()
    assert not fs.exists(f"{s3_bucket}/chunks/a")
