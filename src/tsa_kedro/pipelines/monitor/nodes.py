"""Nodes of the monitor pipeline: drift of scored orders against the bundle's
reference profile.

The report comes first, the failure second: ``compare_with_reference`` returns the
summary, the HTML page and the figure, which Kedro saves; only then does
``check_drift`` read the saved summary and, with ``monitor.fail_run_on: fail``, stop
the run naming the features that failed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import click
import pandas as pd
from matplotlib.figure import Figure

from tsa_kedro.features.raw_orders import normalize_raw_orders
from tsa_kedro.monitoring import drift
from tsa_kedro.monitoring.report import psi_figure, render_html
from tsa_kedro.pipelines.score.model_source import ScoringModel
from tsa_kedro.serving import layout

logger = logging.getLogger(__name__)

EXPORT = "score export (catalog entry score_orders, --params=score_export=...)"


class MonitorInputError(ValueError):
    """The orders, scores or model cannot be compared; the message says which."""


class DriftFailure(click.ClickException, RuntimeError):
    """Features drifted past ``monitor.psi_fail`` with ``monitor.fail_run_on: fail``
    (the CLI shows the message without a traceback)."""


def _orders(
    orders: Mapping[str, Callable[[], pd.DataFrame]], model: ScoringModel
) -> pd.DataFrame:
    schema = model.predictor.schema
    columns = [
        schema.order_id,
        *schema.cat_features,
        *schema.num_features,
        *schema.eng_features,
    ]
    frames = []
    for key in sorted(orders):
        source = f"{EXPORT} file {key}"
        try:
            frame = normalize_raw_orders(
                orders[key](), schema, source, ragged_tolerance=1
            )
        except (ValueError, KeyError) as error:
            raise MonitorInputError(f"cannot read {source}: {error}") from error
        frames.append(frame.loc[:, columns])
    if not frames or not sum(len(f) for f in frames):
        raise MonitorInputError(f"the {EXPORT} holds no orders")
    return pd.concat(frames, ignore_index=True)


def _scores(
    scores_table: pd.DataFrame, model: ScoringModel, order_ids: pd.Series
) -> pd.Series:
    """The scores this model gave to these orders (the table keeps other versions)."""
    mine = scores_table[
        scores_table["model_name"].eq(model.name)
        & scores_table["model_version"].eq(model.version)
        & scores_table["order_id"].isin(order_ids.astype(str))
    ]
    if mine.empty:
        raise MonitorInputError(
            f"scores_table holds no score of model {model.name} version "
            f"{model.version} for the orders of the {EXPORT}; run "
            "`kedro run --pipeline=score` with the same score.model and score_export "
            "first"
        )
    return mine["score"].astype("float64")


def compare_with_reference(
    orders: Mapping[str, Callable[[], pd.DataFrame]],
    scores_table: pd.DataFrame,
    model: ScoringModel,
    monitor: Mapping[str, Any],
) -> tuple[dict[str, Any], str, Figure]:
    """Compare the scored orders and their scores with the bundle's reference profile.

    Args:
        orders: The export that was scored (``score_orders``: key to loader).
        scores_table: The score pipeline's table (rows of this model's name and
            version, for these orders, are used).
        model: The loaded model (the score pipeline's ``load_model``).
        monitor: The ``monitor`` parameters (thresholds).

    Returns:
        ``(drift_summary, drift_report, drift_psi_plot)``: the JSON summary, the HTML
        page and the PSI bar chart.

    Raises:
        MonitorInputError: The bundle holds no reference profile; a file of the
            export is rejected by normalisation (naming it); the export is empty; the
            table holds no score of this model for these orders.
        ProfileError: The profile does not match the model's raw schema.
    """
    if model.reference_profile is None:
        raise MonitorInputError(
            f"the model {model.location} holds no {layout.REFERENCE_PROFILE}; "
            "package it again (kedro run) to monitor it"
        )
    frame = _orders(orders, model)
    schema = model.predictor.schema
    scores = _scores(scores_table, model, frame[schema.order_id])
    vocabulary = {
        feature: encoder.lookup.to_pylist()
        for feature, encoder in model.predictor.transforms.categorical.items()
    }
    summary = drift.compare_to_profile(
        model.reference_profile, frame, scores, vocabulary, schema, monitor
    )
    summary = {
        "model": {"name": model.name, "version": model.version},
        **summary,
    }
    title = f"Drift of scored orders: {model.name} {model.version}"
    logger.info(
        "drift against %s %s: %s (failed %s, warned %s, score PSI %s)",
        model.name,
        model.version,
        summary["status"],
        summary["failed"],
        summary["warned"],
        summary["score"]["psi"],
    )
    return summary, render_html(summary, title), psi_figure(summary)


def check_drift(drift_summary: Mapping[str, Any], monitor: Mapping[str, Any]) -> None:
    """Stop the run when features failed and ``monitor.fail_run_on`` is ``fail``.

    Runs after the summary, report and figure are saved, so a failed run still
    leaves them behind.

    Raises:
        DriftFailure: Naming the failed features and their PSI (and the score, when
            its PSI failed).
    """
    if monitor["fail_run_on"] != "fail":
        return
    failed = [
        f"{item['feature']} (PSI {item['psi']:.3f})"
        for item in drift_summary["features"]
        if item["status"] == "fail"
    ]
    if drift_summary["score"]["status"] == "fail":
        failed.append(f"score (PSI {drift_summary['score']['psi']:.3f})")
    if failed:
        raise DriftFailure(
            f"drift past monitor.psi_fail={monitor['psi_fail']} in "
            f"{', '.join(failed)}; the report is in drift_report "
            "(set monitor.fail_run_on: never to only report)"
        )
