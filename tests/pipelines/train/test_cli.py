"""``kedro run --pipeline=train`` through the real CLI: the catalog entries of
conf/base/catalog_train.yml write real files that read back."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from safetensors.torch import load_file

from tests.raw_data import base_schema, tiny_orders
from tests.training.standin import VOCAB_SIZE, make_bundle
from tsa_kedro.features.raw_orders import normalize_raw_orders

ROOT = Path(__file__).resolve().parents[3]

# Stand-ins for the catalog entries that the merge and fit_transforms stages declare.
INPUT_CATALOG = {
    **{
        f"{split}.model_input": {
            "type": "pickle.PickleDataset",
            "filepath": f"${{globals:data_root}}/05_model_input/{split}.pkl",
        }
        for split in ("train", "vali", "cali")
    },
    "cat_to_index": {
        "type": "json.JSONDataset",
        "filepath": "${globals:data_root}/04_feature/cat_to_index.json",
    },
}


@pytest.mark.slow
def test_kedro_run_train_writes_every_output(kedro_cli, tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf, ignore=shutil.ignore_patterns("local"))
    (conf / "local").mkdir()
    # The train stage's inputs come from this test, not from the upstream stages.
    for upstream in ("catalog_fit_transforms.yml", "catalog_preprocess.yml"):
        (conf / "base" / upstream).unlink()
    (conf / "base" / "catalog_test_inputs.yml").write_text(
        yaml.safe_dump(INPUT_CATALOG)
    )
    parameters = yaml.safe_load((conf / "base" / "parameters_train.yml").read_text())
    parameters["train"]["training"].update(epochs=2, batch_size=32)
    parameters["train"]["baseline"].update(max_iter=20)
    (conf / "local" / "parameters_train.yml").write_text(yaml.safe_dump(parameters))

    data = kedro_cli.data_root
    (data / "05_model_input").mkdir(parents=True)
    (data / "04_feature").mkdir(parents=True)
    for split, seed, rows in (("train", 0, 200), ("vali", 1, 100), ("cali", 2, 120)):
        with open(data / "05_model_input" / f"{split}.pkl", "wb") as file:
            pickle.dump(make_bundle(rows, seed), file)
    vocabulary = {"f": {str(i): i for i in range(1, VOCAB_SIZE)}}
    (data / "04_feature" / "cat_to_index.json").write_text(json.dumps(vocabulary))
    # The train split's normalised orders, as ingest leaves them (reference profile).
    chunks = data / "02_intermediate" / "train" / "raw_chunks"
    chunks.mkdir(parents=True)
    orders = normalize_raw_orders(tiny_orders().head(300), base_schema(), "test")
    orders.to_parquet(chunks / "2024-01.parquet", index=False)

    result = kedro_cli(
        "run",
        "--pipeline=train",
        f"--conf-source={conf}",
        env={"TSA_RESOURCE_CONFIG": str(tmp_path / "absent.json")},
    )
    assert "validation PR AUC: TSA" in result.stdout + result.stderr

    weights = load_file(data / "06_models" / "model.safetensors")
    config = json.loads((data / "06_models" / "model_config.json").read_text())
    assert config["vocab_size"] == VOCAB_SIZE and weights
    assert (data / "06_models" / "checkpoints" / "training_state.pt").exists()
    history = pd.read_csv(data / "08_reporting" / "training_history.csv")
    assert list(history["epoch"]) == [1, 2]
    metrics = json.loads((data / "08_reporting" / "train_metrics.json").read_text())
    assert set(metrics) == {"tsa", "baseline"}
    assert {"roc_auc", "pr_auc", "operating_points"} <= set(metrics["tsa"])
    for plot in ("roc_curve.png", "pr_curve.png", "score_histograms.png"):
        assert (data / "08_reporting" / plot).read_bytes()[:4] == b"\x89PNG"
    scores = pd.read_csv(data / "07_model_output" / "score_file.csv")
    tags = pd.read_csv(data / "07_model_output" / "tag_file.csv")
    assert list(scores.columns) == ["order_id", "score"] and len(scores) == 120
    assert list(tags.columns) == ["order_id", "tag"] and tags["tag"].isin([0, 1]).all()
    percentiles = json.loads(
        (data / "07_model_output" / "percentile_map.json").read_text()
    )
    assert len(percentiles) == 1000 and percentiles[-1][1] == 100.0
    profile = json.loads((data / "06_models" / "reference_profile.json").read_text())
    assert profile["rows"] == 300
    assert set(profile["categorical"]) == set(base_schema().cat_features)
    assert profile["score"]["rows"] == 120
