"""The whole DAG executed the way SageMaker Pipelines executes it, minus containers.

The ``sagemaker_test`` environment (base parameters: the small data profile) is
compiled with the real CLI. A raw export of that profile is written to the bucket,
outside the catalog root, by ``kedro run --pipeline=synthetic``; then every step of
the definition runs in topological order, independent steps side by side, in an
execution started with ``raw_export`` naming that export, each step in a fresh
process started the way its container would be: processing steps run their
``ContainerEntrypoint`` and ``ContainerArguments``
(``kedro sagemaker -e sagemaker_test execute --node=... [--params ...]``), training
steps run the image's ``train`` program (``docker/train``) with the step's
environment. The only thing the processes share is the moto server's S3 bucket.
"""

from __future__ import annotations

import json
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest

from tests.conftest import FAKE_AWS, PROJECT_ROOT
from tests.deploy.conftest import (
    compile_definition,
    container_environment,
    kedro_command,
    launch,
    sagemaker_env,
)

# About 30 fresh kedro processes: minutes on two idle cores, more on a busy machine, so
# it runs on request (`make test-deploy`), not in every `make test`.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(3600),
    pytest.mark.skipif(
        os.environ.get("TSA_DEPLOY_E2E") != "1",
        reason="whole-DAG SageMaker execution: set TSA_DEPLOY_E2E=1 (make test-deploy)",
    ),
]

TEST_ENV = "sagemaker_test"
PREFIX = "tsa-kedro-test"
EXPORT_PREFIX = "exports/synthetic-2024"
PARALLEL_STEPS = 2


def topological_waves(definition: dict) -> list[list[dict]]:
    """Steps grouped so that each group depends only on earlier groups."""
    pending = {step["Name"]: step for step in definition["Steps"]}
    done: set[str] = set()
    waves = []
    while pending:
        ready = [
            step for step in pending.values() if set(step.get("DependsOn", [])) <= done
        ]
        assert ready, f"cycle or unknown dependency among {sorted(pending)}"
        waves.append(ready)
        for step in ready:
            done.add(step["Name"])
            del pending[step["Name"]]
    return waves


def test_every_step_runs_alone_with_only_s3_between_steps(
    moto_endpoint: str, tmp_path: Path
):
    bucket = f"tsa-dag-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name=FAKE_AWS["AWS_DEFAULT_REGION"],
        aws_access_key_id=FAKE_AWS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_AWS["AWS_SECRET_ACCESS_KEY"],
    )
    s3.create_bucket(Bucket=bucket)
    env = sagemaker_env(
        moto_endpoint, bucket, tmp_path, TSA_SAGEMAKER_WORKDIR=str(PROJECT_ROOT)
    )
    definition = compile_definition(TEST_ENV, env, tmp_path)
    export = f"s3://{bucket}/{EXPORT_PREFIX}"
    kedro_command(
        [
            "run",
            "-e",
            TEST_ENV,
            "--pipeline=synthetic",
            f"--params=raw_export={export}",
        ],
        {**env, "TSA_MLFLOW_TRACKING": "off", "TSA_DATA_ROOT": str(tmp_path / "data")},
    )

    container_env = container_environment(env)
    parameters = {"raw_export": export}
    execution_arn = (
        "arn:aws:sagemaker:us-east-1:123456789012:pipeline/tsa-kedro-test/"
        f"execution/{uuid.uuid4().hex[:12]}"
    )
    waves = topological_waves(definition)
    assert sum(len(wave) for wave in waves) == len(definition["Steps"])
    with ThreadPoolExecutor(PARALLEL_STEPS) as pool:
        for wave in waves:
            results = pool.map(
                lambda step: (
                    step,
                    launch(
                        step,
                        definition,
                        container_env,
                        execution_arn,
                        tmp_path,
                        parameters,
                    ),
                ),
                wave,
            )
            for step, result in results:
                assert result.returncode == 0, (
                    f"step {step['Name']} failed:\n{result.stdout[-6000:]}\n"
                    f"{result.stderr[-6000:]}"
                )

    keys = [
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for item in page.get("Contents", [])
    ]
    # Every dataset that crossed a step boundary is declared in the catalog, on S3:
    # nothing went through the plugin's cloudpickle fallback.
    assert not [key for key in keys if key.startswith("kedro-sagemaker-tmp/")]
    assert all(key.startswith((f"{PREFIX}/data/", f"{EXPORT_PREFIX}/")) for key in keys)
    # The ingest steps read the export the execution named; the default location of
    # raw_orders under the catalog root was never written.
    assert [key for key in keys if key.startswith(f"{EXPORT_PREFIX}/")]
    assert not [key for key in keys if key.startswith(f"{PREFIX}/data/01_raw/")]

    # The last step registered the packaged model in the (moto) SageMaker registry.
    decision = json.loads(
        s3.get_object(
            Bucket=bucket, Key=f"{PREFIX}/data/08_reporting/registration_decision.json"
        )["Body"].read()
    )
    sagemaker = boto3.client(
        "sagemaker",
        endpoint_url=moto_endpoint,
        region_name=FAKE_AWS["AWS_DEFAULT_REGION"],
        aws_access_key_id=FAKE_AWS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_AWS["AWS_SECRET_ACCESS_KEY"],
    )
    arn = decision.get("model_package_arn")
    assert arn, f"the model was not registered: {decision}"
    package = sagemaker.describe_model_package(ModelPackageName=arn)
    assert package["ModelApprovalStatus"] == "PendingManualApproval"
    (container,) = package["InferenceSpecification"]["Containers"]
    model_key = f"{PREFIX}/data/06_models/model.tar.gz"
    assert container["ModelDataUrl"] == f"s3://{bucket}/{model_key}"
    assert container["Image"] == env["TSA_INFERENCE_IMAGE_URI"]
    assert model_key in keys
