"""Nodes of the calibrate stage.

Inputs are the train stage's ``score_file`` (column ``score``) and ``tag_file`` (column
``tag``): the calibration set's scores and 0/1 fraud tags, one row per order, in the same
row order. Either file may carry an ``order_id`` column; when both do, the ids must match
row by row.

Rejected: a missing ``score``/``tag`` column, files of different lengths, mismatched
``order_id`` columns, non-numeric or missing tags, tags other than 0/1, a hold-out
fraction outside (0, 1), fewer than 2 positives or negatives (nothing to stratify). The
R fit then rejects what SPEC section 7 lists (too few records or positives, scores outside
[0, 1], NaN scores, all-0 tags) and fails its quality checks loudly.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.isotonic import IsotonicRegression
from sklearn.model_selection import train_test_split

from tsa_kedro.calibration.evaluator import BSplineCalibrator
from tsa_kedro.calibration.metrics import calibration_report, equal_mass_bins

logger = logging.getLogger(__name__)

SCORE_COLUMN = "score"
TAG_COLUMN = "tag"
ORDER_ID_COLUMN = "order_id"
METHODS = ("raw", "bspline", "isotonic")


def _calibration_frame(
    score_file: pd.DataFrame, tag_file: pd.DataFrame
) -> pd.DataFrame:
    if SCORE_COLUMN not in score_file.columns:
        raise ValueError(
            f"score_file has no '{SCORE_COLUMN}' column (columns: {list(score_file.columns)})"
        )
    if TAG_COLUMN not in tag_file.columns:
        raise ValueError(
            f"tag_file has no '{TAG_COLUMN}' column (columns: {list(tag_file.columns)})"
        )
    if len(score_file) != len(tag_file):
        raise ValueError(
            f"score_file has {len(score_file)} rows but tag_file has {len(tag_file)}"
        )
    if ORDER_ID_COLUMN in score_file.columns and ORDER_ID_COLUMN in tag_file.columns:
        score_ids = score_file[ORDER_ID_COLUMN].astype(str).to_numpy()
        tag_ids = tag_file[ORDER_ID_COLUMN].astype(str).to_numpy()
        mismatched = np.flatnonzero(score_ids != tag_ids)
        if mismatched.size:
            row = int(mismatched[0])
            raise ValueError(
                f"score_file and tag_file '{ORDER_ID_COLUMN}' differ in {mismatched.size} "
                f"rows (first at row {row}: {score_ids[row]!r} vs {tag_ids[row]!r})"
            )
    scores = pd.to_numeric(score_file[SCORE_COLUMN], errors="coerce")
    if scores.isna().sum() > score_file[SCORE_COLUMN].isna().sum():
        raise ValueError(f"score_file column '{SCORE_COLUMN}' has non-numeric values")
    tags = pd.to_numeric(tag_file[TAG_COLUMN], errors="coerce")
    if tags.isna().any():
        raise ValueError(
            f"tag_file column '{TAG_COLUMN}' has {int(tags.isna().sum())} missing or "
            "non-numeric values"
        )
    if not tags.isin([0, 1]).all():
        raise ValueError(f"tag_file column '{TAG_COLUMN}' must hold only 0 and 1")
    frame = pd.DataFrame(
        {SCORE_COLUMN: scores.to_numpy(np.float64), TAG_COLUMN: tags.to_numpy(np.int8)}
    )
    if ORDER_ID_COLUMN in score_file.columns:
        frame[ORDER_ID_COLUMN] = score_file[ORDER_ID_COLUMN].astype(str).to_numpy()
    return frame


def split_calibration_data(
    score_file: pd.DataFrame, tag_file: pd.DataFrame, params: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Join scores and tags and split them into a fitting part and a held-out part.

    The split is stratified by tag and seeded, so both parts keep the positive rate.

    Args:
        score_file: Calibration-set scores (column ``score``, optional ``order_id``).
        tag_file: Calibration-set tags (column ``tag``, optional ``order_id``).
        params: ``holdout_fraction`` in (0, 1) and ``seed``.

    Returns:
        ``(fit_set, holdout_set)``, each with columns ``score``, ``tag`` (and
        ``order_id`` when given).
    """
    fraction = float(params["holdout_fraction"])
    if not 0 < fraction < 1:
        raise ValueError(
            f"params:calibrate.split.holdout_fraction must lie in (0, 1), got {fraction}"
        )
    frame = _calibration_frame(score_file, tag_file)
    counts = frame[TAG_COLUMN].value_counts()
    if counts.get(1, 0) < 2 or counts.get(0, 0) < 2:
        raise ValueError(
            f"tag_file needs at least 2 positives and 2 negatives to split, got "
            f"{counts.get(1, 0)} positives and {counts.get(0, 0)} negatives"
        )
    fit_set, holdout_set = train_test_split(
        frame,
        test_size=fraction,
        random_state=int(params["seed"]),
        stratify=frame[TAG_COLUMN],
    )
    logger.info(
        "Calibration split: %d records to fit, %d held out (positive rate %.4f)",
        len(fit_set),
        len(holdout_set),
        frame[TAG_COLUMN].mean(),
    )
    return fit_set.reset_index(drop=True), holdout_set.reset_index(drop=True)


