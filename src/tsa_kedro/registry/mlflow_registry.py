"""Registering a model package in an MLflow Model Registry.

The default store is an embedded SQLite database (``sqlite:///<path>``) with artefacts in
a folder beside it: no server. ``mlflow ui --backend-store-uri sqlite:///<path>`` browses
it. Any other MLflow tracking URI works the same way.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

logger = logging.getLogger(__name__)

# MLflow refuses tag values longer than this (model-version tags: 5000 characters).
_MAX_TAG_VALUE = 5000


def resolve_store_uri(uri: str) -> str:
    """A tracking URI with a local SQLite file made absolute and its folder created.

    ``sqlite:///relative/path.db`` is relative to the working folder; making it absolute
    keeps the registry in one place whatever the working folder of later readers.
    """
    parsed = urlparse(uri)
    if parsed.scheme != "sqlite":
        return uri
    db_path = Path(uri[len("sqlite:///") :])
    db_path = db_path if db_path.is_absolute() else Path.cwd() / db_path
    db_path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{db_path.resolve()}"


def resolve_artifact_location(location: str | None) -> str | None:
    """An artefact location with a local path turned into an absolute ``file://`` URI."""
    if location is None or urlparse(location).scheme not in ("", "file"):
        return location
    path = Path(location.removeprefix("file://"))
    path = path if path.is_absolute() else Path.cwd() / path
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve().as_uri()


def _tag_value(value: Any) -> str:
    text = str(value)
    return text if len(text) <= _MAX_TAG_VALUE else text[: _MAX_TAG_VALUE - 3] + "..."


def _experiment_id(
    client: MlflowClient, name: str, artifact_location: str | None
) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return client.create_experiment(name, artifact_location=artifact_location)
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id


def _active_run_on(tracking_uri: str) -> str | None:
    """The id of the process's active MLflow run if it lives in ``tracking_uri``."""
    run = mlflow.active_run()
    if run is None:
        return None
    if resolve_store_uri(mlflow.get_tracking_uri()) != tracking_uri:
        return None
    return run.info.run_id


def register_package(
    package: bytes,
    *,
    model_name: str,
    tracking_uri: str,
    experiment_name: str,
    artifact_location: str | None,
    tags: Mapping[str, Any],
    metrics: Mapping[str, float],
    extra_files: Mapping[str, bytes],
    description: str,
    alias: str | None = None,
) -> dict[str, Any]:
    """Log ``package`` as a run artefact and register it as a new model version.

    The artefact goes to the process's active MLflow run when that run is on the same
    tracking store (the training run started by kedro-mlflow), otherwise to a new run
    in ``experiment_name``.

    Args:
        package: Bytes of ``model.tar.gz``.
        model_name: Registered model name; created if missing.
        tracking_uri: Tracking and registry URI (``sqlite:///...`` for the local store).
        experiment_name: Experiment of the registration run when no run is active.
        artifact_location: Artefact root of that experiment when it is created.
        tags: Model-version tags (values are turned into text).
        metrics: Numbers logged on the run.
        extra_files: More files logged beside the package (file name to bytes).
        description: Model-version description.
        alias: Registered-model alias moved to the new version (None: no alias).

    Returns:
        ``{"model_name", "version", "run_id", "source", "tracking_uri"}``.
    """
    tracking_uri = resolve_store_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    run_id = _active_run_on(tracking_uri)
    own_run = run_id is None
    if own_run:
        experiment_id = _experiment_id(
            client, experiment_name, resolve_artifact_location(artifact_location)
        )
        run_id = client.create_run(experiment_id, run_name="register").info.run_id
    try:
        with tempfile.TemporaryDirectory() as tmp:
            package_path = Path(tmp) / "model.tar.gz"
            package_path.write_bytes(package)
            client.log_artifact(
                run_id, str(package_path), artifact_path="model_package"
            )
            for name, content in extra_files.items():
                path = Path(tmp) / name
                path.write_bytes(content)
                client.log_artifact(run_id, str(path), artifact_path="registration")
        for key, value in metrics.items():
            client.log_metric(run_id, key, float(value))
        run = client.get_run(run_id)
        try:
            client.get_registered_model(model_name)
        except MlflowException:
            client.create_registered_model(
                model_name, description="TSA fraud classifier (model.tar.gz bundles)"
            )
        source = f"{run.info.artifact_uri}/model_package"
        version = client.create_model_version(
            model_name,
            source=source,
            run_id=run_id,
            tags={k: _tag_value(v) for k, v in tags.items()},
            description=description,
        )
        if alias:
            client.set_registered_model_alias(model_name, alias, version.version)
    except BaseException:
        if own_run:
            client.set_terminated(run_id, "FAILED")
        raise
    if own_run:
        client.set_terminated(run_id, "FINISHED")
    logger.info(
        "Registered %s version %s in %s (run %s)",
        model_name,
        version.version,
        tracking_uri,
        run_id,
    )
    return {
        "model_name": model_name,
        "version": str(version.version),
        "run_id": run_id,
        "source": source,
        "tracking_uri": tracking_uri,
    }
