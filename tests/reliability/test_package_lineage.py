"""The bundle's ``training_run_id`` names the run that trained the model, also when
``kedro run --pipeline=package`` runs alone."""

from __future__ import annotations

import io
import json
import tarfile

import mlflow
import pytest
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog
from mlflow.tracking import MlflowClient

from tests.conftest import PROJECT_ROOT
from tests.serving.conftest import BSPLINE, PREPROCESS
from tsa_kedro.pipelines.train.nodes import record_training_run
from tsa_kedro.settings import CONFIG_LOADER_ARGS

TRAINING_RUN_ID = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"


def test_the_train_stage_records_the_active_run(tmp_path):
    assert record_training_run({}) == {"training_run_id": None}
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    try:
        # an experiment of this store: another test may have left a different one
        # active in this process
        experiment = mlflow.create_experiment("lineage")
        with mlflow.start_run(experiment_id=experiment) as run:
            assert record_training_run({}) == {"training_run_id": run.info.run_id}
    finally:
        mlflow.set_tracking_uri("")


def _project_catalog(monkeypatch, data_root) -> DataCatalog:
    monkeypatch.setenv("TSA_DATA_ROOT", str(data_root))
    loader = OmegaConfigLoader(
        conf_source=str(PROJECT_ROOT / "conf"), **CONFIG_LOADER_ARGS
    )
    return DataCatalog.from_config(loader["catalog"])


@pytest.mark.slow
def test_packaging_alone_keeps_the_training_run_id(kedro_cli, tiny_model, monkeypatch):
    data = kedro_cli.data_root
    catalog = _project_catalog(monkeypatch, data)
    for name, value in {
        "cali.raw_chunks": tiny_model.cali_chunks,
        "score_file": tiny_model.score_file,
        "model_weights": tiny_model.weights,
        "model_config": tiny_model.model_config,
        "percentile_map": tiny_model.percentile_map,
        "bspline_parameters": BSPLINE,
        "cat_to_index": tiny_model.cat_to_index,
        "scaling": tiny_model.scaling,
        "default_values": tiny_model.default_values,
        "training_run": {"training_run_id": TRAINING_RUN_ID},
        "reference_profile": tiny_model.reference_profile,
    }.items():
        catalog.save(name, value)

    kedro_cli(
        "run",
        "--pipeline=package",
        f"--params=preprocess.seq_len={PREPROCESS['seq_len']}",
    )

    bundle = tarfile.open(fileobj=io.BytesIO(catalog.load("model_package")))
    manifest = json.load(bundle.extractfile("manifest.json"))
    assert manifest["training_run_id"] == TRAINING_RUN_ID
    client = MlflowClient(f"sqlite:///{data}/09_registry/mlflow.db")
    (packaging,) = client.search_runs(
        [client.get_experiment_by_name("tsa_kedro").experiment_id]
    )
    assert packaging.data.tags["mlflow.runName"] == "package"
    assert packaging.info.run_id != TRAINING_RUN_ID
