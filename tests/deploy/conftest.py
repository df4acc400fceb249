"""Fixtures of the deployment tests: SageMaker settings, the compiled pipeline, the DAG,
and steps of a compiled definition started the way SageMaker starts them."""

from __future__ import annotations

import json
import os
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


def resolve(
    value, definition: dict, execution_arn: str, parameters: dict | None = None
) -> str:
    """A definition value as SageMaker resolves it in an execution.

    Args:
        value: a literal or a pipeline expression (``Get``, ``Std:Join``).
        definition: the compiled pipeline definition.
        execution_arn: the execution's ARN.
        parameters: the values the execution was started with
            (``PipelineParameters``); the definition's defaults fill in the rest.
    """
    parameters = parameters or {}
    if isinstance(value, str):
        return value
    if isinstance(value, int | float | bool):
        return str(value)
    if "Get" in value:
        reference = value["Get"]
        if reference == "Execution.PipelineExecutionArn":
            return execution_arn
        name = reference.removeprefix("Parameters.")
        if name in parameters:
            return parameters[name]
        parameter = next(p for p in definition["Parameters"] if p["Name"] == name)
        return resolve(parameter["DefaultValue"], definition, execution_arn)
    if "Std:Join" in value:
        join = value["Std:Join"]
        parts = [
            resolve(part, definition, execution_arn, parameters)
            for part in join["Values"]
        ]
        return join["On"].join(parts)
    raise AssertionError(f"unsupported definition value {value!r}")


def container_environment(env: dict) -> dict:
    """What a step's container sees of ``env``, the environment of ``compile``: the
    image's environment and the AWS settings, no ``TSA_*`` settings (the steps carry
    what they need), with this interpreter's ``kedro`` on the PATH."""
    container = {
        key: value
        for key, value in env.items()
        if not key.startswith(("TSA_", "KEDRO_SAGEMAKER"))
    }
    container["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return container


def launch(
    step: dict,
    definition: dict,
    base_env: dict,
    execution_arn: str,
    scratch_root: Path,
    parameters: dict | None = None,
) -> subprocess.CompletedProcess:
    """Start one step as its container would, wait, and return the finished process.

    Processing steps run their ``ContainerEntrypoint`` and ``ContainerArguments``
    (``kedro sagemaker -e <env> execute --node=...``) in the project folder, the
    image's working directory; training steps run the image's ``train`` program
    (``docker/train``) with the step's environment.

    Args:
        step: the step of the compiled definition.
        definition: the whole definition (parameter defaults).
        base_env: the container's environment before the step's own variables.
        execution_arn: the execution's ARN.
        scratch_root: a folder under which the step gets its own local disk.
        parameters: the pipeline parameters the execution was started with.
    """
    arguments = step["Arguments"]
    environment = {
        key: resolve(value, definition, execution_arn, parameters)
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
        command = specification["ContainerEntrypoint"] + [
            resolve(argument, definition, execution_arn, parameters)
            for argument in specification.get("ContainerArguments", [])
        ]
        cwd = PROJECT_ROOT  # the image's WORKDIR
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
