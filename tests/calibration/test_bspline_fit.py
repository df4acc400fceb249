"""The R fit through rpy2: agreement with the Python evaluator, monotonicity, recovery of a
known curve, validation errors, quality checks, the JSON export and the Rscript entry."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.isotonic import IsotonicRegression

from tsa_kedro.calibration import r_bridge
from tsa_kedro.calibration.evaluator import BSplineCalibrator
from tsa_kedro.calibration.r_bridge import CalibrationError
from tsa_kedro.calibration.simulation import TrueCurve, simulate_scores_and_tags

N_RECORDS = 5000


@pytest.fixture(scope="module")
def simulated():
    return simulate_scores_and_tags(N_RECORDS, seed=7)


@pytest.fixture(scope="module")
def fitted(simulated):
    scores, tags, _ = simulated
    return r_bridge.fit_bspline_calibration_with_json(scores, tags)


def test_fit_converges_quickly_with_the_exported_layout(fitted):
    parameters, _ = fitted
    assert parameters["status"] == "converged"
    assert 1 <= parameters["iterations"] <= 30
    assert parameters["degree"] == 3
    assert parameters["link"] == "logit"
    knots = np.array(parameters["knots"])
    assert len(knots) == len(parameters["coefficients"]) + 4
    assert (knots[:4] == 0).all() and (knots[-4:] == 1).all()
    assert (np.diff(knots) >= 0).all()
    assert (np.diff(parameters["coefficients"]) >= 0).all()
    stats = parameters["fit_statistics"]
    assert stats["n_records"] == N_RECORDS
    # < 1e4 records: 20 quantile intervals plus tail knots, minus merged ones.
    assert stats["base_knot_count"] == 20
    assert 15 <= stats["n_interior_knots"] <= 27
    assert stats["log_loss"] < stats["null_log_loss"]
    assert stats["brier"] < stats["null_brier"]


def test_evaluator_matches_r_predictions(fitted, simulated):
    parameters, _ = fitted
    scores, _, _ = simulated
    grid = np.concatenate([np.linspace(0, 1, 20001), scores, [-0.5, 1.5]])
    from_r = r_bridge.predict_in_r(parameters, grid)
    from_python = BSplineCalibrator(parameters)(grid)
    np.testing.assert_allclose(from_python, from_r, rtol=0, atol=1e-9)


def test_r_json_export_matches_the_returned_list(fitted):
    parameters, text = fitted
    from_json = json.loads(text)
    assert from_json.keys() == parameters.keys()
    assert from_json["status"] == parameters["status"]
    assert from_json["iterations"] == parameters["iterations"]
    # jsonlite writes 15 significant digits.
    np.testing.assert_allclose(from_json["knots"], parameters["knots"], rtol=1e-14)
    np.testing.assert_allclose(
        from_json["coefficients"], parameters["coefficients"], rtol=1e-14
    )
    grid = np.linspace(0, 1, 5001)
    np.testing.assert_allclose(
        BSplineCalibrator(from_json)(grid),
        r_bridge.predict_in_r(parameters, grid),
        rtol=0,
        atol=1e-9,
    )


def test_calibrated_probability_is_non_decreasing_on_a_fine_grid(fitted):
    parameters, _ = fitted
    probabilities = BSplineCalibrator(parameters)(np.linspace(0, 1, 1_000_001))
    # Flat stretches (equal coefficients) may wobble by float rounding only.
    assert np.diff(probabilities).min() >= -1e-15
    assert probabilities[-1] - probabilities[0] > 0.5


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fit_recovers_a_known_monotone_curve(seed):
    """Tolerance: over the 0.5 %..99.5 % score quantiles the worst point is in the steep
    top tail, where a knot interval holds ~50 of the 5000 records; the binomial standard
    error of a rate near 0.4 from 50 records is 0.07, and over 20 seeds the largest error
    seen was 0.106. The mean error (the bulk of the data) is held to 0.012 (20-seed
    maximum 0.0097) and must be within 25 % of isotonic regression's on the same data."""
    scores, tags, curve = simulate_scores_and_tags(N_RECORDS, seed=seed)
    parameters = r_bridge.fit_bspline_calibration(scores, tags)
    grid = np.quantile(scores, np.linspace(0.005, 0.995, 500))
    error = np.abs(BSplineCalibrator(parameters)(grid) - curve(grid))
    isotonic = IsotonicRegression(out_of_bounds="clip").fit(scores, tags)
    isotonic_error = np.abs(isotonic.predict(grid) - curve(grid))
    assert error.max() <= 0.12
    assert error.mean() <= 0.012
    assert error.mean() <= 1.25 * isotonic_error.mean()


def test_downsampling_shift_is_recovered():
    # A model trained on down-sampled negatives over-states probabilities by a constant
    # log-odds shift; calibration must undo it.
    scores, tags, curve = simulate_scores_and_tags(
        N_RECORDS,
        seed=11,
        curve=TrueCurve(intercept=-2.5, slope=1.0),
        beta_a=1.0,
        beta_b=4.0,
    )
    parameters = r_bridge.fit_bspline_calibration(scores, tags)
    grid = np.quantile(scores, np.linspace(0.005, 0.995, 500))
    error = np.abs(BSplineCalibrator(parameters)(grid) - curve(grid))
    raw_error = np.abs(grid - curve(grid))
    assert error.mean() < 0.2 * raw_error.mean()


def _valid_input(n=2000, positives=100):
    rng = np.random.default_rng(0)
    scores = np.sort(rng.random(n))
    tags = np.zeros(n)
    tags[-positives:] = 1
    return scores, tags


