"""The kedro-sagemaker settings of one environment, loaded and checked before use.

The plugin itself reads ``conf/<env>/sagemaker.yml`` with plain OmegaConf: no project
resolvers, no ``conf/local``. Here the same file is read with the project's resolvers
(``${env:NAME,default}``, see ``settings.py``), then ``conf/local/sagemaker.yml`` (git
ignored, personal values) is merged over it, then the result is validated:

* ``aws.bucket``, ``aws.execution_role`` and ``docker.image`` are rejected when empty,
  when they still hold a committed placeholder (anything containing ``change-me``) or
  when they are malformed (S3 bucket naming rules, an IAM role ARN, an image URI with a
  registry);
* ``volume_size_gb`` must be a positive number of GiB.

Every rejection raises :class:`DeploymentConfigError` naming the setting, the file and
the environment variable that feeds it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import click
from kedro_sagemaker.config import (
    AwsConfig,
    KedroSageMakerPluginConfig,
    ResourceConfig,
)
from omegaconf import OmegaConf
from pydantic import BaseModel, Field, ValidationError

from tsa_kedro.settings import CONFIG_LOADER_ARGS

PLACEHOLDER_MARK = "change-me"
LOCAL_OVERRIDE = Path("conf") / "local" / "sagemaker.yml"

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")
_IMAGE_URI = re.compile(r"^[\w.-]+(:\d+)?(/[\w.-]+)+(:[\w.-]+|@sha256:[0-9a-f]{64})?$")
_ENV_REFERENCE = re.compile(r"\$\{env:\s*([A-Za-z_][A-Za-z0-9_]*)")


class DeploymentConfigError(click.ClickException):
    """A deployment setting is missing, a placeholder or malformed."""


class ProjectResourceConfig(ResourceConfig):
    """The plugin's resources of one step, plus the size of its storage volume."""

    volume_size_gb: int | None = Field(default=None, gt=0)


class ProjectAwsConfig(AwsConfig):
    """The plugin's ``aws`` block with :class:`ProjectResourceConfig` resources."""

    resources: dict[str, ProjectResourceConfig]


class ProjectOptions(BaseModel):
    """The ``tsa_kedro`` block of ``sagemaker.yml``: what the plugin cannot express.

    Attributes:
        training_step_tags: nodes with one of these tags become SageMaker training jobs
            (TrainingStep) instead of processing jobs; training jobs expose the hosts of
            a multi-instance job in ``/opt/ml/input/config/resourceconfig.json``.
        metric_definitions: metric name -> regular expression over the training log,
            published by SageMaker for training steps.
        pipeline_parameters: flattened parameter keys (or prefixes of them, such as
            ``train``) that become SageMaker pipeline parameters; the plugin's default
            of exposing every parameter exceeds SageMaker's limits on job environments.
        mlflow_run_step: add the plugin's ``start-mlflow-run`` step (needs an MLflow
            tracking server that every step can reach).
        forward_environment: environment variables that the configuration reads
            (``${env:...}``, e.g. the bucket in ``globals.yml``) and that ``compile``
            copies from its own environment into every step, so that the containers
            resolve the same values.
        required_environment: variables that must be set when ``compile``/``run``
            starts (values that only a late step reads, checked before any step runs).
        step_environment: fixed variables set in every step.
    """

    training_step_tags: list[str] = []
    forward_environment: list[str] = []
    required_environment: list[str] = []
    step_environment: dict[str, str] = {}
    metric_definitions: dict[str, str] = {}
    pipeline_parameters: list[str] = []
    mlflow_run_step: bool = False


class ProjectPluginConfig(KedroSageMakerPluginConfig):
    """``sagemaker.yml`` as the project reads it."""

    aws: ProjectAwsConfig
    tsa_kedro: ProjectOptions = ProjectOptions()


def _register_project_resolvers() -> None:
    for name, resolver in CONFIG_LOADER_ARGS.get("custom_resolvers", {}).items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_resolver(name, resolver)


