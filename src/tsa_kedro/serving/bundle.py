"""Assembling the files of ``model.tar.gz``: artefacts, handler code, requirements.

``export_onnx`` compiles the trained model into the bundle's ``model.onnx``, which the
handler serves through ONNX Runtime (``compiled.py``); it runs at packaging time only
and is not shipped.

The code shipped under ``code/`` is exactly the set of ``tsa_kedro`` modules that the
handler imports, found by importing ``code/inference.py``'s module in a fresh
interpreter and reading ``sys.modules``. That interpreter must not import Kedro, R
(rpy2) or MLflow: if it does, a serving module grew a dependency it must not have and
packaging stops with the offending modules named.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

import tsa_kedro
from tsa_kedro.models.config import TSAConfig
from tsa_kedro.serving import layout
from tsa_kedro.serving.compiled import INPUT_NAMES, OUTPUT_NAME, probe_inputs

ENTRY_MODULE = "tsa_kedro.serving.inference"
FORBIDDEN_TOP_LEVEL = ("kedro", "kedro_datasets", "kedro_mlflow", "rpy2", "mlflow")


COMPILED_FORMATS = ("onnx", "none")


class PackageError(RuntimeError):
    """The bundle cannot be built as specified."""


def export_onnx(model: torch.nn.Module, config: TSAConfig) -> bytes:
    """The eager model as an ONNX graph with a dynamic batch dimension.

    Exported with ``torch.export`` (``torch.onnx.export(dynamo=True)``) from a probe
    batch of two orders, categorical inputs as int32 as the handler passes them, in
    eval mode.

    Raises:
        PackageError: The export fails (for example a mixture-of-experts model, whose
            routing has data-dependent shapes); ``package.compiled_model: none``
            packages such a model without the artefact.
    """
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    model = model.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model,
                probe_inputs(config, batch=2),
                input_names=list(INPUT_NAMES),
                output_names=[OUTPUT_NAME],
                dynamic_shapes={name: {0: batch} for name in INPUT_NAMES},
                dynamo=True,
                optimize=True,
                verbose=False,
            )
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / layout.COMPILED_MODEL
            program.save(path)
            content = path.read_bytes()
    except Exception as error:
        raise PackageError(
            "exporting the model to ONNX failed "
            f"({type(error).__name__}: {str(error).splitlines()[0][:300]}); "
            "set package.compiled_model: none to package it without the artefact"
        ) from error
    return content


def source_root() -> Path:
    """The folder holding the ``tsa_kedro`` package in use."""
    return Path(tsa_kedro.__file__).resolve().parent.parent


def handler_modules(root: Path | None = None) -> dict[str, Path]:
    """Every ``tsa_kedro`` module the handler imports, by archive path under code/.

    Raises:
        PackageError: The import fails, pulls in a forbidden package, or loads a
            ``tsa_kedro`` module from outside ``root``.
    """
    root = root or source_root()
    probe = (
        "import json, sys\n"
        f"import {ENTRY_MODULE}\n"
        "print(json.dumps({n: getattr(m, '__file__', None) "
        "for n, m in list(sys.modules.items())}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(root)}
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if result.returncode != 0:
        raise PackageError(
            f"importing the handler ({ENTRY_MODULE}) failed:\n{result.stderr[-3000:]}"
        )
    modules: dict[str, str | None] = json.loads(result.stdout.strip().splitlines()[-1])
    forbidden = sorted(
        name for name in modules if name.split(".")[0] in FORBIDDEN_TOP_LEVEL
    )
    if forbidden:
        raise PackageError(
            "the serving handler must not import Kedro, R or MLflow, but importing "
            f"{ENTRY_MODULE} loads {forbidden[:10]}"
        )
    files: dict[str, Path] = {}
    for name, file in sorted(modules.items()):
        if name != "tsa_kedro" and not name.startswith("tsa_kedro."):
            continue
        path = Path(file).resolve()
        try:
            relative = path.relative_to(root)
        except ValueError as exc:
            raise PackageError(
                f"module {name} was imported from {path}, outside {root}"
            ) from exc
        files[f"{layout.CODE_DIR}/{relative.as_posix()}"] = path
    return files


def pinned_requirements(distributions: Iterable[str]) -> str:
    """``requirements.txt`` pinning each distribution to its installed version.

    The versions are those of the environment that built (and tested) the bundle,
    which ``requirements.lock`` pins.

    Raises:
        PackageError: A distribution is not installed.
    """
    lines = []
    for name in distributions:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError as exc:
            raise PackageError(
                f"package.runtime_requirements lists {name!r}, which is not installed"
            ) from exc
        lines.append(f"{name}=={version}")
    return "\n".join(lines) + "\n"


def git_commit(root: Path | None = None) -> dict[str, Any]:
    """Commit of the project (``TSA_GIT_COMMIT`` wins; None outside a checkout)."""
    if os.environ.get("TSA_GIT_COMMIT"):
        return {"git_commit": os.environ["TSA_GIT_COMMIT"], "git_dirty": None}
    root = root or source_root()

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, check=True
            )
        except (OSError, subprocess.CalledProcessError):
            return None
        return out.stdout.strip()

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"git_commit": commit, "git_dirty": bool(status) if commit else None}


def active_mlflow_run_id() -> str | None:
    """The active MLflow run's id when tracking is on in this process, else None."""
    mlflow = sys.modules.get("mlflow")
    if mlflow is None:
        return None
    run = mlflow.active_run()
    return run.info.run_id if run else None


