"""Experiment tracking: kedro-mlflow's configuration and the project's tracking hook."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import mlflow
import pytest
from kedro.framework.hooks.manager import _create_hook_manager
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import node, pipeline
from kedro.runner import SequentialRunner
from mlflow.tracking import MlflowClient

from tsa_kedro.tracking import MlflowTrackingHook, history_records

PROJECT = Path(__file__).resolve().parents[2]

HISTORY = [
    {"epoch": 1, "train_loss": 0.70, "val_roc_auc": 0.61, "lr": 1e-4},
    {"epoch": 2, "train_loss": 0.52, "val_roc_auc": 0.74, "lr": 5e-4},
    {"epoch": 3, "train_loss": 0.41, "val_roc_auc": float("nan"), "lr": 2e-4},
]


@pytest.mark.parametrize(
    "history",
    [
        HISTORY,
        {"epochs": HISTORY},
        {
            "train_loss": [0.70, 0.52, 0.41],
            "val_roc_auc": [0.61, 0.74, float("nan")],
            "lr": [1e-4, 5e-4, 2e-4],
        },
    ],
)
def test_history_shapes(history) -> None:
    records = history_records(history)
    assert [epoch for epoch, _ in records] == [1, 2, 3]
    assert records[1][1] == {"train_loss": 0.52, "val_roc_auc": 0.74, "lr": 5e-4}
    assert "val_roc_auc" not in records[2][1]  # NaN is not logged


def test_unsupported_history_is_refused() -> None:
    with pytest.raises(TypeError, match="training_history"):
        history_records("loss=0.3")


def _train(history_out: list) -> tuple:
    figure, axis = plt.subplots()
    axis.plot([0, 1], [0, 1])
    return history_out, {"tsa": {"roc_auc": 0.9, "pr_auc": 0.5}}, figure


def test_hook_logs_epochs_metrics_and_artefacts(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tiny = pipeline(
        [
            node(
                _train,
                inputs="history_in",
                outputs=["training_history", "train_metrics", "roc_plot"],
                name="train_model",
            )
        ]
    )
    catalog = DataCatalog(
        {
            "history_in": MemoryDataset(HISTORY),
            "training_history": MemoryDataset(),
            "train_metrics": MemoryDataset(),
            "roc_plot": MemoryDataset(),
        }
    )
    hooks = _create_hook_manager()
    hooks.register(MlflowTrackingHook())
    mlflow.set_tracking_uri(uri)
    try:
        experiment = mlflow.set_experiment("tracking-test")
        with mlflow.start_run(experiment_id=experiment.experiment_id) as run:
            SequentialRunner().run(tiny, catalog, hooks)
    finally:
        mlflow.set_tracking_uri("")
    client = MlflowClient(tracking_uri=uri)
    loss = client.get_metric_history(run.info.run_id, "train_loss")
    assert [(m.step, m.value) for m in loss] == [(1, 0.70), (2, 0.52), (3, 0.41)]
    assert len(client.get_metric_history(run.info.run_id, "val_roc_auc")) == 2
    metrics = client.get_run(run.info.run_id).data.metrics
    assert metrics["train_metrics.tsa.pr_auc"] == 0.5
    artefacts = {a.path for a in client.list_artifacts(run.info.run_id, "artefacts")}
    assert "artefacts/train_metrics.json" in artefacts
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert plots == {"plots/roc_plot.png"}


def test_hook_is_silent_without_an_active_run() -> None:
    assert mlflow.active_run() is None
    MlflowTrackingHook().after_node_run(
        node=None, outputs={"training_history": "not even a history"}
    )


def test_mlflow_yml_puts_the_store_under_the_data_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_root = tmp_path / "data"
    monkeypatch.setenv("TSA_DATA_ROOT", str(data_root))
    monkeypatch.setenv("KEDRO_DISABLE_TELEMETRY", "1")
    bootstrap_project(PROJECT)
    with KedroSession.create(project_path=PROJECT) as session:
        session._hook_manager.register(MlflowTrackingHook())
        context = session.load_context()
        config = context.mlflow
        assert config.server.mlflow_tracking_uri == (
            f"sqlite:///{data_root}/09_registry/mlflow.db"
        )
        assert (data_root / "09_registry").is_dir()
        experiment = MlflowClient(
            config.server.mlflow_tracking_uri
        ).get_experiment_by_name("tsa_kedro")
        assert experiment.artifact_location == (
            (data_root / "09_registry" / "mlartifacts").as_uri()
        )
        register = context.params["register_mlflow"]
        assert register["tracking_uri"] == config.server.mlflow_tracking_uri
    mlflow.set_tracking_uri("")
