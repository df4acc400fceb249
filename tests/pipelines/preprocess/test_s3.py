"""fit_transforms, preprocess and merge in the s3 environment, against the moto server."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import s3fs

from tests.pipelines.preprocess.test_shard import _contents
from tests.raw_data import base_schema, tiny_orders
from tsa_kedro.datasets import TensorBundleDataset
from tsa_kedro.synthetic import partition_orders

PREFIX = "teams/fraud/data"
INGEST = "ingest.chunk_size=600"


def _write_export(fs: s3fs.S3FileSystem, bucket: str) -> None:
    for key, frame in partition_orders(tiny_orders(), base_schema(), "month").items():
        with fs.open(f"{bucket}/{PREFIX}/01_raw/orders/{key}.parquet", "wb") as out:
            frame.to_parquet(out)


@pytest.mark.slow
def test_preprocessing_reads_and_writes_the_bucket(kedro_cli, s3_bucket, aws_env):
    fs = s3fs.S3FileSystem()
    _write_export(fs, s3_bucket)
    env = {**aws_env, "TSA_S3_BUCKET": s3_bucket, "TSA_S3_PREFIX": PREFIX}
    for pipeline, params in (
        ("ingest", INGEST),
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


@pytest.mark.slow
def test_two_host_processes_build_the_one_host_split(
    kedro_cli, s3_bucket, aws_env, tmp_path
):
    """``train.build_tensor_chunks`` as two hosts of one SageMaker step would run it:
    two ``kedro`` processes at once, each with its own host list."""
    fs = s3fs.S3FileSystem()
    _write_export(fs, s3_bucket)
    env = {**aws_env, "TSA_S3_BUCKET": s3_bucket, "TSA_S3_PREFIX": PREFIX}
    kedro_cli("run", "-e", "s3", "--pipeline=ingest", f"--params={INGEST}", env=env)
    kedro_cli("run", "-e", "s3", "--pipeline=fit_transforms", env=env)
    build = ["run", "-e", "s3", "--nodes=train.build_tensor_chunks"]
    build.append("--params=preprocess.workers=1")

    def host(name: str | None) -> str:
        folder = tmp_path / f"host-{name}"
        folder.mkdir()
        if name:
            (folder / "resourceconfig.json").write_text(
                json.dumps({"current_host": name, "hosts": ["algo-1", "algo-2"]})
            )
            (folder / "processingjobconfig.json").write_text(
                json.dumps(
                    {"ProcessingJobArn": "arn:aws:sagemaker:x:1:processing-job/b"}
                )
            )
        config = {"TSA_RESOURCE_CONFIG": str(folder / "resourceconfig.json")}
        result = kedro_cli(*build, env={**env, **config})
        return " ".join((result.stdout + result.stderr).split())

    with ThreadPoolExecutor(2) as pool:
        logs = list(pool.map(host, ["algo-1", "algo-2"]))
    location = f"s3://{s3_bucket}/{PREFIX}/05_model_input/train/tensor_chunks"
    fs.invalidate_cache()
    sharded = _contents(location)
    chunks = {name.split("/")[0] for name in sharded}
    assert len(chunks) >= 2
    for rank, log in enumerate(logs):
        share = len(sorted(chunks)[rank::2])
        assert f"host algo-{rank + 1} ({rank + 1} of 2) builds {share} of" in log
    assert not [name for name in sharded if name.startswith("_hosts")]
    host(None)  # one host, over the same location
    fs.invalidate_cache()
    assert _contents(location) == sharded