def fit_bspline(
    fit_set: pd.DataFrame, bspline_params: dict[str, Any], require_convergence: bool
) -> dict[str, Any]:
    """Fit the monotone B-spline calibration curve in R (through rpy2).

    Args:
        fit_set: Columns ``score`` and ``tag``.
        bspline_params: Keyword arguments of the R function ``fit_bspline_calibration``.
        require_convergence: Fail when IRLS stops at the iteration cap.

    Returns:
        The ``bspline_parameters`` mapping (knots, coefficients, degree, status,
        iterations, fit statistics, settings).
    """
    # Imported here so that loading the pipeline registry (every `kedro run`) does not
    # start an embedded R.
    from tsa_kedro.calibration.r_bridge import (  # noqa: PLC0415
        CalibrationError,
        fit_bspline_calibration,
    )

    try:
        parameters = fit_bspline_calibration(
            fit_set[SCORE_COLUMN].to_numpy(),
            fit_set[TAG_COLUMN].to_numpy(),
            bspline_params,
        )
    except CalibrationError as error:
        raise CalibrationError(
            f"B-spline calibration of score_file/tag_file failed on the fitting part "
            f"({len(fit_set)} records after the hold-out split): {error}"
        ) from None
    stats = parameters["fit_statistics"]
    logger.info(
        "B-spline calibration %s after %d IRLS iterations: %d coefficients, "
        "log loss %.5f (constant rate %.5f)",
        parameters["status"],
        parameters["iterations"],
        stats["n_coefficients"],
        stats["log_loss"],
        stats["null_log_loss"],
    )
    if parameters["status"] != "converged" and require_convergence:
        raise CalibrationError(
            f"B-spline calibration did not converge within "
            f"{parameters['settings']['max_iterations']} iterations (last coefficient "
            f"change {stats['last_coefficient_change']:.3g}); raise "
            "params:calibrate.bspline.max_iterations or set "
            "params:calibrate.require_convergence to false"
        )
    return parameters


def predict_holdout(
    bspline_parameters: dict[str, Any], fit_set: pd.DataFrame, holdout_set: pd.DataFrame
) -> pd.DataFrame:
    """Calibrated probabilities on the held-out part: B-spline, and isotonic regression
    fitted on the same fitting part as a baseline.

    Returns:
        Columns ``score``, ``tag``, ``raw`` (the score as a probability), ``bspline``,
        ``isotonic``.
    """
    isotonic = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
    isotonic.fit(fit_set[SCORE_COLUMN].to_numpy(), fit_set[TAG_COLUMN].to_numpy())
    scores = holdout_set[SCORE_COLUMN].to_numpy()
    return pd.DataFrame(
        {
            SCORE_COLUMN: scores,
            TAG_COLUMN: holdout_set[TAG_COLUMN].to_numpy(),
            "raw": np.clip(scores, 0.0, 1.0),
            "bspline": BSplineCalibrator(bspline_parameters)(scores),
            "isotonic": isotonic.predict(scores),
        }
    )


