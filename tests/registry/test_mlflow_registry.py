"""Registration in a real MLflow Model Registry on an embedded SQLite store."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from tsa_kedro.pipelines.register.nodes import check_registration_gate, register_model
from tsa_kedro.serving.archive import read_tar_gz, sha256_bytes

from .helpers import CALIBRATION_METRICS, GATE_CHECKS, TRAIN_METRICS, tiny_package

REGISTER = {"registry": "mlflow", "model_name": "tsa-test", "description": "test"}


@pytest.fixture
def mlflow_params(tmp_path: Path) -> dict:
    return {
        "tracking_uri": f"sqlite:///{tmp_path}/registry/mlflow.db",
        "artifact_location": str(tmp_path / "registry" / "artifacts"),
        "experiment_name": "tsa_test",
        "alias": "candidate",
    }


def _register(package: bytes, mlflow_params: dict, train_metrics=TRAIN_METRICS) -> dict:
    gate = check_registration_gate(train_metrics, CALIBRATION_METRICS, GATE_CHECKS)
    return register_model(
        package, gate, train_metrics, CALIBRATION_METRICS, REGISTER, mlflow_params, {}
    )


def test_each_run_adds_a_version_with_tags_and_the_package(
    tmp_path: Path, mlflow_params: dict
) -> None:
    first = _register(tiny_package(0), mlflow_params)
    package = tiny_package(1)
    second = _register(package, mlflow_params)
    assert first["registered"] and second["registered"]
    assert (first["version"], second["version"]) == ("1", "2")

    client = MlflowClient(tracking_uri=mlflow_params["tracking_uri"])
    version = client.get_model_version("tsa-test", "2")
    assert version.tags["git_commit"] == "abc123"
    assert version.tags["training_run_id"] == "run-42"
    assert version.tags["metric.train.tsa.pr_auc"] == "0.61"
    assert version.tags["metric.train.tsa.operating_points.top_1pct.recall"] == "0.4"
    assert version.tags["metric.calibration.methods.bspline.log_loss"] == "0.07"
    assert version.tags["package_sha256"] == sha256_bytes(package)
    assert '"2024-01-01"' in version.tags["data_window.train"]
    candidate = client.get_model_version_by_alias("tsa-test", "candidate")
    assert str(candidate.version) == "2"

    run = client.get_run(version.run_id)
    assert run.data.metrics["train.tsa.roc_auc"] == pytest.approx(0.93)
    (tmp_path / "dl").mkdir()
    downloaded = Path(
        client.download_artifacts(version.run_id, "model_package", str(tmp_path / "dl"))
    )
    stored = (downloaded / "model.tar.gz").read_bytes()
    assert stored == package
    assert "model_config.json" in read_tar_gz(stored)
    assert version.source.endswith("/model_package")
    assert str(tmp_path / "registry" / "artifacts") in version.source


def test_failing_gate_registers_nothing(mlflow_params: dict, tmp_path: Path) -> None:
    weak = {**TRAIN_METRICS, "tsa": {**TRAIN_METRICS["tsa"], "pr_auc": 0.2}}
    decision = _register(tiny_package(), mlflow_params, train_metrics=weak)
    assert decision["registered"] is False
    assert "validation_pr_auc" in decision["reason"]
    assert "off by 0.1" in decision["reason"]
    assert "tsa_vs_baseline" in decision["reason"]
    assert not (tmp_path / "registry" / "mlflow.db").exists()


def test_uses_the_active_training_run_on_the_same_store(
    mlflow_params: dict, tmp_path: Path
) -> None:
    (tmp_path / "registry").mkdir()
    mlflow.set_tracking_uri(mlflow_params["tracking_uri"])
    try:
        experiment = mlflow.set_experiment("training")
        with mlflow.start_run(experiment_id=experiment.experiment_id) as run:
            decision = _register(tiny_package(), mlflow_params)
        assert decision["run_id"] == run.info.run_id
    finally:
        mlflow.set_tracking_uri("")


def test_unknown_registry_is_refused(mlflow_params: dict) -> None:
    gate = check_registration_gate(TRAIN_METRICS, CALIBRATION_METRICS, GATE_CHECKS)
    with pytest.raises(ValueError, match="register.registry"):
        register_model(
            tiny_package(),
            gate,
            TRAIN_METRICS,
            CALIBRATION_METRICS,
            {**REGISTER, "registry": "nexus"},
            mlflow_params,
            {},
        )
