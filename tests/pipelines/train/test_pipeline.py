"""The ``train`` pipeline: node checks, configuration files, and a whole run with
``SequentialRunner`` on in-memory datasets (real TSA model, tiny data)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from kedro.config import OmegaConfigLoader
from kedro.io import AbstractDataset, DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from matplotlib.figure import Figure

from tests.model_params import model_params
from tests.raw_data import base_schema_params, tiny_orders
from tests.training.standin import VOCAB_SIZE, WIDTHS, make_bundle
from tsa_kedro.features.contract import TensorContractError
from tsa_kedro.pipelines.train import create_pipeline
from tsa_kedro.pipelines.train.nodes import (
    build_model,
    check_model_inputs,
    evaluate_models,
    make_model_config,
    vocabulary_size,
)
from tsa_kedro.settings import CONFIG_LOADER_ARGS

ROOT = Path(__file__).resolve().parents[3]
CAT_TO_INDEX = {"f0": {str(i): i for i in range(1, 15)}, "f1": {"x": VOCAB_SIZE - 1}}


def _parameters(env: str, monkeypatch, tmp_path, merge: str = "destructive") -> dict:
    monkeypatch.setenv("TSA_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("TSA_RESOURCE_CONFIG", str(tmp_path / "no-resourceconfig.json"))
    loader = OmegaConfigLoader(
        conf_source=str(ROOT / "conf"),
        env=env,
        **{**CONFIG_LOADER_ARGS, "merge_strategy": {"parameters": merge}},
    )
    return loader["parameters"]["train"]


@pytest.fixture
def params(monkeypatch, tmp_path) -> dict:
    train = _parameters("local", monkeypatch, tmp_path)
    train["training"].update(epochs=2, batch_size=32, progress=False)
    train["baseline"].update(max_iter=20)
    return train


def test_base_parameters_resolve(params, tmp_path):
    assert (
        params["training"]["checkpoint_dir"] == f"{tmp_path}/data/06_models/checkpoints"
    )
    assert (
        params["distributed"]["resource_config"] == f"{tmp_path}/no-resourceconfig.json"
    )
    assert params["model"]["preset"] == "small"
    assert params["evaluation"]["operating_points"] == [0.01, 0.05]


def test_sagemaker_environment_selects_the_production_preset(monkeypatch, tmp_path):
    sagemaker = _parameters("sagemaker", monkeypatch, tmp_path, merge="soft")
    assert sagemaker["model"]["preset"] == "production"
    training = sagemaker["training"]
    assert (training["batch_size"], training["epochs"], training["patience"]) == (
        640,
        100,
        5,
    )
    assert (training["lr"], training["max_lr"]) == (5e-5, 5e-4)
    assert training["grad_clip_norm"] == 1.0  # kept from base
    assert sagemaker["evaluation"]["operating_points"] == [0.01, 0.05]
    overrides = yaml.safe_load(
        (ROOT / "conf/sagemaker/parameters_train.yml").read_text()
    )
    base = yaml.safe_load((ROOT / "conf/base/parameters_train.yml").read_text())
    for block, values in overrides["train"].items():
        for key, value in values.items():
            assert base["train"][block][key] != value, f"{block}.{key} repeats base"


def test_only_the_training_node_is_tagged_gpu():
    pipeline = create_pipeline()
    tagged = {node.name for node in pipeline.nodes if "gpu" in node.tags}
    assert tagged == {"train_tsa_model"}
    assert all(
        not node.tags for node in pipeline.nodes if node.name != "train_tsa_model"
    )


def test_every_output_is_declared_in_the_catalog():
    catalog = yaml.safe_load((ROOT / "conf/base/catalog_train.yml").read_text())
    outputs = create_pipeline().all_outputs()
    assert outputs == set(catalog)
    assert create_pipeline().inputs() - {
        n for n in create_pipeline().inputs() if n.startswith("params:")
    } == {
        "train.model_input",
        "vali.model_input",
        "cali.model_input",
        "cat_to_index",
        "train.raw_chunks",
    }


def test_vocabulary_size_is_largest_index_plus_one():
    assert vocabulary_size(CAT_TO_INDEX) == VOCAB_SIZE
    assert vocabulary_size({}) == 1


def test_config_takes_widths_from_the_data():
    config = make_model_config(make_bundle(20, 0), CAT_TO_INDEX, model_params("small"))
    assert {k: getattr(config, k) for k in WIDTHS} == WIDTHS
    assert config.vocab_size == VOCAB_SIZE


def test_config_overrides_that_contradict_the_data_are_named():
    with pytest.raises(
        TensorContractError,
        match=r"train\.model_input / cat_to_index disagree .*n_cat_features: data 3 vs config 109",
    ):
        make_model_config(
            make_bundle(20, 0),
            CAT_TO_INDEX,
            model_params("production", n_cat_features=109),
        )


def test_category_beyond_the_vocabulary_is_named():
    small_vocabulary = {"f0": {"a": 1, "b": 5}}
    with pytest.raises(
        TensorContractError,
        match=r"train\.model_input, array 'X_seq_cat_cid': category index",
    ):
        config = make_model_config(
            make_bundle(20, 0), small_vocabulary, model_params("small")
        )
        check_model_inputs(make_bundle(20, 0), "train.model_input", config.to_dict())


def test_split_with_other_widths_than_the_model_is_named():
    config = make_model_config(make_bundle(20, 0), CAT_TO_INDEX, model_params("small"))
    narrow = make_bundle(20, 3, n_num=1)
    with pytest.raises(
        TensorContractError,
        match=r"cali\.model_input: widths disagree .*n_num_features: data 1 vs config 2",
    ):
        check_model_inputs(narrow, "cali.model_input", config.to_dict())


def test_evaluation_refuses_score_tables_of_different_orders():
    tsa = pd.DataFrame({"order_id": ["a", "b"], "label": [0, 1], "score": [0.1, 0.9]})
    baseline = tsa.iloc[::-1].reset_index(drop=True)
    with pytest.raises(TensorContractError, match="same validation orders"):
        evaluate_models(tsa, baseline, {"operating_points": [0.5]})


class KeptDataset(MemoryDataset):
    """A memory dataset that the runner cannot release, so the test can read it."""

    def _release(self) -> None:
        pass


def test_whole_pipeline_on_in_memory_datasets(params):
    pipeline = create_pipeline()
    splits = {
        "train": make_bundle(240, 0),
        "vali": make_bundle(120, 1),
        "cali": make_bundle(150, 2),
    }
    catalog = DataCatalog(
        {
            f"{split}.model_input": MemoryDataset(bundle)
            for split, bundle in splits.items()
        }
        | {"cat_to_index": MemoryDataset(CAT_TO_INDEX)}
        | {
            "train.raw_chunks": MemoryDataset(
                {"part-00000": tiny_orders(n_customers=20)}, copy_mode="assign"
            ),
            "params:raw_schema": MemoryDataset(base_schema_params()),
        }
        | {f"params:train.{key}": MemoryDataset(value) for key, value in params.items()}
        | {name: KeptDataset(copy_mode="assign") for name in pipeline.all_outputs()}
    )
    SequentialRunner().run(pipeline, catalog)
    result = {name: catalog.load(name) for name in pipeline.all_outputs()}

    metrics = result["train_metrics"]
    assert set(metrics) == {"tsa", "baseline"}
    for name in ("tsa", "baseline"):
        assert 0 <= metrics[name]["roc_auc"] <= 1 and 0 <= metrics[name]["pr_auc"] <= 1
        assert set(metrics[name]["operating_points"]) == {"top_1%", "top_5%"}
    json.dumps(metrics)

    model = build_model(result["model_config"])
    model.load_state_dict(result["model_weights"])
    json.dumps(result["model_config"])
    history = result["training_history"]
    assert list(history["epoch"]) == [1, 2]
    assert {"train_loss", "vali_roc_auc", "vali_loss", "lr"} <= set(history.columns)

    scores, tags = result["score_file"], result["tag_file"]
    assert list(scores.columns) == ["order_id", "score"] and list(tags.columns) == [
        "order_id",
        "tag",
    ]
    assert list(scores["order_id"]) == list(splits["cali"]["order_id"])
    np.testing.assert_array_equal(tags["tag"], splits["cali"]["Y"])
    assert scores["score"].between(0, 1).all()

    percentile_map = result["percentile_map"]
    assert len(percentile_map) == 1000
    assert percentile_map[-1] == [pytest.approx(scores["score"].max()), 100.0]

    profile = result["reference_profile"]
    assert profile["rows"] == len(tiny_orders(n_customers=20))
    assert sum(profile["score"]["shares"]) == pytest.approx(1.0)
    assert len(json.dumps(profile)) < 64_000

    for plot in PLOTS:
        assert isinstance(result[plot], Figure)
    assert set(metrics["tsa"]["queue"]) == {
        "top_0p1pct",
        "top_0p5pct",
        "top_1pct",
        "top_5pct",
    }
    vali_scores = result["tsa_validation_scores"]
    assert metrics["tsa"]["roc_auc"] == pytest.approx(history["vali_roc_auc"].max())
    assert len(vali_scores) == 120


def test_unknown_preset_is_named():
    params = {**model_params("small"), "preset": "huge"}
    with pytest.raises(ValueError, match="'huge'.*production.*small"):
        make_model_config(make_bundle(20, 0), CAT_TO_INDEX, params)


def test_sagemaker_environment_keeps_the_base_presets(monkeypatch, tmp_path):
    sagemaker = _parameters("sagemaker", monkeypatch, tmp_path, merge="soft")
    presets = sagemaker["model"]["presets"]
    assert presets["production"]["n_layers_order"] == 6
    config = make_model_config(make_bundle(20, 0), CAT_TO_INDEX, sagemaker["model"])
    assert (config.dim_embedding, config.classifier_hidden) == (64, 1024)


PLOTS = (
    "roc_curve_plot",
    "pr_curve_plot",
    "score_histogram_plot",
    "roc_log_plot",
    "queue_plot",
    "cost_curve_plot",
)
EVALUATION = {
    "operating_points": [0.01, 0.05],
    "queue_shares": [0.001, 0.005, 0.01, 0.05],
    "cost": {"false_positive": 5.0, "missed_fraud": 100.0},
}


@pytest.fixture(scope="module")
def evaluated() -> tuple[dict, dict[str, Figure]]:
    rng = np.random.default_rng(11)
    n = 4000
    labels = (rng.random(n) < 0.04).astype(int)
    frames = {
        name: pd.DataFrame(
            {
                "order_id": [f"o{i}" for i in range(n)],
                "label": labels,
                "score": 1 / (1 + np.exp(-(rng.normal(size=n) + lift * labels - 3))),
            }
        )
        for name, lift in (("tsa", 3.0), ("baseline", 1.5))
    }
    metrics, *figures = evaluate_models(frames["tsa"], frames["baseline"], EVALUATION)
    return metrics, dict(zip(PLOTS, figures, strict=True))


def test_evaluation_records_queues_and_cost_for_both_models(evaluated):
    metrics, _ = evaluated
    for name in ("tsa", "baseline"):
        queue = metrics[name]["queue"]["top_1pct"]
        assert queue["size"] == 40 and queue["flagged"] <= 40
        assert 0 <= queue["recall"] <= 1 and 0 <= queue["precision"] <= 1
        cost = metrics[name]["cost"]
        assert (cost["false_positive"], cost["missed_fraud"]) == (5.0, 100.0)
        assert cost["minimum"]["cost_per_order"] <= min(
            q["cost_per_order"] for q in metrics[name]["queue"].values()
        )
    json.dumps(metrics)


def test_roc_log_plot_has_a_log_false_positive_axis(evaluated):
    _, figures = evaluated
    (axes,) = figures["roc_log_plot"].axes
    assert axes.get_xscale() == "log"
    assert axes.get_xlim() == pytest.approx((1e-4, 1.0))
    labels = [line.get_label() for line in axes.get_lines()]
    assert any(label.startswith("tsa") for label in labels)
    assert any(label.startswith("baseline") for label in labels)
    for line in axes.get_lines():
        assert np.all(np.asarray(line.get_xdata()) > 0)  # nothing lost at log(0)


def test_queue_plot_shows_precision_and_recall_at_each_queue(evaluated):
    metrics, figures = evaluated
    precision_axes, recall_axes = figures["queue_plot"].axes
    for axes, measure in ((precision_axes, "precision"), (recall_axes, "recall")):
        assert axes.get_xscale() == "log"
        lines = {line.get_label(): line for line in axes.get_lines()}
        assert set(lines) == {"tsa", "baseline"}
        for name, line in lines.items():
            queues = metrics[name]["queue"]
            expected = [
                queues[k][measure]
                for k in ("top_0p1pct", "top_0p5pct", "top_1pct", "top_5pct")
            ]
            np.testing.assert_allclose(line.get_xdata(), [0.1, 0.5, 1.0, 5.0])
            np.testing.assert_allclose(line.get_ydata(), expected)


def test_cost_plot_marks_each_models_minimum(evaluated):
    metrics, figures = evaluated
    (axes,) = figures["cost_curve_plot"].axes
    assert axes.get_xscale() == "log"
    for name in ("tsa", "baseline"):
        best = metrics[name]["cost"]["minimum"]
        (marker,) = [
            line
            for line in axes.get_lines()
            if line.get_label().startswith(f"{name} minimum")
        ]
        assert marker.get_xdata()[0] == pytest.approx(best["share"])
        assert marker.get_ydata()[0] == pytest.approx(best["cost_per_order"])
        (curve,) = [line for line in axes.get_lines() if line.get_label() == name]
        assert np.min(curve.get_ydata()) == pytest.approx(best["cost_per_order"])


def test_plot_catalog_entries_exist_and_save(evaluated, tmp_path):
    _, figures = evaluated
    catalog = yaml.safe_load((ROOT / "conf/base/catalog_train.yml").read_text())
    for name in PLOTS:
        entry = dict(catalog[name])
        assert entry["type"] == "matplotlib.MatplotlibDataset"
        assert entry["filepath"].startswith("${globals:data_root}/08_reporting/")
        assert entry["metadata"]["kedro-viz"]["layer"] == "reporting"
        target = tmp_path / Path(entry["filepath"]).name
        dataset = AbstractDataset.from_config(name, {**entry, "filepath": str(target)})
        dataset.save(figures[name])
        assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluation_parameters_resolve(params):
    evaluation = params["evaluation"]
    assert evaluation["queue_shares"] == [0.001, 0.005, 0.01, 0.05]
    assert evaluation["cost"] == {"false_positive": 5.0, "missed_fraud": 100.0}
