"""Fixtures of the deployment tests: SageMaker settings, the compiled pipeline, the DAG."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from kedro.framework.project import pipelines
from kedro.framework.startup import bootstrap_project

from tests.conftest import FAKE_AWS, PROJECT_ROOT, kedro_env

ROLE_ARN = "arn:aws:iam::123456789012:role/tsa-kedro-sagemaker"
IMAGE_URI = "123456789012.dkr.ecr.us-east-1.amazonaws.com/tsa-kedro:test"
INFERENCE_IMAGE_URI = (
    "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.6.0-cpu-py312"
)
DEPLOY_BUCKET = "tsa-deploy-test"
KEDRO = str(Path(sys.executable).with_name("kedro"))


def sdk_defaults(folder: Path) -> Path:
    """A SageMaker SDK defaults file that opts out of the SDK's telemetry calls."""
    path = folder / "sagemaker-sdk-defaults.yaml"
    path.write_text(
        "SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n"
        "      TelemetryOptOut: true\n"
    )
    return path


def sagemaker_env(moto_endpoint: str, bucket: str, folder: Path, **extra: str) -> dict:
    """Environment of a ``kedro sagemaker`` command against the moto server."""
    settings = {
        **FAKE_AWS,
        "AWS_ENDPOINT_URL": moto_endpoint,
        "TSA_SAGEMAKER_BUCKET": bucket,
        "TSA_SAGEMAKER_PREFIX": "tsa-kedro-test",
        "TSA_SAGEMAKER_ROLE_ARN": ROLE_ARN,
        "TSA_SAGEMAKER_IMAGE": IMAGE_URI,
        "TSA_INFERENCE_IMAGE_URI": INFERENCE_IMAGE_URI,
        "SAGEMAKER_USER_CONFIG_OVERRIDE": str(sdk_defaults(folder)),
    }
    return kedro_env(**{**settings, **extra})


def kedro_command(
    args: list[str], env: dict, cwd: Path = PROJECT_ROOT, check: bool = True
) -> subprocess.CompletedProcess:
    """Run the real ``kedro`` command of the project; fail with its output."""
    result = subprocess.run(
        [KEDRO, *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"kedro {' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-8000:]}"
        )
    return result


def compile_definition(env_name: str, env: dict, folder: Path) -> dict:
    """``kedro sagemaker -e <env_name> compile``: the pipeline definition it writes."""
    output = folder / f"pipeline-{env_name}.json"
    kedro_command(
        ["sagemaker", "-e", env_name, "compile", f"--output-path={output}"], env
    )
    return json.loads(output.read_text())


@pytest.fixture(scope="session")
def project_pipelines() -> dict:
    """The project's registered pipelines, loaded in this process."""
    bootstrap_project(PROJECT_ROOT)
    return dict(pipelines)


@pytest.fixture(scope="session")
def compiled(moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The definition compiled from the ``sagemaker`` environment (no AWS call)."""
    folder = tmp_path_factory.mktemp("compile")
    env = sagemaker_env(moto_endpoint, DEPLOY_BUCKET, folder)
    return compile_definition("sagemaker", env, folder)
