"""The real ``kedro`` CLI: synthetic -> ingest -> fit_transforms -> preprocess -> merge."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from tsa_kedro.datasets import TensorBundleDataset
from tsa_kedro.schema import RawSchema

SPLITS = ("train", "vali", "cali")
PROJECT_ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_cli_fits_preprocesses_and_merges(kedro_cli):
    kedro_cli(
        "run",
        "--pipeline=synthetic",
        "--params=synthetic_profiles.default.n_customers=150",
    )
    kedro_cli(
        "run",
        "--pipeline=ingest",
        "--params=ingest.chunk_size=400,ingest.ragged_tolerance=0.01",
    )
    kedro_cli("run", "--pipeline=fit_transforms")
    kedro_cli("run", "--pipeline=preprocess", "--params=preprocess.workers=2")
    kedro_cli("run", "--pipeline=merge")

    root = kedro_cli.data_root
    cat_to_index = json.loads((root / "04_feature" / "cat_to_index.json").read_text())
    vocab_size = 1 + max(i for v in cat_to_index.values() for i in v.values())
    params = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters.yml").read_text())
    schema = RawSchema.from_params(params["raw_schema"])
    for split in SPLITS:
        report = json.loads(
            (root / "08_reporting" / split / "preprocess_report.json").read_text()
        )
        raw_chunks = sorted((root / "02_intermediate" / split / "raw_chunks").iterdir())
        tensor_chunks = sorted(
            (root / "05_model_input" / split / "tensor_chunks").iterdir()
        )
        assert [c.name for c in tensor_chunks] == [c.stem for c in raw_chunks]
        bundle = TensorBundleDataset(
            filepath=str(root / "05_model_input" / split / "model_input")
        ).load()
        rows = len(bundle["Y"])
        assert rows == report["rows_out"] > 0
        assert bundle["X_seq_cat_cid"].shape == (rows, 32, len(schema.cat_features))
        assert bundle["X_seq_num_ccid"].shape == (
            rows,
            32,
            len(schema.num_features) + 2,
        )
        assert bundle["X_num"].shape == (rows, len(schema.eng_features))
        assert bundle["X_seq_cat_ccid"].max() < vocab_size
        assert np.isfinite(bundle["X_seq_num_cid"]).all()
        assert report["rows_in"] == sum(r["rows_in"] for r in report["chunks"].values())
    train = json.loads(
        (root / "08_reporting" / "train" / "preprocess_report.json").read_text()
    )
    assert train["downsampled_negatives"] > 0
    assert (
        train["positive_rate_after_downsampling"]
        > train["positive_rate_before_downsampling"]
    )

    (root / "05_model_input" / "vali" / "model_input" / "manifest.json").unlink()
    kedro_cli("run", "--pipeline=preprocess", "--namespace=vali")
    assert TensorBundleDataset(
        filepath=str(root / "05_model_input" / "vali" / "model_input")
    ).exists()
