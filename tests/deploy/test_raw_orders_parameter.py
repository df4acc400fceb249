"""``raw_export``: an execution's value decides which export an ingest step reads.

The ``sagemaker_test`` environment is compiled with the real CLI; its
``download_train`` step then runs the way its container would (``launch``), against
the moto server's S3, once in an execution started with the defaults and once in one
started with ``raw_export`` naming an export outside the catalog root.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import s3fs

from tests.conftest import PROJECT_ROOT
from tests.deploy.conftest import (
    compile_definition,
    container_environment,
    launch,
    sagemaker_env,
)
from tests.raw_data import base_schema, tiny_orders
from tsa_kedro.synthetic import partition_orders

pytestmark = pytest.mark.slow

PREFIX = "tsa-kedro-test"
EXPORT_PREFIX = "exports/2024-05"
INGEST_STEP = "download_train"


def test_the_execution_value_moves_the_export_the_ingest_step_reads(
    moto_endpoint: str, s3_bucket: str, tmp_path: Path
):
    env = sagemaker_env(
        moto_endpoint, s3_bucket, tmp_path, TSA_SAGEMAKER_WORKDIR=str(PROJECT_ROOT)
    )
    definition = compile_definition("sagemaker_test", env, tmp_path)
    (step,) = [s for s in definition["Steps"] if s["Name"] == INGEST_STEP]
    fs = s3fs.S3FileSystem()
    for key, frame in partition_orders(tiny_orders(), base_schema(), "month").items():
        with fs.open(f"{s3_bucket}/{EXPORT_PREFIX}/{key}.parquet", "wb") as out:
            frame.to_parquet(out)
    execution_arn = (
        "arn:aws:sagemaker:us-east-1:123456789012:pipeline/tsa-kedro-test/"
        f"execution/{uuid.uuid4().hex[:12]}"
    )
    container_env = container_environment(env)

    # Started with the defaults: the step reads raw_orders under the catalog root,
    # where there is no export.
    default_run = launch(
        step, definition, container_env, execution_arn, tmp_path / "default"
    )
    assert default_run.returncode != 0
    default_location = f"s3://{s3_bucket}/{PREFIX}/data/01_raw/orders"
    assert f"No raw order export at {default_location}" in (
        default_run.stdout + default_run.stderr
    )

    export = f"s3://{s3_bucket}/{EXPORT_PREFIX}"
    moved_run = launch(
        step,
        definition,
        container_env,
        execution_arn,
        tmp_path / "moved",
        {"raw_export": export},
    )
    assert moved_run.returncode == 0, moved_run.stdout[-4000:] + moved_run.stderr
    fs.invalidate_cache()
    report = json.loads(
        fs.cat(f"{s3_bucket}/{PREFIX}/data/08_reporting/train/ingest_report.json")
    )
    assert report["rows_read"] == len(tiny_orders())
    assert report["rows"] > 0
    assert fs.find(f"{s3_bucket}/{PREFIX}/data/02_intermediate/train/raw_chunks")
    assert not fs.exists(f"{s3_bucket}/{PREFIX}/data/01_raw")
