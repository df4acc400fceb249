"""docker/serving.Dockerfile: what it installs and how it starts (no Docker engine here)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.conftest import PROJECT_ROOT
from tests.deploy.test_dockerfile import parse_dockerfile

DOCKER = PROJECT_ROOT / "docker"


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return parse_dockerfile((DOCKER / "serving.Dockerfile").read_text())


def _args(dockerfile) -> dict[str, str]:
    return dict(a.split("=", 1) for kind, a in dockerfile if kind == "ARG" and "=" in a)


def _runs(dockerfile) -> list[str]:
    return [arguments for kind, arguments in dockerfile if kind == "RUN"]


def _index(runs: list[str], fragment: str) -> int:
    (position,) = [i for i, run in enumerate(runs) if fragment in run]
    return position


def _lock() -> dict[str, str]:
    lines = (PROJECT_ROOT / "requirements.lock").read_text().splitlines()
    pins = dict(line.lower().split("==", 1) for line in lines if "==" in line)
    return pins


def _serving_requirements() -> list[str]:
    text = (DOCKER / "serving-requirements.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.split("#")[0].strip()]


def test_same_python_as_the_pipeline_image(dockerfile):
    pipeline = parse_dockerfile((PROJECT_ROOT / "Dockerfile").read_text())
    assert _args(dockerfile)["PYTHON_IMAGE"] == _args(pipeline)["PYTHON_IMAGE"]
    kinds = [kind for kind, _ in dockerfile]
    assert kinds.index("FROM") == kinds.index("ARG") + 1  # only ARGs before FROM
    assert ("FROM", "${PYTHON_IMAGE}") in dockerfile


def test_torch_at_the_project_pin_then_the_locked_runtime(dockerfile):
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    dependencies = pyproject["project"]["dependencies"]
    (torch_pin,) = [d for d in dependencies if d.startswith("torch")]
    args = _args(dockerfile)
    assert f"torch=={args['TORCH_VERSION']}" == torch_pin
    assert re.fullmatch(
        r"https://download\.pytorch\.org/whl/(cpu|cu\d+)", args["TORCH_INDEX_URL"]
    )
    runs = _runs(dockerfile)
    torch_step = _index(runs, '"torch==${TORCH_VERSION}"')
    assert '--index-url "${TORCH_INDEX_URL}"' in runs[torch_step]
    runtime_step = _index(runs, "-r /tmp/serving-requirements.txt")
    assert "-c /tmp/requirements.lock" in runs[runtime_step]
    project_step = _index(runs, "pip install --no-deps .")
    assert torch_step < runtime_step < project_step
    copies = [a for kind, a in dockerfile if kind == "COPY"]
    assert "docker/serving-requirements.txt requirements.lock /tmp/" in copies
    # what the project copies: the package and what building it reads, nothing else
    assert {"pyproject.toml README.md ./", "src ./src"} <= set(copies)
    assert not [c for c in copies if c.split()[0] in (".", "conf", "tests")]


def test_runtime_is_the_bundle_requirements_and_the_server_all_locked():
    params = yaml.safe_load(
        (PROJECT_ROOT / "conf/base/parameters_package.yml").read_text()
    )
    bundle_runtime = set(params["package"]["runtime_requirements"]) - {"torch"}
    requirements = _serving_requirements()
    assert set(requirements) == bundle_runtime | {"gunicorn"}
    lock = _lock()
    assert not [name for name in requirements if name.lower() not in lock]
    assert "torch" not in lock  # nothing replaces the torch build of the image
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    assert f"gunicorn=={lock['gunicorn']}" in pyproject["project"]["dependencies"]


def test_sagemaker_serve_command_starts_the_server(dockerfile):
    kinds = [kind for kind, _ in dockerfile]
    assert "ENTRYPOINT" not in kinds  # SageMaker's `serve` argument is the command
    assert dockerfile[-1] == ("CMD", '["serve"]')
    assert ("EXPOSE", "8080") in dockerfile
    assert any(
        "install -m 0755 /tmp/serve /usr/local/bin/serve" in run
        for run in _runs(dockerfile)
    )
    assert ("COPY", "docker/serve /tmp/serve") in dockerfile
    users = [a for kind, a in dockerfile if kind == "USER"]
    assert users and users[-1] != "root"
    serve = DOCKER / "serve"
    assert os.access(serve, os.X_OK)
    text = serve.read_text()
    assert "exec python -m tsa_kedro.serving.server" in text
    assert '--model "${TSA_MODEL_PATH:-/opt/ml/model}" --host 0.0.0.0' in text


def test_serve_script_runs_the_server(tmp_path):
    """docker/serve with this interpreter: a model folder that is not there stops it."""
    missing = tmp_path / "opt-ml-model"
    result = subprocess.run(
        ["sh", str(DOCKER / "serve"), "--workers", "1"],
        env={
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            "PYTHONPATH": str(PROJECT_ROOT / "src"),
            "TSA_MODEL_PATH": str(missing),
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert f"model path {missing} does not exist" in result.stderr
