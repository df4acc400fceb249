"""The pure-Python B-spline evaluator, on hand-built parameters (no R involved)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import expit

from tsa_kedro.calibration.evaluator import BSplineCalibrator, calibrate_scores

DEGREE = 3
INTERIOR = [0.05, 0.2, 0.5, 0.9]
KNOTS = [0.0] * (DEGREE + 1) + INTERIOR + [1.0] * (DEGREE + 1)
N_COEF = len(KNOTS) - DEGREE - 1


def parameters(coefficients, knots=KNOTS, **overrides):
    base = {
        "format_version": 1,
        "link": "logit",
        "degree": DEGREE,
        "knots": list(knots),
        "coefficients": list(coefficients),
    }
    return {**base, **overrides}


def greville_abscissae(knots, degree):
    t = np.asarray(knots)
    return np.array(
        [t[j + 1 : j + degree + 1].mean() for j in range(len(t) - degree - 1)]
    )


def test_constant_coefficients_give_constant_probability():
    # B-spline basis functions sum to one on [0, 1].
    calibrator = BSplineCalibrator(parameters([-2.0] * N_COEF))
    grid = np.linspace(0, 1, 1001)
    np.testing.assert_allclose(calibrator(grid), expit(-2.0), rtol=0, atol=1e-15)


def test_greville_coefficients_reproduce_the_identity_on_the_logit_scale():
    # With coefficients at the Greville abscissae a cubic B-spline is the line s -> s.
    coefficients = greville_abscissae(KNOTS, DEGREE)
    calibrator = BSplineCalibrator(parameters(coefficients))
    grid = np.linspace(0, 1, 1001)
    np.testing.assert_allclose(calibrator.logit(grid), grid, rtol=0, atol=1e-12)
    np.testing.assert_allclose(calibrator(grid), expit(grid), rtol=0, atol=1e-12)


def test_scores_outside_unit_interval_are_clipped():
    coefficients = np.linspace(-6, 3, N_COEF)
    calibrator = BSplineCalibrator(parameters(coefficients))
    inside = calibrator([0.0, 1.0])
    outside = calibrator([-5.0, 7.0])
    np.testing.assert_array_equal(outside, inside)
    assert calibrator(np.array([-np.inf, np.inf])).tolist() == inside.tolist()
    assert inside[0] == pytest.approx(expit(-6.0), abs=1e-15)
    assert inside[1] == pytest.approx(expit(3.0), abs=1e-15)


def test_shape_is_kept():
    calibrator = BSplineCalibrator(parameters(np.linspace(-6, 3, N_COEF)))
    assert calibrator(np.full((3, 4), 0.3)).shape == (3, 4)
    assert calibrate_scores(parameters(np.linspace(-6, 3, N_COEF)), [0.3]).shape == (1,)


def test_nan_scores_are_rejected():
    calibrator = BSplineCalibrator(parameters([0.0] * N_COEF))
    with pytest.raises(ValueError, match="NaN"):
        calibrator([0.1, np.nan])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"format_version": 2}, "format_version"),
        ({"link": "identity"}, "link"),
        ({"degree": 0}, "degree"),
        ({"knots": KNOTS[:-1]}, "do not match"),
        ({"knots": [0.0] * 4 + [0.5, 0.2, 0.6, 0.9] + [1.0] * 4}, "non-decreasing"),
        ({"knots": [0.0] * 4 + INTERIOR + [2.0] * 4}, r"\[0, 1\]"),
        ({"coefficients": [0.0] * (N_COEF - 1) + [np.nan]}, "finite"),
    ],
)
def test_invalid_parameters_are_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        BSplineCalibrator({**parameters([0.0] * N_COEF), **overrides})


def test_evaluator_imports_neither_r_nor_kedro():
    code = (
        "import sys; import tsa_kedro.calibration.evaluator; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('rpy2', 'kedro')]; "
        "assert not bad, bad"
    )
    src = Path(__file__).resolve().parents[2] / "src"
    env = {**os.environ, "PYTHONPATH": str(src)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


@settings(max_examples=60, deadline=None)
@given(
    interior=st.lists(st.floats(0.001, 0.999), min_size=0, max_size=12, unique=True),
    steps=st.lists(st.floats(0.0, 5.0), min_size=16, max_size=16),
    start=st.floats(-20.0, 5.0),
)
def test_non_decreasing_coefficients_give_a_non_decreasing_curve(
    interior, steps, start
):
    knots = [0.0] * (DEGREE + 1) + sorted(interior) + [1.0] * (DEGREE + 1)
    n_coef = len(knots) - DEGREE - 1
    coefficients = start + np.cumsum([0.0, *steps])[:n_coef]
    calibrator = BSplineCalibrator(parameters(coefficients, knots=knots))
    probabilities = calibrator(np.linspace(0, 1, 4001))
    assert np.diff(probabilities).min() >= -1e-15
    assert probabilities[0] == pytest.approx(expit(coefficients[0]), abs=1e-12)
    assert probabilities[-1] == pytest.approx(expit(coefficients[-1]), abs=1e-12)
