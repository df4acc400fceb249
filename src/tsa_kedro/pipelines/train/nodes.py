"""Nodes of the ``train`` pipeline: thin wrappers around :mod:`tsa_kedro.training`."""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve

from tsa_kedro.features.contract import (
    LABEL_KEY,
    ORDER_ID_KEY,
    Bundle,
    TensorContractError,
    bundle_widths,
    check_vocabulary,
    check_widths,
)
from tsa_kedro.features.transforms import vocabulary_size
from tsa_kedro.models.config import WIDTH_FIELDS, TSAConfig
from tsa_kedro.models.predict import choose_device
from tsa_kedro.models.tsa import TwoSeqMoEOrderFeatureAttentionClassifier
from tsa_kedro.monitoring import drift
from tsa_kedro.schema import RawSchema
from tsa_kedro.serving.bundle import active_mlflow_run_id
from tsa_kedro.training.baseline import BaselineSettings, baseline_scores, fit_baseline
from tsa_kedro.training.data import labels_of
from tsa_kedro.training.distributed import DistContext, DistributedSettings
from tsa_kedro.training.loop import TrainingSettings, fit, predict_scores
from tsa_kedro.training.metrics import (
    classification_metrics,
    expected_costs,
    percentile_map,
    queue_metrics,
    threshold_curve,
)

logger = logging.getLogger(__name__)

DEFAULT_QUEUE_SHARES = (0.001, 0.005, 0.01, 0.05)
# The false-positive rate axis of the log-scale ROC starts here.
ROC_LOG_MIN_FPR = 1e-4


def build_model(config: Mapping[str, Any]) -> torch.nn.Module:
    """A freshly initialised TSA classifier for a configuration dictionary."""
    return TwoSeqMoEOrderFeatureAttentionClassifier(TSAConfig.from_dict(dict(config)))


def make_model_config(
    train_input: Bundle,
    cat_to_index: Mapping[str, Any],
    model_params: Mapping[str, Any],
) -> TSAConfig:
    """The model configuration: a preset, the data's widths, then explicit overrides.

    Args:
        train_input: ``train.model_input`` (gives the data widths).
        cat_to_index: Fitted vocabulary (gives ``vocab_size``).
        model_params: ``params:train.model``: ``preset`` (a key of ``presets``),
            ``presets`` (name -> ``TSAConfig`` fields) and ``overrides``.

    Rejected: an unknown preset, and overrides of a width or of ``vocab_size`` that
    disagree with ``train.model_input`` / ``cat_to_index`` (for example production
    widths set while the data has other widths).

    Raises:
        TensorContractError: Naming the dataset and each disagreeing width.
        ValueError: The preset is not among ``presets``, or a field is invalid.
    """
    widths = bundle_widths(train_input, "train.model_input")
    data_widths = {**widths.model_widths(), "vocab_size": vocabulary_size(cat_to_index)}
    overrides = dict(model_params.get("overrides") or {})
    wrong = {
        key: (value, overrides[key])
        for key, value in data_widths.items()
        if key in overrides and overrides[key] != value
    }
    if wrong:
        details = ", ".join(
            f"{k}: data {d} vs config {c}" for k, (d, c) in wrong.items()
        )
        raise TensorContractError(
            "train.model_input / cat_to_index disagree with params:train.model.overrides "
            f"({details})"
        )
    presets = dict(model_params.get("presets") or {})
    name = model_params.get("preset", "small")
    if name not in presets:
        raise ValueError(
            f"params:train.model.preset is {name!r}; known presets: {sorted(presets)}"
        )
    return TSAConfig.from_dict({**presets[name], **data_widths, **overrides})


def check_model_inputs(bundle: Bundle, name: str, config: Mapping[str, Any]) -> None:
    """Reject a bundle whose widths or category indices do not fit the model config.

    Raises:
        TensorContractError: Naming the dataset.
    """
    widths = bundle_widths(bundle, name)
    check_widths(widths, {key: config[key] for key in WIDTH_FIELDS}, name)
    check_vocabulary(bundle, name, int(config["vocab_size"]))


def _scores_frame(bundle: Bundle, scores: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "order_id": np.asarray(bundle[ORDER_ID_KEY]).astype(str),
            "label": np.asarray(bundle[LABEL_KEY]).astype(np.int64),
            "score": scores.astype(np.float64),
        }
    )


