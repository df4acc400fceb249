"""``kedro sagemaker -e sagemaker compile`` and ``run`` through the real CLI.

compile needs no AWS call (training jobs write to the project bucket, not SageMaker's
default one); run upserts the pipeline and starts an execution on the moto server.
Both check every setting first and report all problems in one message.
"""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from tests.conftest import kedro_env
from tests.deploy.conftest import (
    DEPLOY_BUCKET,
    IMAGE_URI,
    INFERENCE_IMAGE_URI,
    ROLE_ARN,
    kedro_command,
    resolve,
    sagemaker_env,
)

pytestmark = pytest.mark.slow

PIPELINE_NAME = "tsa-kedro"
RAW_ORDERS_DEFAULT = f"s3://{DEPLOY_BUCKET}/tsa-kedro-test/data/01_raw/orders"
# The heavy preprocessing nodes (chunked tensor building, merges, fitting transforms on
# all of train), by name without namespace: they must run on high-memory instances.
PREPROCESSING_NODES = {"fit_transforms", "build_tensor_chunks", "merge_tensor_chunks"}


def _steps_by_node(definition: dict) -> dict[str, dict]:
    return {step["DisplayName"]: step for step in definition["Steps"]}


def _instance(step: dict) -> tuple[str, int, int]:
    if step["Type"] == "Training":
        cluster = step["Arguments"]["ResourceConfig"]
    else:
        cluster = step["Arguments"]["ProcessingResources"]["ClusterConfig"]
    return cluster["InstanceType"], cluster["InstanceCount"], cluster["VolumeSizeInGB"]


def test_one_step_per_node_with_the_dag_edges(compiled: dict, project_pipelines: dict):
    dag = project_pipelines["__default__"]
    steps = _steps_by_node(compiled)
    assert set(steps) == {node.name for node in dag.nodes}
    assert len(compiled["Steps"]) == len(dag.nodes)
    for node, parents in dag.node_dependencies.items():
        step = steps[node.name]
        assert step["Name"] == node.name.replace(".", "__")
        expected = {parent.name.replace(".", "__") for parent in parents}
        assert set(step.get("DependsOn", [])) == expected, node.name


def test_no_synthetic_step_the_ingest_steps_start_from_the_export(
    compiled: dict, project_pipelines: dict
):
    synthetic = {node.name for node in project_pipelines["synthetic"].nodes}
    assert synthetic
    steps = _steps_by_node(compiled)
    assert not synthetic & set(steps)
    assert "raw_orders" in project_pipelines["__default__"].inputs()
    first_steps = {name for name, step in steps.items() if not step.get("DependsOn")}
    assert first_steps == {node.name for node in project_pipelines["ingest"].nodes}


def test_raw_export_is_a_parameter_of_the_ingest_steps(
    compiled: dict, project_pipelines: dict
):
    assert compiled["Parameters"] == [
        {
            "Name": "raw_export",
            "Type": "String",
            "DefaultValue": RAW_ORDERS_DEFAULT,
        }
    ]
    readers = {
        node.name
        for node in project_pipelines["__default__"].nodes
        if "raw_orders" in node.inputs
    }
    assert readers == {node.name for node in project_pipelines["ingest"].nodes}
    started = {"raw_export": "s3://exports-bucket/orders/2026-10"}
    for name, step in _steps_by_node(compiled).items():
        specification = step["Arguments"].get("AppSpecification", {})
        arguments = specification.get("ContainerArguments")
        if name not in readers:
            assert arguments is None, name
            continue
        flag, value = arguments
        assert flag == "--params"
        assert json.loads(resolve(value, compiled, "arn")) == {
            "raw_export": RAW_ORDERS_DEFAULT
        }
        assert json.loads(resolve(value, compiled, "arn", started)) == started


def test_gpu_nodes_are_multi_host_training_jobs(
    compiled: dict, project_pipelines: dict
):
    dag = project_pipelines["__default__"]
    gpu_nodes = [node for node in dag.nodes if "gpu" in node.tags]
    assert gpu_nodes, "no node is tagged gpu"
    assert {node.name for node in gpu_nodes} <= {
        node.name for node in project_pipelines["train"].nodes
    }
    steps = _steps_by_node(compiled)
    for node in gpu_nodes:
        step = steps[node.name]
        assert step["Type"] == "Training"
        assert _instance(step)[:2] == ("ml.g5.48xlarge", 2)
        arguments = step["Arguments"]
        assert arguments["AlgorithmSpecification"]["TrainingImage"] == IMAGE_URI
        command = arguments["Environment"]["KEDRO_SAGEMAKER_ARGS"]
        assert command.endswith(f"execute --pipeline=__default__ --node={node.name}")
        assert arguments["OutputDataConfig"]["S3OutputPath"].startswith(
            f"s3://{DEPLOY_BUCKET}/"
        )
        assert {
            m["Name"] for m in arguments["AlgorithmSpecification"]["MetricDefinitions"]
        } == {"train_loss", "validation_roc_auc"}