def json_bytes(data: Any) -> bytes:
    """Readable JSON bytes (two-space indent, newline). Key order is kept: it is
    deterministic for the same inputs and some of it matters (``id_columns``)."""
    return (json.dumps(data, indent=2, allow_nan=False) + "\n").encode()


def artefact_files(
    *,
    weights: bytes,
    model_config: Mapping[str, Any],
    percentile_map: list,
    bspline_parameters: Mapping[str, Any],
    cat_to_index: Mapping[str, Any],
    scaling: Mapping[str, Any],
    default_values: Mapping[str, Any],
    raw_schema: Mapping[str, Any],
    preprocess_params: Mapping[str, Any],
    serving_config: Mapping[str, Any],
    reference_profile: Mapping[str, Any],
    compiled_model: bytes | None = None,
) -> dict[str, bytes]:
    """The bundle's data files (everything but code, samples and the manifest);
    ``compiled_model`` is the exported ``model.onnx``, when there is one."""
    compiled = {} if compiled_model is None else {layout.COMPILED_MODEL: compiled_model}
    return {
        **compiled,
        layout.WEIGHTS: weights,
        layout.MODEL_CONFIG: json_bytes(model_config),
        layout.PERCENTILE_MAP: json_bytes(percentile_map),
        layout.BSPLINE_PARAMETERS: json_bytes(bspline_parameters),
        layout.CAT_TO_INDEX: json_bytes(cat_to_index),
        layout.SCALING: json_bytes(scaling),
        layout.DEFAULT_VALUES: json_bytes(default_values),
        layout.RAW_SCHEMA: json_bytes(raw_schema),
        layout.PREPROCESS_PARAMS: json_bytes(preprocess_params),
        layout.SERVING_CONFIG: json_bytes(serving_config),
        layout.REFERENCE_PROFILE: json_bytes(reference_profile),
    }


def code_files(runtime_requirements: Iterable[str]) -> dict[str, bytes]:
    """``code/inference.py``, the imported ``tsa_kedro`` modules, requirements."""
    modules = handler_modules()
    files = {name: path.read_bytes() for name, path in modules.items()}
    entry = f"{layout.CODE_DIR}/tsa_kedro/serving/inference.py"
    if entry not in files:
        raise PackageError(f"{ENTRY_MODULE} was not found among the handler's modules")
    files[layout.ENTRY_POINT] = files[entry]
    files[layout.REQUIREMENTS] = pinned_requirements(runtime_requirements).encode()
    return files
