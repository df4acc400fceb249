"""The calibrate pipeline: node checks and a SequentialRunner run on in-memory data."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from matplotlib.figure import Figure

from tsa_kedro.calibration.evaluator import BSplineCalibrator
from tsa_kedro.calibration.metrics import equal_mass_bins
from tsa_kedro.calibration.r_bridge import CalibrationError
from tsa_kedro.calibration.simulation import TrueCurve, simulate_scores_and_tags
from tsa_kedro.pipelines.calibrate import create_pipeline
from tsa_kedro.pipelines.calibrate.nodes import (
    METHODS,
    compute_calibration_metrics,
    fit_bspline,
    plot_reliability_diagram,
    split_calibration_data,
)

from ...conftest import PROJECT_ROOT

PARAMS = yaml.safe_load(
    (PROJECT_ROOT / "conf/base/parameters_calibrate.yml").read_text()
)["calibrate"]


@pytest.fixture(scope="module")
def calibration_files():
    # A model trained on down-sampled negatives: raw scores over-state the probability.
    scores, tags, _ = simulate_scores_and_tags(
        6000, seed=5, curve=TrueCurve(intercept=-2.0, slope=1.0), beta_a=1.0, beta_b=5.0
    )
    order_ids = [f"o{i:05d}" for i in range(len(scores))]
    score_file = pd.DataFrame({"order_id": order_ids, "score": scores})
    tag_file = pd.DataFrame({"order_id": order_ids, "tag": tags})
    return score_file, tag_file


def test_split_is_stratified_seeded_and_complete(calibration_files):
    score_file, tag_file = calibration_files
    fit_set, holdout_set = split_calibration_data(score_file, tag_file, PARAMS["split"])
    again, _ = split_calibration_data(score_file, tag_file, PARAMS["split"])
    pd.testing.assert_frame_equal(fit_set, again)
    assert len(holdout_set) == pytest.approx(0.2 * len(score_file), abs=1)
    ids = set(fit_set["order_id"]) | set(holdout_set["order_id"])
    assert ids == set(score_file["order_id"])
    assert not set(fit_set["order_id"]) & set(holdout_set["order_id"])
    rate = tag_file["tag"].mean()
    assert holdout_set["tag"].mean() == pytest.approx(rate, abs=2 / len(holdout_set))
    joined = fit_set.merge(score_file, on="order_id", suffixes=("", "_orig"))
    np.testing.assert_array_equal(joined["score"], joined["score_orig"])


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda s, t: (s.rename(columns={"score": "p"}), t),
            "score_file has no 'score'",
        ),
        (lambda s, t: (s, t.rename(columns={"tag": "y"})), "tag_file has no 'tag'"),
        (
            lambda s, t: (s.iloc[:-1], t),
            "score_file has 5999 rows but tag_file has 6000",
        ),
        (
            lambda s, t: (s, t.assign(order_id=t["order_id"][::-1].to_numpy())),
            "'order_id' differ in",
        ),
        (
            lambda s, t: (s, t.assign(tag=t["tag"].replace(1, 2))),
            "must hold only 0 and 1",
        ),
        (lambda s, t: (s, t.assign(tag=np.nan)), "has 6000 missing or non-numeric"),
        (lambda s, t: (s.assign(score="high"), t), "'score' has non-numeric values"),
    ],
)
def test_split_rejects_bad_inputs(calibration_files, mutate, message):
    score_file, tag_file = mutate(*calibration_files)
    with pytest.raises(ValueError, match=message):
        split_calibration_data(score_file, tag_file, PARAMS["split"])


def test_split_rejects_bad_fraction(calibration_files):
    with pytest.raises(ValueError, match="holdout_fraction must lie in"):
        split_calibration_data(*calibration_files, {"holdout_fraction": 1.0, "seed": 1})


def test_fit_node_names_the_inputs_on_r_errors():
    frame = pd.DataFrame({"score": np.linspace(0, 1, 500), "tag": [0, 1] * 250})
    with pytest.raises(
        CalibrationError,
        match=r"score_file/tag_file failed .*\(500 records .*\): too few records",
    ):
        fit_bspline(frame, PARAMS["bspline"], require_convergence=True)


def test_fit_node_refuses_an_unconverged_fit(calibration_files):
    fit_set, _ = split_calibration_data(*calibration_files, PARAMS["split"])
    settings = {**PARAMS["bspline"], "max_iterations": 1}
    with pytest.raises(CalibrationError, match="did not converge within 1 iterations"):
        fit_bspline(fit_set, settings, require_convergence=True)
    assert fit_bspline(fit_set, settings, require_convergence=False)["status"] == (
        "iteration_cap"
    )


def test_metrics_detect_miscalibration():
    rng = np.random.default_rng(3)
    truth = rng.uniform(0.01, 0.2, 4000)
    tags = (rng.random(4000) < truth).astype(int)
    predictions = pd.DataFrame(
        {
            "score": truth,
            "tag": tags,
            "raw": truth * 3,
            "bspline": truth,
            "isotonic": truth,
        }
    )
    metrics = compute_calibration_metrics(
        predictions,
        {"status": "converged", "iterations": 3, "fit_statistics": _dummy_stats()},
        PARAMS["metrics"],
    )
    raw, calibrated = metrics["methods"]["raw"], metrics["methods"]["bspline"]
    assert raw["ece"] > 5 * calibrated["ece"]
    assert raw["log_loss"] > calibrated["log_loss"]
    assert raw["brier"] > calibrated["brier"]
    assert metrics["bspline_minus_isotonic_log_loss"] == 0.0


def _predictions(scores: np.ndarray, tags: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "score": scores,
            "tag": tags,
            "raw": scores,
            # A step function, as isotonic regression gives: long runs of one value.
            "bspline": np.round(scores, 1),
            "isotonic": np.where(scores < 0.5, 0.02, 0.6),
        }
    )


@pytest.mark.parametrize(
    ("n_records", "n_bins"),
    [
        (6, 10),  # fewer records than bins: bins left empty must not be drawn
        (500, 10),
        (500, 7),  # records do not split evenly
    ],
)
def test_reliability_diagram_draws_one_point_per_non_empty_bin(n_records, n_bins):
    rng = np.random.default_rng(n_records)
    scores = np.sort(rng.uniform(0.0, 1.0, n_records))
    tags = (rng.random(n_records) < scores).astype(int)
    tags[:2] = [0, 1]
    predictions = _predictions(scores, tags)
    figure = plot_reliability_diagram(predictions, {"ece_bins": n_bins})
    reliability, curves = figure.axes
    lines = {line.get_label(): line for line in reliability.get_lines()}
    for method in METHODS:
        table = equal_mass_bins(predictions[method].to_numpy(), tags, n_bins)
        assert np.all(table["count"] > 0)
        assert len(table["count"]) == min(n_bins, n_records)
        assert len(lines[method].get_xdata()) == len(table["count"])
        assert np.all(np.isfinite(lines[method].get_xdata()))
        assert np.all(np.isfinite(lines[method].get_ydata()))
    assert reliability.get_xscale() == "log" and reliability.get_yscale() == "log"
    (observed,) = curves.collections
    raw_bins = equal_mass_bins(scores, tags, n_bins * 3)
    assert len(observed.get_offsets()) == len(raw_bins["count"])
    assert np.all(raw_bins["count"] > 0)


def _dummy_stats():
    return {
        "n_records": 1,
        "n_coefficients": 1,
        "log_loss": 0.0,
        "null_log_loss": 0.0,
    }


class KeptMemoryDataset(MemoryDataset):
    """A memory dataset that the runner cannot release, to inspect it after the run."""

    def _release(self) -> None:
        pass


def test_pipeline_runs_end_to_end_on_memory_datasets(calibration_files):
    score_file, tag_file = calibration_files
    pipeline = create_pipeline()
    catalog = DataCatalog(
        {
            "score_file": MemoryDataset(score_file),
            "tag_file": MemoryDataset(tag_file),
            "params:calibrate.split": MemoryDataset(PARAMS["split"]),
            "params:calibrate.bspline": MemoryDataset(PARAMS["bspline"]),
            "params:calibrate.require_convergence": MemoryDataset(
                PARAMS["require_convergence"]
            ),
            "params:calibrate.metrics": MemoryDataset(PARAMS["metrics"]),
        }
    )
    catalog.add("bspline_parameters", KeptMemoryDataset())
    # Outputs that no node consumes and the catalog does not hold are returned.
    results = SequentialRunner().run(pipeline, catalog)
    assert set(results) == {"calibration_metrics", "reliability_diagram"}

    parameters = catalog.load("bspline_parameters")
    metrics = results["calibration_metrics"]
    assert parameters["status"] == "converged"
    # What the catalog's JSONDataset writes must read back into the same evaluator.
    reloaded = json.loads(json.dumps(parameters))
    grid = np.linspace(0, 1, 1001)
    np.testing.assert_array_equal(
        BSplineCalibrator(reloaded)(grid), BSplineCalibrator(parameters)(grid)
    )
    assert metrics["holdout"]["n_records"] == 1200
    methods = metrics["methods"]
    assert set(methods) == {"raw", "bspline", "isotonic"}
    # Raw scores over-state the probability by a factor ~e^2: calibration must help.
    assert methods["bspline"]["log_loss"] < methods["raw"]["log_loss"]
    assert methods["bspline"]["ece"] < methods["raw"]["ece"]
    assert isinstance(results["reliability_diagram"], Figure)
    assert {node.name for node in pipeline.nodes} == {
        "split_calibration_data",
        "fit_bspline_calibration",
        "predict_calibration_holdout",
        "compute_calibration_metrics",
        "plot_reliability_diagram",
    }


def test_catalog_declares_every_dataset_crossing_a_node():
    catalog = yaml.safe_load(
        (PROJECT_ROOT / "conf/base/catalog_calibrate.yml").read_text()
    )
    produced = create_pipeline().all_outputs()
    assert produced <= set(catalog)
    for entry in catalog.values():
        assert entry["filepath"].startswith("${globals:data_root}/")


@pytest.mark.slow
def test_kedro_run_calibrate_through_the_cli(tmp_path, kedro_cli, calibration_files):
    # The train stage declares score_file/tag_file; a copy of the configuration with the
    # same two entries in its local environment stands in for it here.
    conf = tmp_path / "conf"
    shutil.copytree(PROJECT_ROOT / "conf" / "base", conf / "base")
    (conf / "local").mkdir()
    (conf / "local" / "catalog_calibrate_inputs.yml").write_text(
        yaml.safe_dump(
            {
                name: {
                    "type": "pandas.CSVDataset",
                    "filepath": f"${{globals:data_root}}/07_model_output/{name}.csv",
                }
                for name in ("score_file", "tag_file")
            }
        )
    )
    score_file, tag_file = calibration_files
    output_dir = kedro_cli.data_root / "07_model_output"
    output_dir.mkdir(parents=True)
    score_file.to_csv(output_dir / "score_file.csv", index=False)
    tag_file.to_csv(output_dir / "tag_file.csv", index=False)

    kedro_cli("run", "--pipeline=calibrate", f"--conf-source={conf}")

    parameters = json.loads(
        (kedro_cli.data_root / "06_models" / "bspline_parameters.json").read_text()
    )
    metrics = json.loads(
        (kedro_cli.data_root / "08_reporting" / "calibration_metrics.json").read_text()
    )
    assert parameters["status"] == "converged"
    assert metrics["fit"]["iterations"] == parameters["iterations"]
    assert (
        metrics["methods"]["bspline"]["log_loss"]
        < metrics["methods"]["raw"]["log_loss"]
    )
    png = (
        kedro_cli.data_root / "08_reporting" / "reliability_diagram.png"
    ).read_bytes()
    assert png.startswith(b"\x89PNG")
