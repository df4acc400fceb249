"""fit_transforms, preprocess and merge in the s3 environment, against the moto server."""

from __future__ import annotations

import json

import numpy as np
import pytest
import s3fs

from tests.raw_data import base_schema, tiny_orders
from tsa_kedro.datasets import TensorBundleDataset
from tsa_kedro.synthetic import partition_orders

PREFIX = "teams/fraud/data"


@pytest.mark.slow
def test_preprocessing_reads_and_writes_the_bucket(kedro_cli, s3_bucket, aws_env):
    fs = s3fs.S3FileSystem()
    for key, frame in partition_orders(tiny_orders(), base_schema(), "month").items():
        with fs.open(f"{s3_bucket}/{PREFIX}/01_raw/orders/{key}.parquet", "wb") as out:
            frame.to_parquet(out)
    env = {**aws_env, "TSA_S3_BUCKET": s3_bucket, "TSA_S3_PREFIX": PREFIX}
    for pipeline, params in (
        ("ingest", "ingest.chunk_size=600"),
        ("fit_transforms", None),
        ("preprocess", "preprocess.workers=1"),
        ("merge", None),
    ):
        args = ["run", "-e", "s3", f"--pipeline={pipeline}"]
        kedro_cli(*args, *([f"--params={params}"] if params else []), env=env)

    fs.invalidate_cache()
    root = f"s3://{s3_bucket}/{PREFIX}"
    assert fs.exists(f"{root}/04_feature/cat_to_index.json")
    for split in ("train", "vali", "cali"):
        report = json.loads(
            fs.cat(f"{root}/08_reporting/{split}/preprocess_report.json")
        )
        chunks = fs.ls(f"{root}/05_model_input/{split}/tensor_chunks")
        assert len(chunks) == len(report["chunks"]) > 0
        bundle = TensorBundleDataset(
            filepath=f"{root}/05_model_input/{split}/model_input",
            load_args={"verify_checksums": True},
        ).load()
        assert len(bundle["Y"]) == report["rows_out"] > 0
        assert np.isfinite(bundle["X_seq_num_cid"]).all()
    # Nothing went to the local catalog; only MLflow's local tracking store may be there.
    local = list(kedro_cli.data_root.iterdir()) if kedro_cli.data_root.exists() else []
    assert [p.name for p in local] in ([], ["09_registry"])