def test_preprocessing_runs_on_high_memory(compiled: dict, project_pipelines: dict):
    steps = _steps_by_node(compiled)
    preprocessing = [
        node
        for node in project_pipelines["__default__"].nodes
        if node.name.rsplit(".", 1)[-1] in PREPROCESSING_NODES
    ]
    assert len(preprocessing) >= 5
    for node in preprocessing:
        assert "highmem" in node.tags, f"{node.name} is not tagged highmem"
        step = steps[node.name]
        assert step["Type"] == "Processing"
        instance_type, count, volume = _instance(step)
        # each split's chunks are built on 2 hosts (every 2nd chunk per host)
        hosts = 2 if node.name.endswith(".build_tensor_chunks") else 1
        assert (instance_type, count) == ("ml.r5.24xlarge", hosts), node.name
        assert volume >= 500
    built = [n for n in preprocessing if n.name.endswith(".build_tensor_chunks")]
    assert len(built) == 3


def test_other_nodes_run_on_the_default_instance(
    compiled: dict, project_pipelines: dict
):
    steps = _steps_by_node(compiled)
    others = [
        node
        for node in project_pipelines["__default__"].nodes
        if not {"gpu", "highmem"} & node.tags
    ]
    assert others
    for node in others:
        step = steps[node.name]
        assert step["Type"] == "Processing"
        assert _instance(step) == ("ml.m5.xlarge", 1, 50)
        entrypoint = step["Arguments"]["AppSpecification"]["ContainerEntrypoint"]
        assert entrypoint == [
            "kedro",
            "sagemaker",
            "-e",
            "sagemaker",
            "execute",
            "--pipeline=__default__",
            f"--node={node.name}",
        ]


def test_every_step_reads_the_same_catalog_and_fits_sagemaker_limits(compiled: dict):
    assert "start-mlflow-run" not in _steps_by_node(compiled)
    for step in compiled["Steps"]:
        environment = step["Arguments"]["Environment"]
        assert environment["TSA_SAGEMAKER_BUCKET"] == DEPLOY_BUCKET
        assert environment["TSA_SAGEMAKER_PREFIX"] == "tsa-kedro-test"
        assert environment["TSA_INFERENCE_IMAGE_URI"] == INFERENCE_IMAGE_URI
        assert environment["TSA_MLFLOW_TRACKING"] == "off"
        assert len(environment) <= 100
        assert step["Arguments"]["RoleArn"] == ROLE_ARN


def _pipeline_state(sagemaker) -> tuple[set, int]:
    names = {p["PipelineName"] for p in sagemaker.list_pipelines()["PipelineSummaries"]}
    executions = 0
    if PIPELINE_NAME in names:
        executions = len(
            sagemaker.list_pipeline_executions(PipelineName=PIPELINE_NAME)[
                "PipelineExecutionSummaries"
            ]
        )
    return names, executions


