"""Settings of the sagemaker environment: interpolation, local overlay, validation,
and the checks of the AWS region and credentials."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import boto3
import pytest

from tests.conftest import PROJECT_ROOT
from tests.deploy.conftest import IMAGE_URI, ROLE_ARN
from tsa_kedro.deploy.config import (
    DeploymentConfigError,
    aws_problems,
    data_root_problems,
    missing_environment,
    preflight_error,
    read_plugin_config,
)

VARIABLES = {
    "aws.bucket": ("TSA_SAGEMAKER_BUCKET", "tsa-models-bucket"),
    "aws.execution_role": ("TSA_SAGEMAKER_ROLE_ARN", ROLE_ARN),
    "docker.image": ("TSA_SAGEMAKER_IMAGE", IMAGE_URI),
}


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder holding the committed conf/sagemaker/sagemaker.yml, with every
    variable it reads set to a valid value."""
    target = tmp_path / "conf" / "sagemaker"
    target.mkdir(parents=True)
    shutil.copy(PROJECT_ROOT / "conf" / "sagemaker" / "sagemaker.yml", target)
    for variable, value in VARIABLES.values():
        monkeypatch.setenv(variable, value)
    return tmp_path


def test_values_come_from_the_environment(project: Path):
    config, problems = read_plugin_config(project, "sagemaker")
    assert problems == []
    assert config.aws.bucket == "tsa-models-bucket"
    assert config.aws.execution_role == ROLE_ARN
    assert config.docker.image == IMAGE_URI
    assert config.aws.resources["gpu"].instance_type == "ml.g5.48xlarge"
    assert config.aws.resources["gpu"].instance_count == 2
    assert config.aws.resources["highmem"].volume_size_gb >= 500
    assert config.tsa_kedro.training_step_tags == ["gpu"]


@pytest.mark.parametrize("setting", sorted(VARIABLES))
@pytest.mark.parametrize("state", ["unset", "empty"])
def test_placeholder_or_empty_setting_is_named(
    project: Path, monkeypatch: pytest.MonkeyPatch, setting: str, state: str
):
    variable, _ = VARIABLES[setting]
    if state == "unset":
        monkeypatch.delenv(variable)
    else:
        monkeypatch.setenv(variable, " ")
    _, problems = read_plugin_config(project, "sagemaker")
    (problem,) = problems
    assert f"`{setting}`" in problem
    assert variable in problem
    assert ("placeholder" in problem) == (state == "unset")


@pytest.mark.parametrize(
    ("setting", "bad", "shape"),
    [
        ("aws.bucket", "Not_A_Bucket", "an S3 bucket name"),
        ("aws.execution_role", "tsa-role", "an IAM role ARN"),
        ("docker.image", "tsa kedro:latest", "an image URI"),
    ],
)
def test_malformed_setting_is_rejected(
    project: Path, monkeypatch: pytest.MonkeyPatch, setting: str, bad: str, shape: str
):
    monkeypatch.setenv(VARIABLES[setting][0], bad)
    _, problems = read_plugin_config(project, "sagemaker")
    (problem,) = problems
    assert f"`{setting}` = {bad!r}" in problem
    assert shape in problem


def test_every_bad_setting_is_listed(project: Path, monkeypatch: pytest.MonkeyPatch):
    for variable, _ in VARIABLES.values():
        monkeypatch.delenv(variable)
    _, problems = read_plugin_config(project, "sagemaker")
    assert len(problems) == len(VARIABLES)
    for (setting, (variable, _)), problem in zip(
        sorted(VARIABLES.items()), sorted(problems), strict=True
    ):
        assert f"`{setting}`" in problem
        assert variable in problem


