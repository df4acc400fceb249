"""The project's ``kedro`` commands: its own ``kedro sagemaker`` group.

Kedro imports ``<package>.cli`` whenever the ``kedro`` command starts inside the project
and prefers the commands of its ``cli`` group to the plugins' commands of the same name
(built-in < plugins < ``cli.py``). The ``sagemaker`` group here therefore replaces
kedro-sagemaker's group: same ``-e/--env`` option, same commands and options, but
``compile`` and ``run`` generate the pipeline with the project's subclasses of the
plugin's classes (:mod:`tsa_kedro.deploy.plugin`), and ``execute`` looks up a parent
MLflow run only when kedro-mlflow is on in the step. ``init``, ``entrypoint`` and
``mlflow-start`` are the plugin's own commands, unchanged. The plugin itself is not
modified.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click
from kedro_sagemaker.cli import sagemaker_group as plugin_group
from kedro_sagemaker.cli_functions import docker_autobuild, parse_extra_params
from kedro_sagemaker.client import SageMakerClient
from kedro_sagemaker.constants import KEDRO_SAGEMAKER_EXECUTION_ARN
from kedro_sagemaker.runner import SageMakerPipelinesRunner
from kedro_sagemaker.utils import CliContext, KedroContextManager, is_mlflow_enabled

from tsa_kedro.deploy.plugin import context_and_pipeline, lookup_mlflow_run_id

UNCHANGED_PLUGIN_COMMANDS = ("init", "entrypoint", "mlflow-start")


@click.group(name="tsa_kedro")
def cli() -> None:
    """Project commands: ``kedro sagemaker`` with the project's deployment settings."""


@cli.group(name="sagemaker", context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-e",
    "--env",
    "env",
    type=str,
    default=lambda: os.environ.get("KEDRO_ENV", "local"),
    help="Environment to use.",
)
@click.pass_obj
@click.pass_context
def sagemaker(ctx: click.Context, metadata, env: str) -> None:
    ctx.obj = CliContext(env, metadata)


for _name in UNCHANGED_PLUGIN_COMMANDS:
    sagemaker.add_command(plugin_group.commands[_name])


def _plugin_options(name: str):
    """Register the decorated function as ``kedro sagemaker <name>``, with the options,
    help and visibility of the plugin's command of that name."""
    plugin_command = plugin_group.commands[name]
    return sagemaker.command(
        name=name,
        params=list(plugin_command.params),
        help=plugin_command.help,
        hidden=plugin_command.hidden,
    )


@_plugin_options("compile")
@click.pass_obj
def compile_(
    ctx: CliContext,
    execution_role: str | None,
    image: str | None,
    pipeline: str,
    params: str | None,
    local: bool,
    output_path: str,
) -> None:
    with context_and_pipeline(ctx, image, pipeline, params, local, execution_role) as (
        _,
        sm_pipeline,
    ):
        target_path = Path(output_path)
        with target_path.open("w") as f:
            json.dump(json.loads(sm_pipeline.definition()), f, indent=4)
        click.echo(f"Pipeline compiled to {target_path}")


@_plugin_options("run")
@click.pass_obj
@click.pass_context
def run(
    click_context: click.Context,
    ctx: CliContext,
    execution_role: str | None,
    image: str | None,
    pipeline: str,
    params: str | None,
    wait_for_completion: bool,
    local: bool,
    auto_build: bool,
    yes: bool,
) -> None:
    with context_and_pipeline(
        ctx, image, pipeline, params, local, execution_role, needs_credentials=True
    ) as (manager, sm_pipeline):
        config = manager.plugin_config
        docker_autobuild(
            auto_build, click_context, image or config.docker.image, manager, yes
        )
        client = SageMakerClient(
            sm_pipeline, execution_role or config.aws.execution_role
        )
        is_ok = client.run(
            is_local=local,
            wait_for_completion=wait_for_completion,
            on_pipeline_started=lambda p: click.echo(
                f"Pipeline ARN: {p.describe()['PipelineArn']}"
            ),
        )
        if is_ok:
            state = "finished" if wait_for_completion else "started"
            click.echo(click.style(f"Pipeline {state} successfully", fg="green"))
        else:
            click.echo(
                click.style("There was an error while running the pipeline", fg="red")
            )
        click_context.exit(0 if is_ok else 1)


@_plugin_options("execute")
@click.pass_obj
def execute(ctx: CliContext, pipeline: str, node: str, params: str | None) -> None:
    parameters = parse_extra_params(params)
    with KedroContextManager(
        ctx.metadata.package_name, env=ctx.env, extra_params=parameters
    ) as manager:
        if is_mlflow_enabled():
            env_key, env_value = lookup_mlflow_run_id(
                manager.context, os.getenv(KEDRO_SAGEMAKER_EXECUTION_ARN)
            )
            if env_value is not None:
                click.echo(f"Mlflow run id: {env_value}")
                os.environ[env_key] = env_value
        manager.session.run(
            pipeline, node_names=[node], runner=SageMakerPipelinesRunner()
        )
