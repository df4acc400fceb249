"""The fit_transforms, preprocess and merge pipelines on an in-memory catalog."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro_datasets.json import JSONDataset

from tests.features.raw_builder import raw_frame, small_schema
from tsa_kedro.datasets import TensorChunksDataset
from tsa_kedro.features.tensors import TensorParams, build_tensors, prepare_transforms
from tsa_kedro.pipelines.fit_transforms import create_pipeline as fit_pipeline
from tsa_kedro.pipelines.merge import create_pipeline as merge_pipeline
from tsa_kedro.pipelines.preprocess import create_pipeline, create_split_pipelines

SCHEMA = small_schema()
SPLITS = ("train", "vali", "cali")
TRANSFORMS = ("cat_to_index", "scaling", "default_values")


def _raw(n: int, seed: int, vocabulary: str = "abcd") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    orders = []
    for i in range(n):
        past = [
            {
                "order_id": f"{seed}-{i}-{j}",
                "ts": 1_000 + 10 * j,
                "cat0": vocabulary[int(rng.integers(len(vocabulary)))],
                "cat1": "xy"[j % 2],
                "num0": float(rng.normal()),
                "num1": None if j % 3 == 0 else float(j),
            }
            for j in range(int(rng.integers(0, 7)))
        ]
        orders.append(
            {
                "order_id": f"{seed}-{i}",
                "ts": 2_000,
                "label": int(rng.random() < 0.25) if i % 9 else None,
                "values": {
                    "cat0": vocabulary[int(rng.integers(len(vocabulary)))],
                    "cat1": "xyz"[i % 3],
                    "num0": float(rng.normal()),
                    "num1": float(i),
                    "eng0": float(rng.random()),
                    "eng1": float(i % 4),
                },
                "history": {"cid": past, "ccid": past[-3:]},
            }
        )
    return raw_frame(orders, SCHEMA)


def _params(workers: int = 1) -> dict:
    return {
        "raw_schema": SCHEMA.to_params(),
        "fit_transforms": {"min_frequency": 1},
        "preprocess": {
            "seq_len": 5,
            "delta_cap_seconds": 1e7,
            "workers": workers,
            "downsample": {
                "train": {"target_positive_rate": 0.5, "seed": 3},
                "vali": {"target_positive_rate": None},
                "cali": {"target_positive_rate": None},
            },
        },
    }


def _catalog(tmp_path: Path, raw: dict[str, dict[str, pd.DataFrame]], workers: int = 1):
    catalog = DataCatalog()
    params = _params(workers)
    feed = {f"params:{k}": v for k, v in params.items()}
    for split, block in params["preprocess"]["downsample"].items():
        feed[f"params:preprocess.downsample.{split}"] = block
    catalog.add_feed_dict(feed)
    for split in SPLITS:
        catalog.add(
            f"{split}.raw_chunks", MemoryDataset(raw[split], copy_mode="assign")
        )
        # the merge consumes the report: kept on disk so the test can read it back
        catalog.add(
            f"{split}.preprocess_report",
            JSONDataset(filepath=str(tmp_path / split / "preprocess_report.json")),
        )
        catalog.add(
            f"{split}.tensor_chunks",
            TensorChunksDataset(
                path=str(tmp_path / split / "tensor_chunks"), overwrite=True
            ),
        )
    return catalog


def _run(catalog: DataCatalog, pipe) -> dict:
    """Fit first (its outputs are kept for the assertions), then run ``pipe``."""
    transforms = SequentialRunner().run(fit_pipeline(), catalog)
    assert set(transforms) == set(TRANSFORMS)
    catalog.add_feed_dict(transforms, replace=True)
    outputs = SequentialRunner().run(pipe, catalog)
    reports = {
        f"{split}.preprocess_report": catalog.load(f"{split}.preprocess_report")
        for split in SPLITS
        if catalog.exists(f"{split}.preprocess_report")
    }
    return {**outputs, **reports, **transforms}


def _raw_splits(vali_seed: int = 20) -> dict[str, dict[str, pd.DataFrame]]:
    return {
        "train": {"chunk-0": _raw(40, 1), "chunk-1": _raw(30, 2)},
        "vali": {
            "chunk-0": _raw(20, vali_seed, "abcdef"),
            "chunk-1": _raw(15, vali_seed + 1),
        },
        "cali": {"chunk-0": _raw(25, 30)},
    }


def test_whole_preprocessing_runs_and_matches_the_features(tmp_path: Path):
    raw = _raw_splits()
    catalog = _catalog(tmp_path, raw)
    outputs = _run(catalog, create_pipeline() + merge_pipeline())
    assert set(outputs) == {
        *TRANSFORMS,
        *(f"{s}.model_input" for s in SPLITS),
        *(f"{s}.preprocess_report" for s in SPLITS),
    }
    transforms = prepare_transforms(*(outputs[n] for n in TRANSFORMS), SCHEMA)
    expected, _ = build_tensors(
        pd.concat(raw["vali"].values()), SCHEMA, transforms, TensorParams(seq_len=5)
    )
    merged = outputs["vali.model_input"]
    for key, array in expected.items():
        np.testing.assert_array_equal(merged[key], array, key)

    train = outputs["train.model_input"]
    report = outputs["train.preprocess_report"]
    assert report["rows_in"] == 70
    assert report["rows_out"] == len(train["Y"])
    assert report["positive_rate_after_downsampling"] == pytest.approx(
        train["Y"].mean()
    )
    assert abs(report["positive_rate_after_downsampling"] - 0.5) < 0.1
    assert report["downsampled_negatives"] > 0
    vali_report = outputs["vali.preprocess_report"]
    assert vali_report["downsampled_negatives"] == 0
    assert vali_report["dropped"]["unlabelled"] == 3 + 2  # rows 0, 9, 18 and 0, 9
    assert vali_report["unseen_categories"]["cat0"]["unseen"] > 0  # "e", "f"
    assert report["unseen_categories"]["cat0"]["unseen"] == 0


def test_transforms_are_fitted_on_train_only(tmp_path: Path):
    def transforms(vali_seed: int):
        catalog = _catalog(tmp_path / str(vali_seed), _raw_splits(vali_seed))
        return _run(catalog, create_pipeline())

    first, second = transforms(20), transforms(99)
    for name in TRANSFORMS:
        assert first[name] == second[name], name
    assert (
        first["vali.model_input"]["order_id"].tolist()
        != second["vali.model_input"]["order_id"].tolist()
    )
    datasets = {i for i in fit_pipeline().inputs() if not i.startswith("params:")}
    assert datasets == {"train.raw_chunks"}


def test_split_pipelines_share_transforms_and_parameters():
    splits = create_split_pipelines()
    assert sorted(splits) == ["preprocess_cali", "preprocess_train", "preprocess_vali"]
    assert splits["preprocess_train"].outputs() == {"train.preprocess_report"}
    assert "train.tensor_chunks" in splits["preprocess_train"].all_outputs()
    assert merge_pipeline().outputs() == {"train.model_input"}
    assert merge_pipeline().inputs() == {
        "train.tensor_chunks",
        "cat_to_index",
        "params:raw_schema",
        "params:preprocess",
    }
    for split in ("vali", "cali"):
        pipe = splits[f"preprocess_{split}"]
        assert pipe.outputs() == {f"{split}.model_input", f"{split}.preprocess_report"}
        assert pipe.inputs() == {
            f"{split}.raw_chunks",
            "cat_to_index",
            "scaling",
            "default_values",
            "params:raw_schema",
            "params:preprocess",
            f"params:preprocess.downsample.{split}",
        }
    assert {n.name for n in create_pipeline().nodes} == {
        f"{s}.{n}"
        for s in SPLITS
        for n in ("build_tensor_chunks", "report_preprocessing", "merge_tensor_chunks")
    } - {"train.merge_tensor_chunks"}


@pytest.mark.slow
def test_worker_pool_gives_the_same_model_input(tmp_path: Path):
    raw = _raw_splits()
    vali = create_split_pipelines()["preprocess_vali"]
    serial = _run(_catalog(tmp_path / "serial", raw), vali)
    pooled = _run(_catalog(tmp_path / "pooled", raw, workers=2), vali)
    for key, array in serial["vali.model_input"].items():
        np.testing.assert_array_equal(pooled["vali.model_input"][key], array, key)
    reports = [serial["vali.preprocess_report"], pooled["vali.preprocess_report"]]
    for report in reports:  # worker timings differ, everything else must not
        for chunk in report["chunks"].values():
            assert chunk.pop("seconds") > 0
    assert reports[0] == reports[1]
