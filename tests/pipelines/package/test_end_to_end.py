"""`kedro run` end to end on small synthetic data: the bundle, served alone, scores
like the pipeline, and the run ends with a registered model version in the local
MLflow registry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.serving.isolated import run_isolated
from tsa_kedro import settings
from tsa_kedro.tracking import MlflowTrackingHook

# Small enough for CI, large enough for calibration (>= 1000 fit records).
SMALL_RUN = ",".join(
    [
        "synthetic_profiles.default.n_customers=600",
        "ingest.ragged_tolerance=0.01",
        "preprocess.workers=2",
        "train.training.epochs=1",
        "train.training.progress=False",
        # one epoch cannot beat the baseline; this test is about packaging and
        # registration, the gate has its own tests
        "register_gate.tsa_not_worse_than_baseline_pr_auc.margin=1.0",
        "register_gate.validation_pr_auc.min=0.0",
        "register_gate.validation_roc_auc.min=0.0",
        "register_gate.validation_queue_recall.min=0.0",
        "register_gate.calibration_not_worse_than_raw.margin=1.0",
    ]
)


def _tracking_hook_registered() -> bool:
    return any(
        isinstance(h, MlflowTrackingHook) for h in getattr(settings, "HOOKS", ())
    )


@pytest.mark.slow
def test_kedro_run_registers_a_servable_bundle(kedro_cli, tmp_path: Path) -> None:
    data = kedro_cli.data_root
    if not _tracking_hook_registered():
        # without the project's hook nothing creates the SQLite store's folder
        (data / "09_registry").mkdir(parents=True)
    kedro_cli("run", "--pipeline=demo", f"--params={SMALL_RUN}")

    decision = json.loads(
        (data / "08_reporting/registration_decision.json").read_text()
    )
    assert decision["registered"] is True, decision["reason"]
    assert decision["version"] == "1"
    package = (data / "06_models/model.tar.gz").read_bytes()

    uri = f"sqlite:///{data}/09_registry/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    version = client.get_model_version("tsa-fraud", "1")
    assert version.run_id == decision["run_id"]
    assert float(version.tags["metric.train.tsa.roc_auc"]) > 0.0
    assert json.loads(version.tags["data_window.cali"])["start"] == "2024-05-01"
    download = tmp_path / "download"
    download.mkdir()
    client.download_artifacts(version.run_id, "model_package", str(download))
    assert (download / "model_package" / "model.tar.gz").read_bytes() == package

    run = client.get_run(version.run_id)  # the training run kedro-mlflow opened
    assert run.data.params["train.training.epochs"] == "1"
    if _tracking_hook_registered():
        history = client.get_metric_history(version.run_id, "train_loss")
        assert [m.step for m in history] == [1]

    # the bundle, unpacked alone, scores raw calibration orders like the pipeline
    cali = pd.concat(
        pd.read_parquet(p)
        for p in sorted((data / "02_intermediate/cali/raw_chunks").glob("*.parquet"))
    ).iloc[:150]
    result = run_isolated(
        tmp_path / "serve",
        package,
        cali.to_json(orient="records").encode(),
        "application/json",
    )
    assert result["kedro_imported"] == []
    scores = pd.read_csv(
        data / "07_model_output/score_file.csv", dtype={"order_id": str}
    )
    expected = scores.set_index("order_id")["score"]
    scored = [a for a in result["answer"] if "score" in a]
    # the pipeline scores labelled orders only; the handler scores every valid order
    unlabelled = set(cali.loc[cali["is_fraud"].isna(), "order_id"])
    compared = [a for a in scored if a["order_id"] not in unlabelled]
    assert {a["order_id"] for a in compared} <= set(expected.index)
    assert len(compared) >= 140
    np.testing.assert_allclose(
        [a["score"] for a in compared],
        expected.loc[[a["order_id"] for a in compared]].to_numpy(),
        atol=1e-6,
        rtol=0,
    )

    # another run of the register stage adds version 2 beside version 1
    kedro_cli("run", "--pipeline=register", f"--params={SMALL_RUN}")
    versions = client.search_model_versions("name='tsa-fraud'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
