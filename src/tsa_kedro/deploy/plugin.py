"""The project's changes to kedro-sagemaker 0.4.0, installed into the plugin at start-up.

``install`` replaces a few methods of the plugin's ``KedroContextManager`` and
``KedroSageMakerGenerator``; ``tsa_kedro.cli`` calls it whenever the ``kedro`` command
starts in this project. Each change answers a known problem of the plugin:

* settings: read through :mod:`tsa_kedro.deploy.config` (``${env:...}``, the
  ``conf/local`` overlay) and checked before the pipeline is generated: bucket, role,
  image, ``data_root``, required variables, path parameters, the AWS region (also
  from ``AWS_REGION``) and, for ``run``, AWS credentials; every problem is reported in
  one message and nothing is uploaded or created;
* resources: looked up by name, then tag, then ``__default__``
  (:mod:`tsa_kedro.deploy.resources`; upstream issues #28 and #29), with the volume
  size the plugin cannot configure;
* step type: nodes tagged with ``tsa_kedro.training_step_tags`` become training jobs
  (the plugin only does so for functions decorated with ``sagemaker_metrics``), whose
  output goes to the project bucket rather than SageMaker's default bucket;
* pipeline parameters: only the keys listed in ``tsa_kedro.pipeline_parameters`` are
  exposed, within SageMaker's limits on job environments (the plugin exposes every
  parameter as two environment variables of every step); the named path parameters
  of ``tsa_kedro.path_parameters`` are added and handed to the steps that use them
  (:mod:`tsa_kedro.deploy.path_parameters`);
* MLflow: the ``start-mlflow-run`` step only when ``tsa_kedro.mlflow_run_step`` is on;
* environment: the variables named in ``tsa_kedro.forward_environment`` are copied from
  the compiling shell into every step (the containers read the same configuration), with
  the fixed ``tsa_kedro.step_environment``; ``tsa_kedro.required_environment`` must be
  set before anything is generated;
* MLflow run lookup: ``execute`` skips it when kedro-mlflow is switched off in the step
  (the plugin assumes kedro-mlflow's context attribute whenever the package imports).
"""

from __future__ import annotations

import functools
import inspect
import json
import os
from pathlib import Path
from types import SimpleNamespace

import click
import kedro_sagemaker.cli as plugin_cli
from kedro.pipeline import Pipeline
from kedro.pipeline.node import Node
from kedro_sagemaker.config import SageMakerMetricsTrackingConfig
from kedro_sagemaker.constants import (
    KEDRO_SAGEMAKER_METRICS,
    KEDRO_SAGEMAKER_S3_TEMP_DIR_NAME,
)
from kedro_sagemaker.generator import KedroSageMakerGenerator
from kedro_sagemaker.utils import KedroContextManager, flatten_dict
from mlflow.environment_variables import MLFLOW_RUN_ID

from tsa_kedro.deploy.config import (
    DeploymentConfigError,
    ProjectPluginConfig,
    ProjectResourceConfig,
    aws_problems,
    data_root_problems,
    missing_environment,
    preflight_error,
    read_plugin_config,
)
from tsa_kedro.deploy.path_parameters import (
    entrypoint_environment,
    execute_arguments,
    parameters_of_node,
    path_parameter_problems,
    sagemaker_parameters,
)
from tsa_kedro.deploy.resources import resolve_resources

# SageMaker API limits on a job's environment (botocore's sagemaker service model):
# at most 100 variables; values up to 256 characters for processing jobs (512 for
# training jobs). The plugin adds up to 4 variables of its own to every step.
MAX_ENV_VARIABLES = 100
PLUGIN_ENV_VARIABLES = 4
MAX_ENV_VALUE_CHARS = 256

_ORIGINALS: dict[str, object] = {}