def test_local_overlay_fills_in_a_setting(
    project: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("TSA_SAGEMAKER_ROLE_ARN")
    local = project / "conf" / "local"
    local.mkdir(parents=True)
    other_role = "arn:aws:iam::210987654321:role/personal"
    (local / "sagemaker.yml").write_text(f"aws:\n  execution_role: {other_role}\n")
    config, problems = read_plugin_config(project, "sagemaker")
    assert problems == []
    assert config.aws.execution_role == other_role
    assert config.aws.bucket == "tsa-models-bucket"


def test_command_line_value_replaces_a_placeholder(
    project: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("TSA_SAGEMAKER_IMAGE")
    config, problems = read_plugin_config(
        project, "sagemaker", {"docker.image": IMAGE_URI}
    )
    assert problems == []
    assert config.docker.image == IMAGE_URI


def test_environment_without_settings_is_named(project: Path):
    with pytest.raises(DeploymentConfigError, match="conf/nowhere/sagemaker.yml"):
        read_plugin_config(project, "nowhere")


def test_bad_resource_entry_names_the_file(project: Path):
    path = project / "conf" / "sagemaker" / "sagemaker.yml"
    text = path.read_text().replace("volume_size_gb: 1000", "volume_size_gb: -1", 1)
    path.write_text(text)
    with pytest.raises(DeploymentConfigError, match="volume_size_gb"):
        read_plugin_config(project, "sagemaker")


def test_data_root_must_be_on_s3():
    assert (
        data_root_problems("s3://tsa-models-bucket/tsa-kedro/data", "sagemaker") == []
    )
    (problem,) = data_root_problems("data", "sagemaker")
    assert "`data_root` = 'data'" in problem
    assert "must be an s3:// URI" in problem
    (problem,) = data_root_problems("s3://change-me-bucket/tsa-kedro/data", "sagemaker")
    assert "TSA_SAGEMAKER_BUCKET" in problem


def test_required_environment_is_named(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TSA_INFERENCE_IMAGE_URI", "registry/serving:1")
    assert missing_environment(["TSA_INFERENCE_IMAGE_URI"], "sagemaker") == []
    monkeypatch.delenv("TSA_INFERENCE_IMAGE_URI")
    (problem,) = missing_environment(["TSA_INFERENCE_IMAGE_URI"], "sagemaker")
    assert "TSA_INFERENCE_IMAGE_URI" in problem


@pytest.fixture
def no_aws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No AWS variable, configuration file or instance metadata in this process; the
    environment, which ``aws_problems`` may change, is restored afterwards."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    monkeypatch.setattr(os, "environ", environment)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return monkeypatch


def test_region_from_aws_region_reaches_the_sdk(no_aws: pytest.MonkeyPatch):
    no_aws.setenv("AWS_REGION", "eu-west-1")
    assert aws_problems(needs_credentials=False) == []
    assert os.environ["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert boto3.Session().region_name == "eu-west-1"


def test_region_from_aws_default_region(no_aws: pytest.MonkeyPatch):
    no_aws.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    assert aws_problems(needs_credentials=False) == []
    assert "AWS_REGION" not in os.environ


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({}, "no AWS region: set AWS_REGION"),
        ({"AWS_REGION": "eu-west"}, "'eu-west' (AWS_REGION"),
        (
            {"AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "us-east-1"},
            "AWS_REGION='eu-west-1' and AWS_DEFAULT_REGION='us-east-1' disagree",
        ),
        ({"AWS_PROFILE": "nobody"}, "nobody"),
    ],
)
def test_bad_region_or_profile_is_named(
    no_aws: pytest.MonkeyPatch, variables: dict, named: str
):
    for name, value in variables.items():
        no_aws.setenv(name, value)
    (problem,) = aws_problems(needs_credentials=False)
    assert named in problem


def test_credentials_are_needed_only_to_call_aws(no_aws: pytest.MonkeyPatch):
    no_aws.setenv("AWS_REGION", "eu-west-1")
    assert aws_problems(needs_credentials=False) == []
    (problem,) = aws_problems(needs_credentials=True)
    assert problem.startswith("no AWS credentials found")
    no_aws.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    no_aws.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    assert aws_problems(needs_credentials=True) == []


def test_preflight_error_lists_every_problem():
    error = preflight_error("sagemaker", ["first problem.", "second problem."])
    message = error.format_message()
    assert "`sagemaker`" in message
    assert message.splitlines()[1:] == ["  - first problem.", "  - second problem."]
