"""Validation metrics, operating points and the percentile map."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

PERCENTILE_MAP_SIZE = 1000


class MetricError(ValueError):
    """Scores or labels from which a metric cannot be computed; names the data."""


def _checked(
    labels: np.ndarray, scores: np.ndarray, name: str
) -> tuple[np.ndarray, ...]:
    labels = np.asarray(labels).astype(np.int64).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.size != scores.size:
        raise MetricError(f"{name}: {labels.size} labels but {scores.size} scores")
    if labels.size == 0:
        raise MetricError(f"{name}: no rows")
    if not np.isfinite(scores).all():
        raise MetricError(f"{name}: scores contain NaN or infinite values")
    if np.unique(labels).size < 2:
        raise MetricError(
            f"{name}: labels hold a single class; ROC and PR AUC are undefined"
        )
    return labels, scores


def roc_auc(labels: np.ndarray, scores: np.ndarray, name: str = "scores") -> float:
    """Area under the ROC curve.

    Raises:
        MetricError: On a single class, mismatched lengths or non-finite scores.
    """
    labels, scores = _checked(labels, scores, name)
    return float(roc_auc_score(labels, scores))


def top_fraction_point(
    labels: np.ndarray, scores: np.ndarray, fraction: float
) -> dict[str, float]:
    """Precision, recall and F1 when the top ``fraction`` of scores are flagged.

    The threshold is the score of the ``ceil(fraction * n)``-th highest order; every
    order scoring at least the threshold is flagged (ties are flagged together).
    """
    if not 0 < fraction <= 1:
        raise MetricError(f"operating point fraction must be in (0, 1], got {fraction}")
    count = max(1, math.ceil(fraction * scores.size))
    threshold = float(np.sort(scores)[::-1][count - 1])
    flagged = scores >= threshold
    true_positives = int(np.sum(flagged & (labels == 1)))
    n_flagged = int(flagged.sum())
    precision = true_positives / n_flagged
    recall = true_positives / int(labels.sum())
    f1 = 0.0 if true_positives == 0 else 2 * precision * recall / (precision + recall)
    return {
        "fraction": float(fraction),
        "threshold": threshold,
        "flagged": n_flagged,
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
    }


def operating_point_name(fraction: float) -> str:
    """``0.01`` → ``top_1%``, ``0.005`` → ``top_0.5%``."""
    return f"top_{fraction * 100:g}%"


def classification_metrics(
    labels: np.ndarray,
    scores: np.ndarray,
    operating_points: Sequence[float],
    name: str = "scores",
) -> dict[str, object]:
    """ROC AUC, PR AUC (average precision) and top-fraction operating points.

    Raises:
        MetricError: On a single class, mismatched lengths or non-finite scores.
    """
    labels, scores = _checked(labels, scores, name)
    return {
        "roc_auc": float(roc_auc_score(labels, scores)),
        "pr_auc": float(average_precision_score(labels, scores)),
        "n": int(labels.size),
        "positives": int(labels.sum()),
        "operating_points": {
            operating_point_name(fraction): top_fraction_point(labels, scores, fraction)
            for fraction in operating_points
        },
    }


def percentile_map(
    scores: np.ndarray, size: int = PERCENTILE_MAP_SIZE, name: str = "scores"
) -> list[list[float]]:
    """``size`` pairs ``[score, percentile]`` from the quantiles of ``scores``.

    Pair ``k`` (1-based) holds the ``k / size`` quantile of the scores and the
    percentile ``100 * k / size``; scores are non-decreasing, percentiles strictly
    increasing from ``100 / size`` to 100.

    Raises:
        MetricError: On no scores or non-finite scores.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if scores.size == 0:
        raise MetricError(f"{name}: no scores to build a percentile map from")
    if not np.isfinite(scores).all():
        raise MetricError(f"{name}: scores contain NaN or infinite values")
    levels = np.arange(1, size + 1) / size
    quantiles = np.maximum.accumulate(np.quantile(scores, levels))
    return [[float(q), float(100 * level)] for q, level in zip(quantiles, levels)]