def _plugin_config(manager: KedroContextManager) -> ProjectPluginConfig:
    """``KedroContextManager.plugin_config``: every setting checked, before any AWS
    call and before the pipeline is generated; all problems in one message."""
    click_context = click.get_current_context(silent=True)
    cli_values = click_context.params if click_context else {}
    env = manager.env or "base"
    context = manager.context
    config, problems = read_plugin_config(
        Path(context.project_path),
        env,
        {
            "aws.execution_role": cli_values.get("execution_role"),
            "docker.image": cli_values.get("image"),
        },
    )
    data_root = context.config_loader["globals"].get("data_root")
    problems += data_root_problems(data_root, env)
    problems += missing_environment(config.tsa_kedro.required_environment, env)
    problems += path_parameter_problems(
        context.config_loader, config.tsa_kedro.path_parameters, env
    )
    # compile writes a file; run creates the pipeline and starts it.
    calls_aws = click_context is not None and click_context.info_name == "run"
    problems += aws_problems(needs_credentials=calls_aws)
    if problems:
        raise preflight_error(env, problems)
    return config


def _resources_for_node(
    self: KedroSageMakerGenerator, node: Node | SimpleNamespace
) -> ProjectResourceConfig:
    return resolve_resources(self.config.aws.resources, node.name, node.tags)


def _as_training_node(node: Node, metric_definitions: dict[str, str]) -> Node:
    """A copy of ``node`` that the plugin compiles into a TrainingStep."""

    @functools.wraps(node.func)
    def training_job(*args, **kwargs):
        return node.func(*args, **kwargs)

    setattr(
        training_job,
        KEDRO_SAGEMAKER_METRICS,
        SageMakerMetricsTrackingConfig(dict(metric_definitions)),
    )
    return node._copy(func=training_job)


def _kedro_pipeline(self: KedroSageMakerGenerator) -> Pipeline:
    pipeline = _ORIGINALS["get_kedro_pipeline"](self)
    options = self.config.tsa_kedro
    training_tags = set(options.training_step_tags)
    return Pipeline(
        [
            _as_training_node(node, options.metric_definitions)
            if training_tags & set(node.tags)
            else node
            for node in pipeline.nodes
        ]
    )


def _step_environment(generator: KedroSageMakerGenerator) -> dict[str, str]:
    options = generator.config.tsa_kedro
    forwarded = {
        name: os.environ[name]
        for name in options.forward_environment
        if name in os.environ
    }
    return {**forwarded, **options.step_environment}


def _exposed_parameters(
    params: dict, selected: list[str], reserved_variables: int = PLUGIN_ENV_VARIABLES
) -> dict:
    """The flattened parameters whose key is, or starts with, a selected key."""
    flat = flatten_dict(params)
    exposed = {}
    for prefix in selected:
        matches = {
            key: value
            for key, value in flat.items()
            if key == prefix or key.startswith(prefix + ".")
        }
        if not matches:
            raise DeploymentConfigError(
                f"tsa_kedro.pipeline_parameters lists {prefix!r}, which matches no "
                "parameter of this environment."
            )
        exposed.update(matches)
    if len(exposed) * 2 + reserved_variables > MAX_ENV_VARIABLES:
        raise DeploymentConfigError(
            f"tsa_kedro.pipeline_parameters exposes {len(exposed)} parameters; SageMaker "
            f"allows {(MAX_ENV_VARIABLES - reserved_variables) // 2} here (each takes "
            "two environment variables of every step)."
        )
    for key, value in exposed.items():
        text = value if isinstance(value, str) else json.dumps(value)
        if max(len(key), len(text)) > MAX_ENV_VALUE_CHARS:
            raise DeploymentConfigError(
                f"Parameter {key!r} is too long to be a SageMaker pipeline parameter "
                f"(over {MAX_ENV_VALUE_CHARS} characters); remove it from "
                "tsa_kedro.pipeline_parameters."
            )
    return exposed


