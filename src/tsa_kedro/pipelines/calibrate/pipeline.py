"""Calibrate: split the calibration set, fit the B-spline in R, evaluate on the held-out
part against raw scores and isotonic regression, draw the reliability diagram."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import (
    compute_calibration_metrics,
    fit_bspline,
    plot_reliability_diagram,
    predict_holdout,
    split_calibration_data,
)


def create_pipeline(**kwargs) -> Pipeline:
    """The calibrate pipeline (inputs ``score_file``, ``tag_file`` from train)."""
    return pipeline(
        [
            node(
                split_calibration_data,
                inputs=["score_file", "tag_file", "params:calibrate.split"],
                outputs=["calibration_fit_set", "calibration_holdout_set"],
                name="split_calibration_data",
            ),
            node(
                fit_bspline,
                inputs=[
                    "calibration_fit_set",
                    "params:calibrate.bspline",
                    "params:calibrate.require_convergence",
                ],
                outputs="bspline_parameters",
                name="fit_bspline_calibration",
            ),
            node(
                predict_holdout,
                inputs=[
                    "bspline_parameters",
                    "calibration_fit_set",
                    "calibration_holdout_set",
                ],
                outputs="calibration_holdout_predictions",
                name="predict_calibration_holdout",
            ),
            node(
                compute_calibration_metrics,
                inputs=[
                    "calibration_holdout_predictions",
                    "bspline_parameters",
                    "params:calibrate.metrics",
                ],
                outputs="calibration_metrics",
                name="compute_calibration_metrics",
            ),
            node(
                plot_reliability_diagram,
                inputs=["calibration_holdout_predictions", "params:calibrate.metrics"],
                outputs="reliability_diagram",
                name="plot_reliability_diagram",
            ),
        ],
        tags=["calibrate"],
    )
