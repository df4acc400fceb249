"""The Dockerfile parses and installs what set-up and CI install (no Docker engine here)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.conftest import PROJECT_ROOT

INSTRUCTIONS = {
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK",
    "LABEL", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
}  # fmt: skip


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """(instruction, arguments) pairs; continuation lines joined, comments dropped.

    Raises:
        ValueError: an unknown instruction, or a file ending inside a continuation.
    """
    instructions, pending = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        pending = ""
        if keyword.upper() not in INSTRUCTIONS:
            raise ValueError(f"unknown Dockerfile instruction {keyword!r}")
        instructions.append((keyword.upper(), " ".join(arguments.split())))
    if pending:
        raise ValueError("Dockerfile ends inside a continuation line")
    return instructions


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return parse_dockerfile((PROJECT_ROOT / "Dockerfile").read_text())


def _args(dockerfile) -> dict[str, str]:
    return dict(a.split("=", 1) for kind, a in dockerfile if kind == "ARG" and "=" in a)


def _runs(dockerfile) -> list[str]:
    return [arguments for kind, arguments in dockerfile if kind == "RUN"]


def test_parser_rejects_broken_files():
    with pytest.raises(ValueError, match="FORM"):
        parse_dockerfile("FORM python:3.11\n")
    with pytest.raises(ValueError, match="continuation"):
        parse_dockerfile("FROM python:3.11\nRUN true \\\n")


def test_base_image_is_the_project_python(dockerfile):
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["requires-python"] == ">=3.11,<3.12"
    kinds = [kind for kind, _ in dockerfile]
    assert kinds.index("FROM") == kinds.index("ARG") + 1  # only ARGs before FROM
    base = _args(dockerfile)["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11(-[a-z]+)*-bookworm", base), base


def _setup_sh_package_filter() -> str:
    """The ``sed ... | awk ...`` filter that scripts/setup.sh applies to the lists."""
    setup = (PROJECT_ROOT / "scripts" / "setup.sh").read_text()
    match = re.search(r"apt-\*?\S*\.txt \| (sed .*?awk '\w+')", setup)
    assert match, "scripts/setup.sh no longer filters the package lists with sed | awk"
    return match.group(1)


def _filtered(command: str, path: Path) -> list[str]:
    result = subprocess.run(
        f"cat {shlex.quote(str(path))} | {command}",
        shell=True,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.split()


def test_debian_packages_are_the_runtime_list_of_setup(dockerfile):
    copies = [a for kind, a in dockerfile if kind == "COPY"]
    assert "scripts/apt-runtime.txt /tmp/apt-runtime.txt" in copies
    (apt_run,) = [run for run in _runs(dockerfile) if "apt-get install" in run]
    image_filter = re.search(r"(sed .*?) /tmp/apt-runtime.txt \| (awk '\w+')", apt_run)
    assert image_filter, apt_run
    runtime_list = PROJECT_ROOT / "scripts" / "apt-runtime.txt"
    in_image = _filtered(
        f"{image_filter.group(1)} | {image_filter.group(2)}", runtime_list
    )
    in_setup = _filtered(_setup_sh_package_filter(), runtime_list)
    assert in_image == in_setup
    assert {"r-base-core", "r-cran-quadprog", "r-cran-jsonlite"} <= set(in_image)
    assert "--no-install-recommends" in apt_run


def test_torch_cuda_build_first_then_the_lock(dockerfile):
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    (torch_pin,) = [
        d for d in pyproject["project"]["dependencies"] if d.startswith("torch")
    ]
    args = _args(dockerfile)
    assert f"torch=={args['TORCH_VERSION']}" == torch_pin
    assert re.fullmatch(
        r"https://download\.pytorch\.org/whl/cu\d+", args["TORCH_INDEX_URL"]
    )
    runs = _runs(dockerfile)
    torch_step = next(
        i for i, run in enumerate(runs) if '"torch==${TORCH_VERSION}"' in run
    )
    assert '--index-url "${TORCH_INDEX_URL}"' in runs[torch_step]
    assert (
        "torch.version.cuda is None" in runs[torch_step]
    )  # the build fails on CPU torch
    lock_step = next(
        i for i, run in enumerate(runs) if "-r /tmp/requirements.lock" in run
    )
    assert torch_step < lock_step
    lock = (PROJECT_ROOT / "requirements.lock").read_text().lower().split()
    assert not [line for line in lock if line.startswith("torch")]
    project_step = next(
        i for i, run in enumerate(runs) if "pip install --no-deps ." in run
    )
    assert lock_step < project_step


def test_training_entrypoint_and_working_directory(dockerfile):
    assert "ENTRYPOINT" not in [kind for kind, _ in dockerfile]
    assert any(
        "install -m 0755 docker/train /usr/local/bin/train" in r
        for r in _runs(dockerfile)
    )
    train = PROJECT_ROOT / "docker" / "train"
    assert os.access(train, os.X_OK)
    assert "exec kedro sagemaker entrypoint" in train.read_text()
    settings = yaml.safe_load(
        (PROJECT_ROOT / "conf" / "sagemaker" / "sagemaker.yml").read_text()
    )
    workdir = [a for kind, a in dockerfile if kind == "WORKDIR"][-1]
    assert workdir == settings["docker"]["working_directory"]


def test_container_logging_configuration_is_valid(dockerfile):
    env = " ".join(a for kind, a in dockerfile if kind == "ENV")
    workdir = [a for kind, a in dockerfile if kind == "WORKDIR"][-1]
    path = re.search(r"KEDRO_LOGGING_CONFIG=(\S+)", env).group(1)
    local = PROJECT_ROOT / Path(path).relative_to(workdir)
    config = yaml.safe_load(local.read_text())
    assert config["handlers"]["console"]["class"] == "logging.StreamHandler"
    check = "import logging.config, sys, yaml; logging.config.dictConfig(yaml.safe_load(open(sys.argv[1])))"
    subprocess.run([sys.executable, "-c", check, str(local)], check=True)


def test_dockerignore_keeps_what_the_image_needs():
    patterns = [
        line.strip()
        for line in (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for excluded in (".venv", ".git", "data", "conf/local/**", "mlruns"):
        assert excluded in patterns
    needed = ["src", "conf", "conf/base", "conf/sagemaker", "docker", "scripts",
              "requirements.lock", "pyproject.toml", "README.md"]  # fmt: skip
    assert not set(needed) & set(patterns)
