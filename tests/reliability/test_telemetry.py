"""Nothing is sent out unasked: kedro-telemetry and the SageMaker SDK are off by default.

The commands run as a user types them: without ``KEDRO_DISABLE_TELEMETRY``,
``DO_NOT_TRACK`` or any SageMaker SDK variable, with a home folder of their own (no
personal SDK defaults), in a copy of the project so that nothing can touch the
repository's own ``pyproject.toml``. Sending is replaced by a recorder: a test that
fails sends nothing either.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT
from tsa_kedro import telemetry

UNASKED = (
    "KEDRO_DISABLE_TELEMETRY",
    "DO_NOT_TRACK",
    "SAGEMAKER_ADMIN_CONFIG_OVERRIDE",
    "SAGEMAKER_USER_CONFIG_OVERRIDE",
)

# The real `kedro` command line, with kedro-telemetry's sender recording instead.
KEDRO_RECORDING_SENDS = """
import json, os, sys
import kedro_telemetry.plugin as plugin

def record(event_name, identity, properties):
    with open(os.environ["SENT_LOG"], "a") as log:
        log.write(event_name + "\\n")

plugin._send_heap_event = record
from kedro.framework.cli import main
sys.argv = ["kedro", *sys.argv[1:]]
main()
"""

# Loads the project's settings as every kedro command does, then calls an SDK function
# wrapped by the SDK's telemetry decorator, with the SDK's own loading of its defaults:
# first as the user has them, then after the user has added an opt-in file.
SAGEMAKER_RECORDING_SENDS = """
import os, sys
from pathlib import Path
from kedro.framework.project import settings
from kedro.framework.startup import bootstrap_project
from sagemaker.config import load_sagemaker_config
from sagemaker.telemetry import telemetry_logging
from sagemaker.telemetry.constants import Feature

def record(*args, **kwargs):
    with open(os.environ["SENT_LOG"], "a") as log:
        log.write(f"sagemaker telemetry, call {calls}\\n")

telemetry_logging._send_telemetry_request = record
project, opt_in = sys.argv[1:]
bootstrap_project(project)
settings.HOOKS  # imports tsa_kedro.settings

class Session:
    def __init__(self):
        self.sagemaker_config = load_sagemaker_config()

class PipelineLike:
    def __init__(self):
        self.sagemaker_session = Session()

    @telemetry_logging._telemetry_emitter(Feature.MLOPS_V2, "Pipeline.upsert")
    def upsert(self):
        return "upserted"

calls = 1
print(PipelineLike().upsert())
Path(opt_in).parent.mkdir(parents=True)
Path(opt_in).write_text(
    "SchemaVersion: '1.0'\\nSageMaker:\\n  PythonSDK:\\n    Modules:\\n"
    "      TelemetryOptOut: false\\n"
)
calls = 2
print(PipelineLike().upsert())
"""


@pytest.fixture
def user_project(tmp_path: Path) -> Path:
    """The project's root files and configuration in a folder of its own."""
    project = tmp_path / "project"
    project.mkdir()
    for name in ("pyproject.toml", ".telemetry"):
        if (PROJECT_ROOT / name).exists():
            shutil.copy(PROJECT_ROOT / name, project / name)
    shutil.copytree(PROJECT_ROOT / "conf", project / "conf", symlinks=True)
    shutil.copytree(
        PROJECT_ROOT / "src", project / "src", ignore=shutil.ignore_patterns("__py*")
    )
    return project


def _user_env(project: Path, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in UNASKED}
    home = tmp_path / "home"
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_CONFIG_DIRS=str(tmp_path / "etc-xdg"),
        PYTHONPATH=str(project / "src"),
        TSA_DATA_ROOT=str(tmp_path / "data"),
        TSA_MLFLOW_TRACKING="off",
        SENT_LOG=str(tmp_path / "sent.log"),
    )
    return env


def _run(script: str, args: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result.stdout


@pytest.mark.slow
def test_kedro_sends_nothing_and_leaves_pyproject_alone(
    user_project: Path, tmp_path: Path
) -> None:
    before = (user_project / "pyproject.toml").read_bytes()
    env = _user_env(user_project, tmp_path)
    _run(KEDRO_RECORDING_SENDS, ["catalog", "list"], user_project, env)
    assert (user_project / "pyproject.toml").read_bytes() == before
    assert not (tmp_path / "sent.log").exists()
    assert not (tmp_path / "home" / ".config" / "kedro").exists()  # no user id either


def test_kedro_telemetry_consent_check_says_no() -> None:
    from kedro_telemetry.plugin import _check_for_telemetry_consent  # noqa: PLC0415

    saved = {k: os.environ.pop(k) for k in UNASKED if k in os.environ}
    try:
        assert _check_for_telemetry_consent(PROJECT_ROOT) is False
    finally:
        os.environ.update(saved)


@pytest.mark.slow
def test_sagemaker_sdk_sends_nothing_unless_a_user_file_opts_in(
    user_project: Path, tmp_path: Path
) -> None:
    env = _user_env(user_project, tmp_path)
    opt_in = tmp_path / "home" / ".config" / "sagemaker" / "config.yaml"
    output = _run(
        SAGEMAKER_RECORDING_SENDS, [str(user_project), str(opt_in)], user_project, env
    )
    assert output.splitlines().count("upserted") == 2
    assert (tmp_path / "sent.log").read_text() == "sagemaker telemetry, call 2\n"


def test_project_defaults_fill_the_lowest_free_layer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_DIRS", str(tmp_path / "etc-xdg"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    project_file = str(telemetry.SAGEMAKER_SDK_DEFAULTS)

    environ: dict[str, str] = {}
    assert telemetry.use_project_sagemaker_defaults(environ) == (
        "SAGEMAKER_ADMIN_CONFIG_OVERRIDE"
    )
    assert environ == {"SAGEMAKER_ADMIN_CONFIG_OVERRIDE": project_file}

    admin_file = tmp_path / "etc-xdg" / "sagemaker" / "config.yaml"
    admin_file.parent.mkdir(parents=True)
    admin_file.write_text("SchemaVersion: '1.0'\n")
    environ = {}
    telemetry.use_project_sagemaker_defaults(environ)
    assert environ == {"SAGEMAKER_USER_CONFIG_OVERRIDE": project_file}

    environ = {"SAGEMAKER_USER_CONFIG_OVERRIDE": "/somewhere/config.yaml"}
    assert telemetry.use_project_sagemaker_defaults(environ) is None
    assert environ == {"SAGEMAKER_USER_CONFIG_OVERRIDE": "/somewhere/config.yaml"}
