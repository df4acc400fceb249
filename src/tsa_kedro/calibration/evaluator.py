"""Pure-Python evaluator of the monotone B-spline calibration (no R, no Kedro).

Turns the ``bspline_parameters`` JSON written by the calibrate stage into calibrated
probabilities: ``p = expit(sum_j c_j B_j(clip(score, 0, 1)))`` with the cubic B-spline
basis ``B_j`` of the full (padded) knot vector. It ships inside the serving bundle, so it
imports only numpy and scipy.

Rejected parameters (``ValueError`` naming the field): unknown ``format_version`` or
``link``; a knot vector that is not non-decreasing, does not span [0, 1], or whose length
is not ``len(coefficients) + degree + 1``; non-finite knots or coefficients. Rejected
scores: NaN.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.interpolate import BSpline
from scipy.special import expit

SUPPORTED_FORMAT_VERSION = 1
SUPPORTED_LINKS = ("logit",)


class BSplineCalibrator:
    """Calibrated probability as a function of the raw score.

    Example:
        >>> calibrator = BSplineCalibrator(parameters)  # doctest: +SKIP
        >>> calibrator([0.01, 0.5, 0.99])  # doctest: +SKIP
        array([...])
    """

    def __init__(self, parameters: Mapping[str, Any]) -> None:
        """Validate ``parameters`` (the ``bspline_parameters`` mapping) and build the spline."""
        version = parameters.get("format_version")
        if version != SUPPORTED_FORMAT_VERSION:
            raise ValueError(
                f"bspline_parameters: format_version {version!r} is not supported "
                f"(expected {SUPPORTED_FORMAT_VERSION})"
            )
        link = parameters.get("link")
        if link not in SUPPORTED_LINKS:
            raise ValueError(f"bspline_parameters: link {link!r} is not supported")
        degree = parameters.get("degree")
        if not isinstance(degree, int) or degree < 1:
            raise ValueError(
                f"bspline_parameters: degree {degree!r} is not a positive int"
            )
        knots = np.asarray(parameters.get("knots", []), dtype=np.float64)
        coefficients = np.asarray(parameters.get("coefficients", []), dtype=np.float64)
        if knots.ndim != 1 or coefficients.ndim != 1 or coefficients.size < degree + 1:
            raise ValueError(
                "bspline_parameters: knots and coefficients must be lists, with at "
                f"least degree + 1 = {degree + 1} coefficients"
            )
        if knots.size != coefficients.size + degree + 1:
            raise ValueError(
                f"bspline_parameters: {knots.size} knots do not match "
                f"{coefficients.size} coefficients of degree {degree} "
                f"(expected {coefficients.size + degree + 1} knots)"
            )
        if not (np.all(np.isfinite(knots)) and np.all(np.isfinite(coefficients))):
            raise ValueError(
                "bspline_parameters: knots and coefficients must be finite"
            )
        if np.any(np.diff(knots) < 0):
            raise ValueError("bspline_parameters: knots must be non-decreasing")
        if knots[degree] != 0.0 or knots[-degree - 1] != 1.0:
            raise ValueError(
                "bspline_parameters: the knots' base interval must be [0, 1]"
            )
        self.degree = degree
        self.knots = knots
        self.coefficients = coefficients
        self._spline = BSpline(knots, coefficients, degree, extrapolate=False)

    def logit(self, scores: Any) -> np.ndarray:
        """The spline value (calibrated log-odds) at the scores, clipped to [0, 1]."""
        x = np.asarray(scores, dtype=np.float64)
        if np.isnan(x).any():
            raise ValueError("scores contain NaN; cannot calibrate them")
        return self._spline(np.clip(x, 0.0, 1.0))

    def __call__(self, scores: Any) -> np.ndarray:
        """Calibrated probabilities, same shape as ``scores``."""
        return expit(self.logit(scores))


def calibrate_scores(parameters: Mapping[str, Any], scores: Any) -> np.ndarray:
    """Calibrated probabilities for ``scores`` under ``parameters`` (one-shot helper)."""
    return BSplineCalibrator(parameters)(scores)
