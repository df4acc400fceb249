"""Settings of the sagemaker environment: interpolation, local overlay, validation."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT
from tests.deploy.conftest import IMAGE_URI, ROLE_ARN
from tsa_kedro.deploy.config import (
    DeploymentConfigError,
    check_data_root,
    check_required_environment,
    load_plugin_config,
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
    config = load_plugin_config(project, "sagemaker")
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
    with pytest.raises(DeploymentConfigError) as error:
        load_plugin_config(project, "sagemaker")
    message = error.value.format_message()
    assert f"`{setting}`" in message
    assert variable in message
    assert ("placeholder" in message) == (state == "unset")


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
    with pytest.raises(DeploymentConfigError, match=shape):
        load_plugin_config(project, "sagemaker")


def test_local_overlay_fills_in_a_setting(
    project: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("TSA_SAGEMAKER_ROLE_ARN")
    local = project / "conf" / "local"
    local.mkdir(parents=True)
    other_role = "arn:aws:iam::210987654321:role/personal"
    (local / "sagemaker.yml").write_text(f"aws:\n  execution_role: {other_role}\n")
    config = load_plugin_config(project, "sagemaker")
    assert config.aws.execution_role == other_role
    assert config.aws.bucket == "tsa-models-bucket"


def test_command_line_value_replaces_a_placeholder(
    project: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("TSA_SAGEMAKER_IMAGE")
    config = load_plugin_config(project, "sagemaker", {"docker.image": IMAGE_URI})
    assert config.docker.image == IMAGE_URI


def test_environment_without_settings_is_named(project: Path):
    with pytest.raises(DeploymentConfigError, match="conf/nowhere/sagemaker.yml"):
        load_plugin_config(project, "nowhere")


def test_bad_resource_entry_names_the_file(project: Path):
    path = project / "conf" / "sagemaker" / "sagemaker.yml"
    text = path.read_text().replace("volume_size_gb: 1000", "volume_size_gb: -1", 1)
    path.write_text(text)
    with pytest.raises(DeploymentConfigError, match="volume_size_gb"):
        load_plugin_config(project, "sagemaker")


def test_data_root_must_be_on_s3():
    check_data_root("s3://tsa-models-bucket/tsa-kedro/data", "sagemaker")
    with pytest.raises(DeploymentConfigError, match="must be an s3:// URI"):
        check_data_root("data", "sagemaker")
    with pytest.raises(DeploymentConfigError, match="TSA_SAGEMAKER_BUCKET"):
        check_data_root("s3://change-me-bucket/tsa-kedro/data", "sagemaker")


def test_required_environment_is_named(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TSA_INFERENCE_IMAGE_URI", "registry/serving:1")
    check_required_environment(["TSA_INFERENCE_IMAGE_URI"], "sagemaker")
    monkeypatch.delenv("TSA_INFERENCE_IMAGE_URI")
    with pytest.raises(DeploymentConfigError, match="TSA_INFERENCE_IMAGE_URI"):
        check_required_environment(["TSA_INFERENCE_IMAGE_URI"], "sagemaker")
