"""The project's ``kedro sagemaker`` group: Kedro picks it over the plugin's group of
the same name, it keeps the plugin's commands and options, and importing it leaves
kedro-sagemaker as installed."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import click
import kedro_sagemaker.cli as plugin_cli
import pytest
from kedro.framework.cli.cli import KedroCLI
from kedro_sagemaker import cli_functions
from kedro_sagemaker.generator import KedroSageMakerGenerator
from kedro_sagemaker.utils import KedroContextManager
from mlflow.environment_variables import MLFLOW_RUN_ID

from tests.conftest import PROJECT_ROOT, kedro_env
from tsa_kedro import cli as project_cli
from tsa_kedro.deploy.plugin import lookup_mlflow_run_id

# Run in a fresh interpreter: records the plugin's classes and modules, imports the
# project's cli as Kedro does, and prints every attribute that is no longer the same
# object.
UNTOUCHED_SCRIPT = """
import importlib, json
import kedro_sagemaker.cli
import kedro_sagemaker.cli_functions
import kedro_sagemaker.generator
import kedro_sagemaker.utils
from kedro_sagemaker.generator import KedroSageMakerGenerator
from kedro_sagemaker.utils import KedroContextManager

watched = {
    "KedroSageMakerGenerator": KedroSageMakerGenerator,
    "KedroContextManager": KedroContextManager,
    "kedro_sagemaker.cli": kedro_sagemaker.cli,
    "kedro_sagemaker.cli_functions": kedro_sagemaker.cli_functions,
    "kedro_sagemaker.generator": kedro_sagemaker.generator,
    "kedro_sagemaker.utils": kedro_sagemaker.utils,
}
before = {name: dict(vars(owner)) for name, owner in watched.items()}
importlib.import_module("tsa_kedro.cli")
missing = object()
changed = [
    f"{name}.{key}"
    for name, owner in watched.items()
    for key in sorted(set(before[name]) | set(vars(owner)))
    if before[name].get(key, missing) is not vars(owner).get(key, missing)
]
print(json.dumps(changed))
"""


def test_importing_the_project_cli_changes_nothing_in_the_plugin():
    result = subprocess.run(
        [sys.executable, "-c", UNTOUCHED_SCRIPT],
        cwd=PROJECT_ROOT,
        env=kedro_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_plugin_functions_are_the_plugins_own_in_this_process():
    assert plugin_cli.lookup_mlflow_run_id is cli_functions.lookup_mlflow_run_id
    for owner in (KedroSageMakerGenerator, KedroContextManager):
        for name, value in vars(owner).items():
            function = getattr(value, "func", getattr(value, "fget", value))
            if callable(function):
                assert function.__module__.startswith("kedro_sagemaker."), name


def test_kedro_resolves_sagemaker_to_the_project_group():
    """``kedro sagemaker`` in this project is the group of ``tsa_kedro.cli`` (the
    compile and run tests go through the real ``kedro`` command, so through it too)."""
    kedro_cli = KedroCLI(project_path=PROJECT_ROOT)
    context = click.Context(kedro_cli)
    group = kedro_cli.get_command(context, "sagemaker")
    assert group is project_cli.sagemaker
    assert group is not plugin_cli.sagemaker_group
    commands = group.commands
    for name in ("compile", "run", "execute"):
        assert commands[name] is not plugin_cli.sagemaker_group.commands[name]
    for name in ("init", "entrypoint", "mlflow-start"):
        assert commands[name] is plugin_cli.sagemaker_group.commands[name]
    assert set(commands) == set(plugin_cli.sagemaker_group.commands)


def _options(command: click.Command) -> list[dict]:
    """The command's parameters; a default computed at call time by its value."""
    options = []
    for parameter in command.params:
        info = parameter.to_info_dict()
        if callable(info["default"]):
            info["default"] = info["default"]()
        options.append(info)
    return options


@pytest.mark.parametrize("kedro_env_variable", [None, "sagemaker"])
def test_same_commands_and_options_as_the_plugin(
    kedro_env_variable: str | None, monkeypatch: pytest.MonkeyPatch
):
    if kedro_env_variable is None:
        monkeypatch.delenv("KEDRO_ENV", raising=False)
    else:
        monkeypatch.setenv("KEDRO_ENV", kedro_env_variable)
    assert _options(project_cli.sagemaker)[0]["default"] == (
        kedro_env_variable or "local"
    )
    plugin_group = plugin_cli.sagemaker_group
    assert _options(project_cli.sagemaker) == _options(plugin_group)
    assert project_cli.sagemaker.name == plugin_group.name
    for name, plugin_command in plugin_group.commands.items():
        command = project_cli.sagemaker.commands[name]
        assert _options(command) == _options(plugin_command), name
        assert command.hidden == plugin_command.hidden, name
        assert command.help == plugin_command.help, name


def test_no_mlflow_lookup_without_kedro_mlflow_in_the_context():
    """kedro-mlflow's hooks off: the context has no ``mlflow`` attribute, and no parent
    run is looked up (the plugin's lookup would fail on the missing attribute)."""
    assert lookup_mlflow_run_id(SimpleNamespace(), "arn:aws:sagemaker:x") == (
        MLFLOW_RUN_ID.name,
        None,
    )