def _lookup(tree: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def _source_hint(raw: dict, dotted: str, config_file: Path) -> str:
    value = _lookup(raw, dotted)
    variables = _ENV_REFERENCE.findall(value) if isinstance(value, str) else []
    where = f"`{dotted}` in {LOCAL_OVERRIDE}"
    if variables:
        return f"set the environment variable {variables[0]} or {where}"
    return f"set `{dotted}` in {config_file} or {where}"


def check_setting(dotted: str, value: Any, hint: str) -> None:
    """Reject a missing, placeholder or malformed bucket, role ARN or image URI.

    Args:
        dotted: the setting's key, ``aws.bucket``, ``aws.execution_role`` or
            ``docker.image``.
        value: its value after interpolation.
        hint: how to set it, appended to the message.

    Raises:
        DeploymentConfigError: naming the setting.
    """
    shapes = {
        "aws.bucket": (_BUCKET, "an S3 bucket name"),
        "aws.execution_role": (_ROLE_ARN, "an IAM role ARN"),
        "docker.image": (_IMAGE_URI, "an image URI such as <registry>/<repo>:<tag>"),
    }
    text = "" if value is None else str(value).strip()
    if not text:
        raise DeploymentConfigError(f"SageMaker setting `{dotted}` is missing: {hint}.")
    if PLACEHOLDER_MARK in text.lower():
        raise DeploymentConfigError(
            f"SageMaker setting `{dotted}` still holds the placeholder {text!r}: {hint}."
        )
    pattern, what = shapes[dotted]
    if not pattern.match(text):
        raise DeploymentConfigError(
            f"SageMaker setting `{dotted}` = {text!r} is not {what}: {hint}."
        )


def load_plugin_config(
    project_path: Path, env: str, overrides: dict[str, str | None] | None = None
) -> ProjectPluginConfig:
    """Read, merge and validate the kedro-sagemaker settings of ``env``.

    Args:
        project_path: the Kedro project root.
        env: the Kedro environment (``conf/<env>/sagemaker.yml``).
        overrides: values given on the command line for ``aws.execution_role`` or
            ``docker.image``; a given value replaces (and is checked instead of) the
            configured one.

    Returns:
        The validated configuration.

    Raises:
        DeploymentConfigError: the file is missing or does not parse, or a required
            setting is missing, a placeholder or malformed.
    """
    config_file = Path("conf") / env / "sagemaker.yml"
    if not (project_path / config_file).is_file():
        raise DeploymentConfigError(
            f"{config_file} not found: the `{env}` environment has no SageMaker settings."
        )
    _register_project_resolvers()
    config = OmegaConf.load(project_path / config_file)
    if (project_path / LOCAL_OVERRIDE).is_file():
        config = OmegaConf.merge(config, OmegaConf.load(project_path / LOCAL_OVERRIDE))
    raw = OmegaConf.to_container(config, resolve=False)
    try:
        resolved = OmegaConf.to_container(config, resolve=True)
    except Exception as exc:  # OmegaConf raises several unrelated error types
        raise DeploymentConfigError(f"{config_file} does not resolve: {exc}") from exc
    for dotted, value in (overrides or {}).items():
        if value:
            section, key = dotted.split(".")
            resolved.setdefault(section, {})[key] = value
            raw.setdefault(section, {})[key] = value
    for dotted in ("aws.bucket", "aws.execution_role", "docker.image"):
        check_setting(
            dotted, _lookup(resolved, dotted), _source_hint(raw, dotted, config_file)
        )
    try:
        return ProjectPluginConfig.model_validate(resolved)
    except ValidationError as exc:
        raise DeploymentConfigError(f"{config_file} is not valid:\n{exc}") from exc


def check_data_root(data_root: Any, env: str) -> None:
    """Reject a catalog root that is not on S3 or still holds a placeholder.

    Every step runs in its own container, so every dataset must live on S3.

    Args:
        data_root: ``data_root`` from the environment's ``globals.yml``, resolved.
        env: the Kedro environment, for the message.

    Raises:
        DeploymentConfigError: naming ``data_root`` and its file.
    """
    where = Path("conf") / env / "globals.yml"
    text = "" if data_root is None else str(data_root)
    if not text.startswith("s3://"):
        raise DeploymentConfigError(
            f"`data_root` = {text!r} ({where}) must be an s3:// URI: every SageMaker "
            "step runs in its own container and reads its inputs from S3."
        )
    if PLACEHOLDER_MARK in text.lower():
        raise DeploymentConfigError(
            f"`data_root` = {text!r} ({where}) still holds a placeholder: set the "
            "environment variable TSA_SAGEMAKER_BUCKET."
        )


def check_required_environment(names: list[str], env: str) -> None:
    """Reject a run whose steps would miss a required environment variable.

    Args:
        names: ``tsa_kedro.required_environment`` of the environment.
        env: the Kedro environment, for the message.

    Raises:
        DeploymentConfigError: naming the first variable that is unset or empty.
    """
    for name in names:
        if not os.environ.get(name, "").strip():
            raise DeploymentConfigError(
                f"The environment variable {name} is not set; the `{env}` deployment "
                f"needs it (tsa_kedro.required_environment in conf/{env}/sagemaker.yml)."
            )
