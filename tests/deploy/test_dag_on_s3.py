"""The whole DAG executed the way SageMaker Pipelines executes it, minus containers.

The ``sagemaker_test`` environment (base parameters: the small data profile) is
compiled with the real CLI; then every step of the definition runs in topological
order, independent steps side by side, each in a fresh process started the way its
container would be: processing steps run their ``ContainerEntrypoint``
(``kedro sagemaker -e sagemaker_test execute --node=...``), training steps run the
image's ``train`` program (``docker/train``) with the step's environment. The only
thing the processes share is the moto server's S3 bucket.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest

from tests.conftest import FAKE_AWS, PROJECT_ROOT
from tests.deploy.conftest import compile_definition, sagemaker_env

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


def resolve(value, definition: dict, execution_arn: str) -> str:
    """A definition value as SageMaker would resolve it at execution time."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float | bool):
        return str(value)
    if "Get" in value:
        reference = value["Get"]
        if reference == "Execution.PipelineExecutionArn":
            return execution_arn
        name = reference.removeprefix("Parameters.")
        parameter = next(p for p in definition["Parameters"] if p["Name"] == name)
        return resolve(parameter["DefaultValue"], definition, execution_arn)
    if "Std:Join" in value:
        join = value["Std:Join"]
        parts = [resolve(part, definition, execution_arn) for part in join["Values"]]
        return join["On"].join(parts)
    raise AssertionError(f"unsupported definition value {value!r}")


def launch(
    step: dict, definition: dict, base_env: dict, execution_arn: str, scratch_root: Path
) -> subprocess.CompletedProcess:
    """Start one step as its container would, wait, and return the finished process."""
    arguments = step["Arguments"]
    environment = {
        key: resolve(value, definition, execution_arn)
        for key, value in arguments["Environment"].items()
    }
    # Each container has its own local disk: a scratch folder per step for anything
    # written locally (e.g. an MLflow store), never shared with another step.
    scratch = scratch_root / "containers" / step["Name"]
    scratch.mkdir(parents=True)
    env = {
        **base_env,
        **environment,
        "TSA_DATA_ROOT": str(scratch / "data"),
        "MLFLOW_TRACKING_URI": (scratch / "mlruns").as_uri(),
    }
    if step["Type"] == "Training":
        command = [str(PROJECT_ROOT / "docker" / "train")]
        cwd = scratch  # docker/train finds the project itself
    else:
        specification = arguments["AppSpecification"]
        command = specification["ContainerEntrypoint"] + specification.get(
            "ContainerArguments", []
        )
        cwd = PROJECT_ROOT  # the image's WORKDIR
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, check=False
    )


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

    # What a container sees: the image's environment, no TSA_* settings of the shell
    # that compiled the pipeline (the steps carry what they need), the AWS region.
    container_env = {
        key: value
        for key, value in env.items()
        if not key.startswith(("TSA_", "KEDRO_SAGEMAKER"))
    }
    container_env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
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
                    launch(step, definition, container_env, execution_arn, tmp_path),
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
    assert all(key.startswith(f"{PREFIX}/data/") for key in keys)

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