def train_tsa_model(
    train_input: Bundle,
    vali_input: Bundle,
    cat_to_index: Mapping[str, Any],
    *,
    model_params: dict[str, Any],
    training_params: dict[str, Any],
    distributed_params: dict[str, Any],
) -> tuple[dict[str, torch.Tensor], dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """Train the TSA classifier; keep the weights of the best validation ROC AUC.

    Runs on CPU, one GPU, under ``torchrun`` or across SageMaker hosts x GPUs, and
    resumes an interrupted run from its checkpoint (see docs/source/training.md).

    Args:
        train_input: ``train.model_input`` tensor bundle.
        vali_input: ``vali.model_input`` tensor bundle.
        cat_to_index: Fitted categorical vocabulary (sets ``vocab_size``).
        model_params: ``params:train.model`` (``preset``, ``presets``, ``overrides``).
        training_params: ``params:train.training`` (see ``TrainingSettings``).
        distributed_params: ``params:train.distributed`` (see ``DistributedSettings``).

    Returns:
        Best weights, the model configuration, the per-epoch history and the
        validation scores of the best epoch.
    """
    config = make_model_config(train_input, cat_to_index, model_params).to_dict()
    check_model_inputs(train_input, "train.model_input", config)
    check_model_inputs(vali_input, "vali.model_input", config)
    settings = TrainingSettings.from_dict(training_params)
    result = fit(
        functools.partial(build_model, config),
        train_input,
        vali_input,
        settings,
        distributed=DistributedSettings.from_dict(distributed_params),
        run_identity={"model_config": config},
    )
    logger.info(
        "best validation ROC AUC %.4f at epoch %d of %d",
        result.best_metric,
        result.best_epoch,
        len(result.history),
    )
    history = pd.DataFrame(result.history)
    return (
        result.weights,
        config,
        history,
        _scores_frame(vali_input, result.validation_scores),
    )


def record_training_run(model_config: Mapping[str, Any]) -> dict[str, Any]:
    """Name the MLflow run that trained the model, for the package's lineage.

    The node takes ``model_config`` only so that it runs right after
    ``train_tsa_model``, in the same ``kedro run``: the active MLflow run is then the
    one that trained the model. The package stage reads this record, so a later
    ``kedro run --pipeline=package`` keeps the training run's id instead of writing
    its own.

    Returns:
        ``{"training_run_id": id}``, the id being None when tracking is off.
    """
    run_id = active_mlflow_run_id()
    logger.info("model trained in MLflow run %s", run_id or "(tracking off)")
    return {"training_run_id": run_id}


def score_calibration_set(
    model_weights: dict[str, torch.Tensor],
    model_config: dict[str, Any],
    cali_input: Bundle,
    evaluation_params: dict[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score the calibration set with the trained model.

    Returns:
        ``score_file`` (``order_id``, ``score``) and ``tag_file`` (``order_id``,
        ``tag``), row for row in the order of ``cali.model_input``.
    """
    check_model_inputs(cali_input, "cali.model_input", model_config)
    model = build_model(model_config)
    model.load_state_dict(model_weights)
    device = choose_device()
    scores = predict_scores(
        model.to(device),
        cali_input,
        DistContext(device=device),
        int(evaluation_params.get("score_batch_size", 2048)),
    )
    frame = _scores_frame(cali_input, scores)
    return (
        frame[["order_id", "score"]],
        frame[["order_id", "label"]].rename(columns={"label": "tag"}),
    )


def fit_baseline_model(
    train_input: Bundle, vali_input: Bundle, baseline_params: dict[str, Any]
) -> pd.DataFrame:
    """Fit the gradient-boosted trees baseline and score the validation set.

    Returns:
        Validation scores (``order_id``, ``label``, ``score``).
    """
    bundle_widths(train_input, "train.model_input")
    bundle_widths(vali_input, "vali.model_input")
    labels = labels_of(train_input, "train.model_input")
    settings = BaselineSettings.from_dict(baseline_params)
    model = fit_baseline(train_input, labels, settings)
    return _scores_frame(vali_input, baseline_scores(model, vali_input, settings))


def _roc_figure(curves: Mapping[str, pd.DataFrame], metrics: Mapping) -> Figure:
    figure = Figure(figsize=(5, 5))
    axes = figure.add_subplot()
    for name, frame in curves.items():
        fpr, tpr, _ = roc_curve(frame["label"], frame["score"])
        axes.plot(fpr, tpr, label=f"{name} (AUC {metrics[name]['roc_auc']:.3f})")
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    axes.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    axes.legend(loc="lower right")
    return figure


def _pr_figure(curves: Mapping[str, pd.DataFrame], metrics: Mapping) -> Figure:
    figure = Figure(figsize=(5, 5))
    axes = figure.add_subplot()
    for name, frame in curves.items():
        precision, recall, _ = precision_recall_curve(frame["label"], frame["score"])
        axes.plot(recall, precision, label=f"{name} (AP {metrics[name]['pr_auc']:.3f})")
    axes.axhline(
        curves["tsa"]["label"].mean(), color="grey", linestyle=":", linewidth=1
    )
    axes.set(xlabel="recall", ylabel="precision", title="Precision-recall")
    axes.legend(loc="upper right")
    return figure


def _histogram_figure(curves: Mapping[str, pd.DataFrame]) -> Figure:
    figure = Figure(figsize=(5 * len(curves), 4))
    bins = np.linspace(0, 1, 51)
    for position, (name, frame) in enumerate(curves.items(), start=1):
        axes = figure.add_subplot(1, len(curves), position)
        for label, colour in ((0, "tab:blue"), (1, "tab:red")):
            axes.hist(
                frame.loc[frame["label"] == label, "score"],
                bins=bins,
                density=True,
                alpha=0.5,
                color=colour,
                label=f"label {label}",
            )
        axes.set(title=f"{name}: validation scores", xlabel="score", ylabel="density")
        axes.legend()
    return figure


def _roc_log_figure(curves: Mapping[str, pd.DataFrame], metrics: Mapping) -> Figure:
    """ROC with a logarithmic false-positive-rate axis from ``ROC_LOG_MIN_FPR`` to 1:
    the low-alert region a review queue works in. Points at a false-positive rate of
    0 have no place on the axis and are left out."""
    figure = Figure(figsize=(5, 5))
    axes = figure.add_subplot()
    for name, frame in curves.items():
        fpr, tpr, _ = roc_curve(frame["label"], frame["score"])
        shown = fpr > 0
        axes.plot(
            fpr[shown],
            tpr[shown],
            label=f"{name} (AUC {metrics[name]['roc_auc']:.3f})",
        )
    # The chance line TPR = FPR is a curve on a log axis: draw it from many points.
    chance = np.logspace(np.log10(ROC_LOG_MIN_FPR), 0.0, 50)
    axes.plot(chance, chance, color="grey", linestyle=":", linewidth=1)
    axes.set_xscale("log")
    axes.set(
        xlim=(ROC_LOG_MIN_FPR, 1.0),
        ylim=(0.0, 1.0),
        xlabel="false positive rate (log scale)",
        ylabel="true positive rate",
        title="ROC, low false-positive rates",
    )
    axes.legend(loc="upper left")
    return figure


def _queue_figure(metrics: Mapping) -> Figure:
    """Precision and recall of each model at each review-queue share."""
    figure = Figure(figsize=(10, 4), layout="constrained")
    panels = figure.subplots(1, 2, sharex=True)
    for axes, measure in zip(panels, ("precision", "recall"), strict=True):
        for name, model_metrics in metrics.items():
            queues = sorted(model_metrics["queue"].values(), key=lambda q: q["share"])
            percent = [100 * queue["share"] for queue in queues]
            axes.plot(
                percent,
                [queue[measure] for queue in queues],
                marker="o",
                label=name,
            )
        axes.set_xscale("log")
        axes.set_xticks(percent, labels=[f"{p:g}%" for p in percent])
        axes.minorticks_off()
        axes.set(
            xlabel="queue: top % of orders by score (log scale)",
            ylabel=measure,
            ylim=(0.0, 1.05),
            title=f"{measure.capitalize()} at queue sizes",
        )
        axes.legend()
    return figure


def _cost_figure(curves: Mapping[str, pd.DataFrame], metrics: Mapping) -> Figure:
    """Expected cost per order against the share of orders flagged (one point per
    realisable threshold), each model's minimum marked; the cost of flagging
    nothing is the dotted line."""
    figure = Figure(figsize=(6, 4.5), layout="constrained")
    axes = figure.add_subplot()
    for name, frame in curves.items():
        labels = frame["label"].to_numpy().astype(np.int64)
        scores = frame["score"].to_numpy(np.float64)
        cost = metrics[name]["cost"]
        curve = threshold_curve(labels, scores)
        costs = expected_costs(
            curve,
            int(labels.sum()),
            labels.size,
            cost["false_positive"],
            cost["missed_fraud"],
        )
        (line,) = axes.plot(
            curve["flagged"][1:] / labels.size, costs[1:], label=f"{name}"
        )
        best = cost["minimum"]
        if best["flagged"]:
            axes.plot(
                best["share"],
                best["cost_per_order"],
                marker="*",
                markersize=12,
                color=line.get_color(),
                linestyle="none",
                label=(
                    f"{name} minimum {best['cost_per_order']:.3g} "
                    f"at score >= {best['threshold']:.3g}"
                ),
            )
        else:
            axes.plot([], [], " ", label=f"{name} minimum: flag nothing")
    first = next(iter(metrics.values()))["cost"]
    axes.axhline(
        first["no_queue_cost_per_order"],
        color="grey",
        linestyle=":",
        linewidth=1,
        label="flag nothing",
    )
    axes.set_xscale("log")
    axes.set(
        xlabel="share of orders flagged (log scale)",
        ylabel="expected cost per order",
        title=(
            f"Cost: {first['false_positive']:g} per false positive, "
            f"{first['missed_fraud']:g} per missed fraud"
        ),
    )
    axes.legend(fontsize="small")
    return figure


def evaluate_models(
    tsa_validation_scores: pd.DataFrame,
    baseline_validation_scores: pd.DataFrame,
    evaluation_params: dict[str, Any],
) -> tuple[dict[str, Any], Figure, Figure, Figure, Figure, Figure, Figure]:
    """Validation metrics of the TSA model and the baseline, and their plots.

    Per model: ROC AUC, PR AUC, the top-fraction operating points, the review queues
    (``queue.top_1pct.recall`` ...: precision, recall, threshold and expected cost
    per order of the top ``queue_shares`` of orders) and the cost-minimising
    threshold (``cost.minimum``) for ``cost.false_positive`` and
    ``cost.missed_fraud`` (see :func:`tsa_kedro.training.metrics.queue_metrics`).

    Rejected: score tables of different orders (not the same validation set).

    Returns:
        ``train_metrics`` (keys ``tsa`` and ``baseline``), the ROC figure, the
        precision-recall figure, the score histograms by label, the ROC on a log
        false-positive-rate axis, precision and recall at the queue sizes, and the
        cost curve.
    """
    if not tsa_validation_scores["order_id"].equals(
        baseline_validation_scores["order_id"]
    ):
        raise TensorContractError(
            "tsa_validation_scores and baseline_validation_scores do not list the same "
            "validation orders in the same order"
        )
    points = list(evaluation_params.get("operating_points", [0.01, 0.05]))
    shares = list(evaluation_params.get("queue_shares", DEFAULT_QUEUE_SHARES))
    cost = dict(evaluation_params.get("cost") or {})
    false_positive_cost = float(cost.get("false_positive", 5.0))
    missed_fraud_cost = float(cost.get("missed_fraud", 100.0))
    curves = {"tsa": tsa_validation_scores, "baseline": baseline_validation_scores}
    metrics = {}
    for name, frame in curves.items():
        labels, scores = frame["label"].to_numpy(), frame["score"].to_numpy()
        metrics[name] = {
            **classification_metrics(labels, scores, points, name=name),
            **queue_metrics(
                labels,
                scores,
                shares,
                false_positive_cost,
                missed_fraud_cost,
                name=name,
            ),
        }
    logger.info(
        "validation PR AUC: TSA %.4f, baseline %.4f; ROC AUC: TSA %.4f, baseline %.4f",
        metrics["tsa"]["pr_auc"],
        metrics["baseline"]["pr_auc"],
        metrics["tsa"]["roc_auc"],
        metrics["baseline"]["roc_auc"],
    )
    for name in curves:
        best = metrics[name]["cost"]["minimum"]
        logger.info(
            "%s: lowest expected cost %.4f per order at score >= %.4g (%d orders flagged)",
            name,
            best["cost_per_order"],
            best["threshold"],
            best["flagged"],
        )
    return (
        metrics,
        _roc_figure(curves, metrics),
        _pr_figure(curves, metrics),
        _histogram_figure(curves),
        _roc_log_figure(curves, metrics),
        _queue_figure(metrics),
        _cost_figure(curves, metrics),
    )


def build_percentile_map(score_file: pd.DataFrame) -> list[list[float]]:
    """1000 ``[score, percentile]`` pairs from the calibration scores' quantiles."""
    return percentile_map(score_file["score"].to_numpy(), name="score_file")


def build_reference_profile(
    train_raw_chunks: Mapping[str, Any],
    score_file: pd.DataFrame,
    raw_schema: Mapping[str, Any],
) -> dict[str, Any]:
    """The training data's profile for drift monitoring, shipped in the bundle.

    Args:
        train_raw_chunks: The train split's normalised raw chunks (key to frame or
            loader), read one at a time.
        score_file: The calibration set's scores (column ``score``).
        raw_schema: The ``raw_schema`` parameters.

    Returns:
        The profile of ``tsa_kedro.monitoring.drift.build_reference_profile``.

    Raises:
        ProfileError: No training rows, a missing feature column, or no finite
            calibration score.
        KeyError: ``score_file`` has no ``score`` column.
    """
    if "score" not in score_file.columns:
        raise KeyError(
            f"score_file has no 'score' column (columns: {list(score_file.columns)})"
        )
    schema = RawSchema.from_params(raw_schema)
    chunks = (
        chunk() if callable(chunk) else chunk
        for _, chunk in sorted(train_raw_chunks.items())
    )
    profile = drift.build_reference_profile(chunks, score_file["score"], schema)
    logger.info(
        "reference profile: %d training orders, %d features",
        profile["rows"],
        len(profile["numerical"]) + len(profile["categorical"]),
    )
    return profile