def _case(name):
    scores, tags = _valid_input()
    if name == "too_few_records":
        return scores[:999], tags[:999]
    if name == "too_few_positives":
        tags = np.zeros_like(tags)
        tags[-9:] = 1
    elif name == "score_above_one":
        scores = scores.copy()
        scores[3] = 1.2
    elif name == "negative_score":
        scores = scores.copy()
        scores[3] = -0.1
    elif name == "nan_score":
        scores = scores.copy()
        scores[5] = np.nan
    elif name == "nan_tag":
        tags = tags.copy()
        tags[5] = np.nan
    elif name == "tag_out_of_range":
        tags = tags.copy()
        tags[5] = 2
    elif name == "fractional_tag":
        tags = tags.copy()
        tags[5] = 0.5
    elif name == "length_mismatch":
        tags = tags[:-1]
    elif name == "all_zero":
        tags = np.zeros_like(tags)
    elif name == "all_one":
        tags = np.ones_like(tags)
    return scores, tags


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("too_few_records", r"too few records: 999 \(at least 1000 required\)"),
        ("too_few_positives", r"too few positives: 9 \(at least 10 required\)"),
        ("score_above_one", r"scores must lie in \[0, 1\]: 1 outside"),
        ("negative_score", r"scores must lie in \[0, 1\]: 1 outside"),
        ("nan_score", r"scores contain 1 NA/NaN values"),
        ("nan_tag", r"tags contain 1 NA/NaN values"),
        ("tag_out_of_range", r"tags must lie in \[0, 1\]: 1 outside"),
        ("fractional_tag", r"tags must be 0 or 1: 1 fractional values"),
        (
            "length_mismatch",
            r"scores and tags differ in length: 2000 scores, 1999 tags",
        ),
        ("all_zero", r"degenerate tags: all 2000 tags are 0"),
        ("all_one", r"degenerate tags: all 2000 tags are 1"),
    ],
)
def test_validation_errors_carry_r_messages(case, message):
    scores, tags = _case(case)
    with pytest.raises(CalibrationError, match=message):
        r_bridge.fit_bspline_calibration(scores, tags)


def test_valid_input_of_the_validation_cases_fits():
    scores, tags = _valid_input()
    assert r_bridge.fit_bspline_calibration(scores, tags)["status"] == "converged"


def test_quality_check_coefficient_bound(simulated):
    scores, tags, _ = simulated
    with pytest.raises(CalibrationError, match=r"largest \|coefficient\| .* exceeds"):
        r_bridge.fit_bspline_calibration(scores, tags, {"max_abs_coefficient": 1.0})


def test_quality_check_distinct_fitted_values(simulated):
    scores, tags, _ = simulated
    with pytest.raises(
        CalibrationError, match=r"only \d+ distinct fitted probabilities"
    ):
        r_bridge.fit_bspline_calibration(scores, tags, {"min_distinct_fitted": 10**6})


def test_quality_check_constant_fit():
    # One distinct score: nothing beats the constant rate.
    tags = np.zeros(2000)
    tags[:50] = 1
    with pytest.raises(CalibrationError, match="not below the constant-rate fit"):
        r_bridge.fit_bspline_calibration(
            np.full(2000, 0.3), tags, {"min_distinct_fitted": 1}
        )


def test_iteration_cap_is_reported(simulated):
    scores, tags, _ = simulated
    parameters = r_bridge.fit_bspline_calibration(scores, tags, {"max_iterations": 1})
    assert parameters["status"] == "iteration_cap"
    assert parameters["iterations"] == 1


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"ridge": 0.0}, "ridge must be positive"),
        ({"max_iterations": 0}, "max_iterations must be at least 1"),
        ({"tail_fraction": 1.5}, r"tail_fraction must be in \(0, 1\)"),
        ({"penalty": -1.0}, "penalty must be non-negative"),
        ({"no_such_setting": 1}, "unused argument"),
    ],
)
def test_invalid_settings_are_rejected(simulated, settings, message):
    scores, tags, _ = simulated
    with pytest.raises(CalibrationError, match=message):
        r_bridge.fit_bspline_calibration(scores, tags, settings)


@pytest.mark.skipif(shutil.which("Rscript") is None, reason="Rscript not on PATH")
def test_rscript_entry_point_writes_the_json(tmp_path, simulated):
    scores, tags, _ = simulated
    pd.DataFrame({"score": scores}).to_csv(tmp_path / "score_file.csv", index=False)
    pd.DataFrame({"tag": tags}).to_csv(tmp_path / "tag_file.csv", index=False)
    out = tmp_path / "bspline_parameters.json"
    subprocess.run(
        [
            "Rscript",
            r_bridge.r_script_path(),
            str(tmp_path / "score_file.csv"),
            str(tmp_path / "tag_file.csv"),
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    parameters = json.loads(out.read_text())
    assert parameters["status"] == "converged"
    assert not (tmp_path / "bspline_parameters.json.tmp").exists()
    grid = np.linspace(0, 1, 2001)
    np.testing.assert_allclose(
        BSplineCalibrator(parameters)(grid),
        r_bridge.predict_in_r(parameters, grid),
        rtol=0,
        atol=1e-9,
    )


def test_starting_r_leaves_the_loader_path_of_child_processes_alone():
    code = (
        "import os; before = os.environ.get('LD_LIBRARY_PATH'); "
        "from tsa_kedro.calibration import r_bridge; r_bridge._r_environment(); "
        "assert os.environ.get('R_HOME'), 'R did not start'; "
        "assert os.environ.get('LD_LIBRARY_PATH') == before, os.environ['LD_LIBRARY_PATH']; "
        "import subprocess, sys; "
        "subprocess.run([sys.executable, '-c', 'import pyarrow.parquet'], check=True)"
    )
    src = Path(__file__).resolve().parents[2] / "src"
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        env={**os.environ, "PYTHONPATH": str(src)},
    )