def compute_calibration_metrics(
    predictions: pd.DataFrame,
    bspline_parameters: dict[str, Any],
    params: dict[str, Any],
) -> dict[str, Any]:
    """Held-out log loss, Brier score and ECE (equal-mass bins) per method.

    Args:
        predictions: Output of :func:`predict_holdout`.
        bspline_parameters: The fitted parameters (their fit summary is copied).
        params: ``ece_bins`` and ``log_loss_clip``.

    Returns:
        ``{"holdout": {...}, "methods": {method: {log_loss, brier, ece}}, "fit": {...}}``.
    """
    tags = predictions[TAG_COLUMN].to_numpy()
    methods = {
        method: calibration_report(
            predictions[method].to_numpy(),
            tags,
            n_bins=int(params["ece_bins"]),
            clip=float(params["log_loss_clip"]),
        )
        for method in METHODS
    }
    bspline_log_loss = methods["bspline"]["log_loss"]
    isotonic_log_loss = methods["isotonic"]["log_loss"]
    if bspline_log_loss > isotonic_log_loss:
        logger.warning(
            "Held-out log loss of the B-spline (%.6f) is above isotonic regression's (%.6f)",
            bspline_log_loss,
            isotonic_log_loss,
        )
    stats = bspline_parameters["fit_statistics"]
    return {
        "holdout": {
            "n_records": len(predictions),
            "n_positives": int(tags.sum()),
            "positive_rate": float(tags.mean()),
        },
        "methods": methods,
        "bspline_minus_isotonic_log_loss": bspline_log_loss - isotonic_log_loss,
        "fit": {
            "status": bspline_parameters["status"],
            "iterations": bspline_parameters["iterations"],
            "n_records": stats["n_records"],
            "n_coefficients": stats["n_coefficients"],
            "log_loss": stats["log_loss"],
            "null_log_loss": stats["null_log_loss"],
        },
        "settings": {
            "ece_bins": int(params["ece_bins"]),
            "log_loss_clip": float(params["log_loss_clip"]),
        },
    }


def plot_reliability_diagram(
    predictions: pd.DataFrame, params: dict[str, Any]
) -> Figure:
    """Reliability diagram of the held-out part (equal-mass bins, log-log axes) and the
    calibration curves (score → probability) of the B-spline and isotonic regression.

    Args:
        predictions: Output of :func:`predict_holdout`.
        params: ``ece_bins``.

    Returns:
        A matplotlib figure with two panels.
    """
    tags = predictions[TAG_COLUMN].to_numpy()
    n_bins = int(params["ece_bins"])
    figure = Figure(figsize=(11, 5), layout="constrained")
    reliability, curves = figure.subplots(1, 2)

    floor = 0.5 / len(predictions)
    for method, marker in zip(METHODS, ("s", "o", "^"), strict=True):
        table = equal_mass_bins(predictions[method].to_numpy(), tags, n_bins)
        reliability.plot(
            np.maximum(table["mean_probability"], floor),
            np.maximum(table["observed_rate"], floor),
            marker=marker,
            label=method,
        )
    reliability.plot([floor, 1], [floor, 1], color="grey", linestyle="--", linewidth=1)
    reliability.set(
        xscale="log",
        yscale="log",
        xlabel="mean predicted probability (bin)",
        ylabel="observed positive rate (bin)",
        title=f"Reliability, held-out part ({n_bins} equal-mass bins)",
    )
    reliability.legend()

    table = equal_mass_bins(predictions["raw"].to_numpy(), tags, n_bins * 3)
    ordered = predictions.sort_values(SCORE_COLUMN)
    curves.scatter(
        table["mean_probability"],
        table["observed_rate"],
        color="black",
        s=12,
        label="observed rate (score bins)",
    )
    curves.plot(ordered[SCORE_COLUMN], ordered["bspline"], label="B-spline")
    curves.step(
        ordered[SCORE_COLUMN], ordered["isotonic"], where="post", label="isotonic"
    )
    curves.set(
        xlabel="raw score",
        ylabel="calibrated probability",
        title="Calibration curves",
    )
    curves.legend()
    return figure
