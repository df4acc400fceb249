"""The project's subclasses of kedro-sagemaker 0.4.0's context manager and generator.

``ProjectContextManager`` and ``ProjectSageMakerGenerator`` extend the plugin's
``KedroContextManager`` and ``KedroSageMakerGenerator``; the project's own
``kedro sagemaker`` group (``tsa_kedro.cli``, which Kedro prefers to the plugin's group
of the same name) builds its pipelines with them through :func:`context_and_pipeline`.
The plugin's modules and classes are used as they are. Each change answers a known
problem of the plugin:

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
  of ``tsa_kedro.path_parameters`` that the pipeline uses are added and handed to
  the steps that use them (:mod:`tsa_kedro.deploy.path_parameters`);
* MLflow: the ``start-mlflow-run`` step only when ``tsa_kedro.mlflow_run_step`` is on;
* environment: the variables named in ``tsa_kedro.forward_environment`` are copied from
  the compiling shell into every step (the containers read the same configuration), with
  the fixed ``tsa_kedro.step_environment``; ``tsa_kedro.required_environment`` must be
  set before anything is generated;
* speed: the generator gets the context with its catalog and parameters read once,
  and the SDK checks its defaults schema once (:mod:`tsa_kedro.deploy.generation`);
* MLflow run lookup: ``execute`` skips it when kedro-mlflow is switched off in the step
  (the plugin assumes kedro-mlflow's context attribute whenever the package imports);
  see :func:`lookup_mlflow_run_id`.
"""

from __future__ import annotations

import copy
import functools
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from types import SimpleNamespace

from kedro.pipeline import Pipeline
from kedro.pipeline.node import Node
from kedro_sagemaker import cli_functions
from kedro_sagemaker.cli_functions import parse_extra_params
from kedro_sagemaker.config import SageMakerMetricsTrackingConfig
from kedro_sagemaker.constants import (
    KEDRO_SAGEMAKER_METRICS,
    KEDRO_SAGEMAKER_S3_TEMP_DIR_NAME,
)
from kedro_sagemaker.generator import KedroSageMakerGenerator
from kedro_sagemaker.utils import CliContext, KedroContextManager, flatten_dict
from mlflow.environment_variables import MLFLOW_RUN_ID
from sagemaker.workflow.pipeline import Pipeline as SageMakerPipeline

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
from tsa_kedro.deploy.generation import LoadedOnce, sdk_schema_checked_once
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


class ProjectContextManager(KedroContextManager):
    """The plugin's context manager, with the project's settings and their checks.

    Args:
        package_name, env, extra_params: as for the plugin's ``KedroContextManager``.
        execution_role: ``--execution-role`` of the command, replacing
            ``aws.execution_role``; None keeps the configured role.
        image: ``--image`` of the command, replacing ``docker.image``; None keeps the
            configured image.
        needs_credentials: whether the command calls AWS (``run``), so that missing
            AWS credentials are a problem.
    """

    def __init__(
        self,
        package_name: str,
        env: str,
        extra_params: dict | None = None,
        *,
        execution_role: str | None = None,
        image: str | None = None,
        needs_credentials: bool = False,
    ):
        super().__init__(package_name, env, extra_params)
        self.overrides = {"aws.execution_role": execution_role, "docker.image": image}
        self.needs_credentials = needs_credentials

    @cached_property
    def plugin_config(self) -> ProjectPluginConfig:
        """Every setting, checked before any AWS call and before the pipeline is
        generated.

        Raises:
            DeploymentConfigError: one message listing every problem: settings,
                ``data_root``, required variables, path parameters, region and, when
                ``needs_credentials``, credentials.
        """
        env = self.env or "base"
        context = self.context
        config, problems = read_plugin_config(
            Path(context.project_path), env, self.overrides
        )
        data_root = context.config_loader["globals"].get("data_root")
        problems += data_root_problems(data_root, env)
        problems += missing_environment(config.tsa_kedro.required_environment, env)
        problems += path_parameter_problems(
            context.config_loader, config.tsa_kedro.path_parameters, env
        )
        problems += aws_problems(needs_credentials=self.needs_credentials)
        if problems:
            raise preflight_error(env, problems)
        return config


def exposed_parameters(
    params: dict, selected: list[str], reserved_variables: int = PLUGIN_ENV_VARIABLES
) -> dict:
    """The flattened parameters whose key is, or starts with, a selected key.

    Raises:
        DeploymentConfigError: a selected key that matches no parameter; more
            parameters than a job environment holds beside ``reserved_variables``; a
            key or value over SageMaker's length limit (each named).
    """
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