def _prepare_sagemaker_params(self: KedroSageMakerGenerator) -> tuple[list, dict]:
    path_parameters = self.config.tsa_kedro.path_parameters
    exposed = _exposed_parameters(
        self.kedro_context.params,
        self.config.tsa_kedro.pipeline_parameters,
        PLUGIN_ENV_VARIABLES
        + len(_step_environment(self))
        + 2 * len(path_parameters),  # a training step's entrypoint variables
    )
    # The plugin's own method reads nothing but ``self.kedro_context.params``.
    restricted = SimpleNamespace(kedro_context=SimpleNamespace(params=exposed))
    parameters, environment = _ORIGINALS["_prepare_sagemaker_params"](restricted)
    named = sagemaker_parameters(self.kedro_context.config_loader, path_parameters)
    return [*parameters, *named], environment


def _bound(method_name: str, args: tuple, kwargs: dict, name: str):
    """Argument ``name`` of a call of the plugin's ``method_name``."""
    signature = inspect.signature(_ORIGINALS[method_name])
    return signature.bind(*args, **kwargs).arguments[name]


def _create_processing_step(*args, **kwargs):
    step = _ORIGINALS["_create_processing_step"](*args, **kwargs)
    generator = args[0]
    resources = _bound("_create_processing_step", args, kwargs, "node_resources")
    node = _bound("_create_processing_step", args, kwargs, "node")
    step.processor.env.update(_step_environment(generator))
    if getattr(resources, "volume_size_gb", None):
        step.processor.volume_size_in_gb = resources.volume_size_gb
    names = parameters_of_node(generator.config.tsa_kedro.path_parameters, node)
    if names:
        step.job_arguments = execute_arguments(names)
    return step


def _create_training_step(*args, **kwargs):
    step = _ORIGINALS["_create_training_step"](*args, **kwargs)
    generator = args[0]
    resources = _bound("_create_training_step", args, kwargs, "node_resources")
    node = _bound("_create_training_step", args, kwargs, "node")
    environment = step.estimator.environment
    environment.update(_step_environment(generator))
    names = parameters_of_node(generator.config.tsa_kedro.path_parameters, node)
    environment.update(entrypoint_environment(names, environment))
    if getattr(resources, "volume_size_gb", None):
        step.estimator.volume_size = resources.volume_size_gb
    # The project bucket, not SageMaker's default one: compile then needs no AWS call
    # and the execution role needs access to one bucket only.
    step.estimator.output_path = (
        f"s3://{generator.config.aws.bucket}/{KEDRO_SAGEMAKER_S3_TEMP_DIR_NAME}/"
        "training-jobs/"
    )
    # No Debugger hook or profiler: the profiler's report rule is an extra job per run.
    step.estimator.disable_profiler = True
    step.estimator.debugger_hook_config = False
    return step


def _add_mlflow_support(self: KedroSageMakerGenerator, steps, runner_config):
    if self.config.tsa_kedro.mlflow_run_step:
        _ORIGINALS["_add_mlflow_support"](self, steps, runner_config)


def _lookup_mlflow_run_id(context, execution_arn: str):
    if not hasattr(context, "mlflow"):  # kedro-mlflow's hooks are disabled here
        return MLFLOW_RUN_ID.name, None
    return _ORIGINALS["lookup_mlflow_run_id"](context, execution_arn)


def install() -> None:
    """Put the project's changes into kedro-sagemaker (idempotent)."""
    if _ORIGINALS:
        return
    replacements = {
        "get_kedro_pipeline": _kedro_pipeline,
        "_get_resources_for_node": _resources_for_node,
        "_prepare_sagemaker_params": _prepare_sagemaker_params,
        "_create_processing_step": _create_processing_step,
        "_create_training_step": _create_training_step,
        "_add_mlflow_support": _add_mlflow_support,
    }
    for name, replacement in replacements.items():
        _ORIGINALS[name] = getattr(KedroSageMakerGenerator, name)
        setattr(KedroSageMakerGenerator, name, replacement)
    _ORIGINALS["lookup_mlflow_run_id"] = plugin_cli.lookup_mlflow_run_id
    plugin_cli.lookup_mlflow_run_id = _lookup_mlflow_run_id
    plugin_config = functools.cached_property(_plugin_config)
    plugin_config.__set_name__(KedroContextManager, "plugin_config")
    KedroContextManager.plugin_config = plugin_config
