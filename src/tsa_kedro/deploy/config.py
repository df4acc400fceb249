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

A file that does not parse or a malformed block raises :class:`DeploymentConfigError`
at once. A missing or bad *value* is only collected, as a line naming the setting and
the environment variable that feeds it, so that ``compile``/``run`` can report every
problem of the deployment (these settings, the catalog root, required variables, the
AWS region and credentials: :func:`aws_problems`) in one message
(:func:`preflight_error`) before anything is uploaded or created.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import boto3
import click
from botocore.exceptions import BotoCoreError
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
# No quote, backslash or control character: a value also travels inside JSON text.
_S3_URI = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\"\\\x00-\x1f]*)?$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")


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
        path_parameters: SageMaker pipeline parameter -> catalog dataset whose path
            each execution chooses (:mod:`tsa_kedro.deploy.path_parameters`); the
            dataset's entry reads it as ``${runtime_params:<parameter>, <default>}``;
            or ``params:<key>``: the Kedro parameter each execution chooses.
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
    path_parameters: dict[str, str] = {}
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


def setting_problem(dotted: str, value: Any, hint: str) -> str | None:
    """What is wrong with a bucket, role ARN or image URI, if anything.

    Args:
        dotted: the setting's key, ``aws.bucket``, ``aws.execution_role`` or
            ``docker.image``.
        value: its value after interpolation.
        hint: how to set it, appended to the line.

    Returns:
        One line naming the setting when it is missing, a placeholder or malformed;
        ``None`` when it is fine.
    """
    shapes = {
        "aws.bucket": (_BUCKET, "an S3 bucket name"),
        "aws.execution_role": (_ROLE_ARN, "an IAM role ARN"),
        "docker.image": (_IMAGE_URI, "an image URI such as <registry>/<repo>:<tag>"),
    }
    text = "" if value is None else str(value).strip()
    if not text:
        return f"`{dotted}` is missing: {hint}."
    if PLACEHOLDER_MARK in text.lower():
        return f"`{dotted}` still holds the placeholder {text!r}: {hint}."
    pattern, what = shapes[dotted]
    if not pattern.match(text):
        return f"`{dotted}` = {text!r} is not {what}: {hint}."
    return None


def read_plugin_config(
    project_path: Path, env: str, overrides: dict[str, str | None] | None = None
) -> tuple[ProjectPluginConfig, list[str]]:
    """Read and merge the kedro-sagemaker settings of ``env``; list what is missing.

    Args:
        project_path: the Kedro project root.
        env: the Kedro environment (``conf/<env>/sagemaker.yml``).
        overrides: values given on the command line for ``aws.execution_role`` or
            ``docker.image``; a given value replaces (and is checked instead of) the
            configured one.

    Returns:
        The configuration, and one line per bucket, role or image setting that is
        missing, a placeholder or malformed (empty when all are fine).

    Raises:
        DeploymentConfigError: the file is missing, does not parse or resolve, or
            does not have the shape of the plugin's settings.
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
    problems = []
    for dotted in ("aws.bucket", "aws.execution_role", "docker.image"):
        hint = _source_hint(raw, dotted, config_file)
        if problem := setting_problem(dotted, _lookup(resolved, dotted), hint):
            problems.append(problem)
    try:
        return ProjectPluginConfig.model_validate(resolved), problems
    except ValidationError as exc:
        raise DeploymentConfigError(f"{config_file} is not valid:\n{exc}") from exc


def s3_uri_problem(name: str, value: Any, where: str) -> str | None:
    """What is wrong with a location that every step must reach, if anything.

    Every step runs in its own container, so the data it reads and writes lives on S3.

    Args:
        name: the setting or parameter, named in the line.
        value: its resolved value.
        where: where it is configured, named in the line.

    Returns:
        One line when the value is not an ``s3://`` URI; ``None`` when it is one.
    """
    text = "" if value is None else str(value)
    if _S3_URI.match(text):
        return None
    return (
        f"`{name}` = {text!r} ({where}) must be an s3:// URI: every SageMaker step "
        "runs in its own container and reads its inputs from S3."
    )


def data_root_problems(data_root: Any, env: str) -> list[str]:
    """What is wrong with the catalog root of ``env``: none, or one line.

    Args:
        data_root: ``data_root`` from the environment's ``globals.yml``, resolved.
        env: the Kedro environment, for the line.
    """
    where = f"conf/{env}/globals.yml"
    if PLACEHOLDER_MARK in str(data_root).lower():
        return [
            f"`data_root` = {data_root!r} ({where}) still holds a placeholder: set the "
            "environment variable TSA_SAGEMAKER_BUCKET."
        ]
    problem = s3_uri_problem("data_root", data_root, where)
    return [problem] if problem else []


def missing_environment(names: list[str], env: str) -> list[str]:
    """One line per required environment variable that is unset or empty.

    Args:
        names: ``tsa_kedro.required_environment`` of the environment.
        env: the Kedro environment, for the lines.
    """
    return [
        f"the environment variable {name} is not set (tsa_kedro.required_environment "
        f"in conf/{env}/sagemaker.yml)."
        for name in names
        if not os.environ.get(name, "").strip()
    ]


def aws_problems(needs_credentials: bool) -> list[str]:
    """What keeps the AWS SDK from reaching SageMaker: region, profile, credentials.

    The AWS SDK for Python reads the region from ``AWS_DEFAULT_REGION`` (or a profile)
    only, while AWS's other tools also read ``AWS_REGION``; a region given only in
    ``AWS_REGION`` is copied to ``AWS_DEFAULT_REGION`` of this process first.

    Args:
        needs_credentials: the command calls AWS (``run``), so credentials must be
            found; ``compile`` only needs the region.

    Returns:
        One line per problem; empty when the SDK finds what it needs.
    """
    region = os.environ.get("AWS_REGION", "").strip()
    default_region = os.environ.get("AWS_DEFAULT_REGION", "").strip()
    if region and default_region and region != default_region:
        return [
            f"AWS_REGION={region!r} and AWS_DEFAULT_REGION={default_region!r} "
            "disagree: set one of them, or both to the same region."
        ]
    if region:
        os.environ["AWS_DEFAULT_REGION"] = region
    try:
        session = boto3.Session()
    except BotoCoreError as exc:  # e.g. AWS_PROFILE names a profile that is missing
        return [f"AWS configuration: {exc}"]
    problems = []
    if not session.region_name:
        problems.append(
            "no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION), e.g. eu-west-1."
        )
    elif not _REGION.match(session.region_name):
        problems.append(
            f"the AWS region {session.region_name!r} (AWS_REGION, AWS_DEFAULT_REGION "
            "or the profile) is not a region name such as eu-west-1."
        )
    if needs_credentials:
        try:
            credentials = session.get_credentials()
        except BotoCoreError as exc:  # e.g. a failing credential_process
            return [*problems, f"AWS credentials: {exc}"]
        if credentials is None:
            problems.append(
                "no AWS credentials found: sign in (`aws sso login`, `aws configure`) "
                "or set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY."
            )
    return problems


def preflight_error(env: str, problems: list[str]) -> DeploymentConfigError:
    """The one error that lists every problem found before a deployment command.

    Args:
        env: the Kedro environment, for the message.
        problems: the lines collected by the checks of this module.
    """
    lines = "\n".join(f"  - {problem}" for problem in problems)
    return DeploymentConfigError(
        f"The SageMaker deployment of the `{env}` environment is not ready (nothing "
        f"was uploaded or created):\n{lines}"
    )