class ProjectSageMakerGenerator(KedroSageMakerGenerator):
    """The plugin's generator with the project's steps, resources and parameters;
    ``config`` is a :class:`ProjectPluginConfig`."""

    config: ProjectPluginConfig

    def get_kedro_pipeline(self) -> Pipeline:
        options = self.config.tsa_kedro
        training_tags = set(options.training_step_tags)
        return Pipeline(
            [
                _as_training_node(node, options.metric_definitions)
                if training_tags & set(node.tags)
                else node
                for node in super().get_kedro_pipeline().nodes
            ]
        )

    def _get_resources_for_node(
        self, node: Node | SimpleNamespace
    ) -> ProjectResourceConfig:
        return resolve_resources(self.config.aws.resources, node.name, node.tags)

    def step_environment(self) -> dict[str, str]:
        """The forwarded variables that are set here, and ``step_environment``."""
        options = self.config.tsa_kedro
        forwarded = {
            name: os.environ[name]
            for name in options.forward_environment
            if name in os.environ
        }
        return {**forwarded, **options.step_environment}

    def _prepare_sagemaker_params(self) -> tuple[list, dict]:
        path_parameters = self.config.tsa_kedro.path_parameters
        exposed = exposed_parameters(
            self.kedro_context.params,
            self.config.tsa_kedro.pipeline_parameters,
            PLUGIN_ENV_VARIABLES
            + len(self.step_environment())
            + 2 * len(path_parameters),  # a training step's entrypoint variables
        )
        # The plugin's method turns every parameter of ``kedro_context.params`` into
        # pipeline parameters: it gets a view holding the exposed ones only.
        view = copy.copy(self)
        view.kedro_context = SimpleNamespace(params=exposed)
        parameters, environment = super(
            ProjectSageMakerGenerator, view
        )._prepare_sagemaker_params()
        # Only the path parameters that a step of this pipeline uses are declared.
        used = {
            name
            for node in self.get_kedro_pipeline().nodes
            for name in parameters_of_node(path_parameters, node)
        }
        named = sagemaker_parameters(
            self.kedro_context.config_loader,
            {name: target for name, target in path_parameters.items() if name in used},
        )
        return [*parameters, *named], environment

    def _create_processing_step(
        self,
        node,
        node_resources,
        runner_config,
        sm_node_name,
        sm_param_envs,
        entrypoint=None,
    ):
        step = super()._create_processing_step(
            node, node_resources, runner_config, sm_node_name, sm_param_envs, entrypoint
        )
        step.processor.env.update(self.step_environment())
        if getattr(node_resources, "volume_size_gb", None):
            step.processor.volume_size_in_gb = node_resources.volume_size_gb
        path_parameters = self.config.tsa_kedro.path_parameters
        names = parameters_of_node(path_parameters, node)
        if names:
            step.job_arguments = execute_arguments(names, path_parameters)
        return step

    def _create_training_step(
        self,
        node,
        node_resources,
        runner_config,
        sagemaker_model_inputs,
        sm_metrics,
        sm_node_name,
        sm_param_envs,
        sm_training_steps_with_model_outputs,
    ):
        step = super()._create_training_step(
            node,
            node_resources,
            runner_config,
            sagemaker_model_inputs,
            sm_metrics,
            sm_node_name,
            sm_param_envs,
            sm_training_steps_with_model_outputs,
        )
        environment = step.estimator.environment
        environment.update(self.step_environment())
        path_parameters = self.config.tsa_kedro.path_parameters
        names = parameters_of_node(path_parameters, node)
        environment.update(entrypoint_environment(names, environment, path_parameters))
        if getattr(node_resources, "volume_size_gb", None):
            step.estimator.volume_size = node_resources.volume_size_gb
        # The project bucket, not SageMaker's default one: compile then needs no AWS
        # call and the execution role needs access to one bucket only.
        step.estimator.output_path = (
            f"s3://{self.config.aws.bucket}/{KEDRO_SAGEMAKER_S3_TEMP_DIR_NAME}/"
            "training-jobs/"
        )
        # No Debugger hook or profiler: the profiler's report rule is an extra job
        # per run.
        step.estimator.disable_profiler = True
        step.estimator.debugger_hook_config = False
        return step

    def _add_mlflow_support(self, steps, runner_config):
        if self.config.tsa_kedro.mlflow_run_step:
            super()._add_mlflow_support(steps, runner_config)


@contextmanager
def context_and_pipeline(
    ctx: CliContext,
    docker_image: str | None,
    pipeline: str,
    params: str | None,
    is_local: bool,
    execution_role_arn: str | None = None,
    needs_credentials: bool = False,
) -> Iterator[tuple[ProjectContextManager, SageMakerPipeline]]:
    """The Kedro session of ``ctx`` and the SageMaker pipeline generated from
    ``pipeline`` with the project's classes.

    Args:
        ctx: the ``kedro sagemaker`` group's context (environment, project metadata).
        docker_image, execution_role_arn: the command's ``--image`` and
            ``--execution-role``; None keeps the configured ones.
        pipeline: name of the registered Kedro pipeline.
        params: the command's ``--params`` (a JSON object) or None.
        is_local: whether the pipeline runs in SageMaker's local session.
        needs_credentials: whether the command calls AWS.

    Raises:
        DeploymentConfigError: the settings' problems, in one message, before
            anything is generated.
    """
    with ProjectContextManager(
        ctx.metadata.package_name,
        ctx.env,
        parse_extra_params(params, True),
        execution_role=execution_role_arn,
        image=docker_image,
        needs_credentials=needs_credentials,
    ) as manager:
        generator = ProjectSageMakerGenerator(
            pipeline,
            LoadedOnce(manager.context),
            manager.plugin_config,
            docker_image,
            is_local,
            execution_role_arn,
        )
        with sdk_schema_checked_once():
            yield manager, generator.generate()


def lookup_mlflow_run_id(context, execution_arn: str | None) -> tuple[str, str | None]:
    """The MLflow run of a pipeline execution, as the plugin finds it; no run (and no
    MLflow call) when kedro-mlflow's hooks are disabled in this environment."""
    if not hasattr(context, "mlflow"):
        return MLFLOW_RUN_ID.name, None
    return cli_functions.lookup_mlflow_run_id(context, execution_arn)
