"""The register pipeline run as a whole with SequentialRunner."""

from __future__ import annotations

from pathlib import Path

from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from mlflow.tracking import MlflowClient

from tests.registry.helpers import (
    CALIBRATION_METRICS,
    GATE_CHECKS,
    TRAIN_METRICS,
    tiny_package,
)
from tsa_kedro.pipelines.register import create_pipeline


def _catalog(tmp_path: Path, train_metrics: dict) -> DataCatalog:
    return DataCatalog(
        {
            "model_package": MemoryDataset(tiny_package()),
            "train_metrics": MemoryDataset(train_metrics),
            "calibration_metrics": MemoryDataset(CALIBRATION_METRICS),
            "params:register_gate": MemoryDataset(GATE_CHECKS),
            "params:register": MemoryDataset(
                {"registry": "mlflow", "model_name": "tsa-pipe", "description": "t"}
            ),
            "params:register_mlflow": MemoryDataset(
                {
                    "tracking_uri": f"sqlite:///{tmp_path}/reg/mlflow.db",
                    "artifact_location": str(tmp_path / "reg" / "artifacts"),
                    "experiment_name": "tsa",
                    "alias": None,
                }
            ),
            "params:register_sagemaker": MemoryDataset({}),
        }
    )


def test_pipeline_registers_a_passing_model(tmp_path: Path) -> None:
    outputs = SequentialRunner().run(
        create_pipeline(), _catalog(tmp_path, TRAIN_METRICS)
    )
    decision = outputs["registration_decision"]
    assert decision["registered"] is True
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/reg/mlflow.db")
    versions = client.search_model_versions("name='tsa-pipe'")
    assert [v.version for v in versions] == [1]


def test_pipeline_reports_a_failing_model_without_crashing(tmp_path: Path) -> None:
    weak = {
        "tsa": {"roc_auc": 0.6, "pr_auc": 0.1},
        "baseline": {"roc_auc": 0.7, "pr_auc": 0.3},
    }
    outputs = SequentialRunner().run(create_pipeline(), _catalog(tmp_path, weak))
    decision = outputs["registration_decision"]
    assert decision["registered"] is False
    assert decision["gate"]["failed"] == ["validation_pr_auc", "tsa_vs_baseline"]
    assert (
        "validation_pr_auc: train_metrics.tsa.pr_auc = 0.1 (needs >= 0.3)"
        in (decision["reason"])
    )