@pytest.mark.parametrize(
    ("variable", "value", "setting"),
    [
        ("TSA_SAGEMAKER_ROLE_ARN", "", "`aws.execution_role`"),
        ("TSA_SAGEMAKER_IMAGE", "change-me-image-uri", "`docker.image`"),
        ("TSA_INFERENCE_IMAGE_URI", "", "tsa_kedro.required_environment"),
    ],
)
def test_run_with_a_bad_setting_creates_nothing(
    moto_endpoint: str, tmp_path: Path, variable: str, value: str, setting: str
):
    env = sagemaker_env(moto_endpoint, DEPLOY_BUCKET, tmp_path, **{variable: value})
    sagemaker = boto3.client("sagemaker", endpoint_url=moto_endpoint, **_fake(env))
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, **_fake(env))
    before = _pipeline_state(sagemaker), s3.list_buckets()["Buckets"]
    result = kedro_command(["sagemaker", "-e", "sagemaker", "run"], env, check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert setting in output
    assert variable in output
    assert (_pipeline_state(sagemaker), s3.list_buckets()["Buckets"]) == before


def _fake(env: dict) -> dict:
    return {
        "region_name": env["AWS_DEFAULT_REGION"],
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
    }


def test_run_upserts_the_compiled_pipeline_and_starts_it(
    moto_endpoint: str, tmp_path: Path, compiled: dict
):
    env = sagemaker_env(moto_endpoint, DEPLOY_BUCKET, tmp_path)
    sagemaker = boto3.client("sagemaker", endpoint_url=moto_endpoint, **_fake(env))
    _, executions_before = _pipeline_state(sagemaker)
    result = kedro_command(["sagemaker", "-e", "sagemaker", "run"], env)
    assert "Pipeline started successfully" in result.stdout
    described = sagemaker.describe_pipeline(PipelineName=PIPELINE_NAME)
    assert described["RoleArn"] == ROLE_ARN
    assert json.loads(described["PipelineDefinition"]) == compiled
    assert _pipeline_state(sagemaker)[1] == executions_before + 1


def test_run_with_params_starts_on_the_given_export(moto_endpoint: str, tmp_path: Path):
    env = sagemaker_env(moto_endpoint, DEPLOY_BUCKET, tmp_path)
    sagemaker = boto3.client("sagemaker", endpoint_url=moto_endpoint, **_fake(env))
    _, executions_before = _pipeline_state(sagemaker)
    export = f"s3://{DEPLOY_BUCKET}/exports/2026-10"
    kedro_command(
        [
            "sagemaker",
            "-e",
            "sagemaker",
            "run",
            "--params",
            json.dumps({"raw_export": export}),
        ],
        env,
    )
    described = sagemaker.describe_pipeline(PipelineName=PIPELINE_NAME)
    (parameter,) = json.loads(described["PipelineDefinition"])["Parameters"]
    assert parameter == {
        "Name": "raw_export",
        "Type": "String",
        "DefaultValue": export,
    }
    assert _pipeline_state(sagemaker)[1] == executions_before + 1


def _without_aws(env: dict, folder: Path) -> dict:
    """``env`` with no AWS variable, configuration file or instance metadata."""
    clean = {key: value for key, value in env.items() if not key.startswith("AWS_")}
    return {
        **clean,
        "AWS_CONFIG_FILE": str(folder / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(folder / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def test_every_missing_setting_in_one_message(tmp_path: Path):
    bare = {k: v for k, v in kedro_env().items() if not k.startswith("TSA_")}
    result = kedro_command(
        ["sagemaker", "-e", "sagemaker", "run"],
        _without_aws(bare, tmp_path),
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert output.count("Error:") == 1
    assert "Traceback" not in output
    message = output[output.index("Error:") :]
    for named in (
        "`aws.bucket`",
        "TSA_SAGEMAKER_BUCKET",
        "`aws.execution_role`",
        "TSA_SAGEMAKER_ROLE_ARN",
        "`docker.image`",
        "TSA_SAGEMAKER_IMAGE",
        "TSA_INFERENCE_IMAGE_URI",
        "no AWS region: set AWS_REGION",
        "no AWS credentials found",
    ):
        assert named in message, named


def test_documented_variables_only_compile_then_run_needs_credentials(
    moto_endpoint: str, tmp_path: Path
):
    env = _without_aws(sagemaker_env(moto_endpoint, DEPLOY_BUCKET, tmp_path), tmp_path)
    env["AWS_REGION"] = "eu-west-1"
    output = tmp_path / "pipeline.json"
    kedro_command(
        ["sagemaker", "-e", "sagemaker", "compile", f"--output-path={output}"], env
    )
    assert json.loads(output.read_text())["Steps"]

    result = kedro_command(["sagemaker", "-e", "sagemaker", "run"], env, check=False)
    text = result.stdout + result.stderr
    assert result.returncode == 1
    assert "Traceback" not in text
    (line,) = [line for line in text.splitlines() if line.startswith("  - ")]
    assert line.startswith("  - no AWS credentials found")


def test_run_takes_the_region_from_aws_region(moto_endpoint: str, tmp_path: Path):
    env = sagemaker_env(moto_endpoint, DEPLOY_BUCKET, tmp_path, AWS_REGION="eu-west-1")
    client_settings = {**_fake(env), "region_name": "eu-west-1"}
    del env["AWS_DEFAULT_REGION"]
    kedro_command(["sagemaker", "-e", "sagemaker", "run"], env)
    sagemaker = boto3.client("sagemaker", endpoint_url=moto_endpoint, **client_settings)
    described = sagemaker.describe_pipeline(PipelineName=PIPELINE_NAME)
    assert ":eu-west-1:" in described["PipelineArn"]
