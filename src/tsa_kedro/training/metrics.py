"""Validation metrics, operating points and the percentile map."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

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


# --- Review queues and the cost of a threshold -----------------------------------------


def queue_name(share: float) -> str:
    """Dotted-path-friendly key of a queue share: ``0.01`` → ``top_1pct``,
    ``0.001`` → ``top_0p1pct`` (``p`` for the decimal point)."""
    return f"top_{share * 100:g}pct".replace(".", "p")


def queue_size(share: float, n: int) -> int:
    """Orders in the queue that holds the top ``share`` of ``n`` orders:
    ``ceil(share * n)``, at least 1 (a rounding error of the product is ignored).

    Raises:
        MetricError: ``share`` outside (0, 1].
    """
    if not 0 < share <= 1:
        raise MetricError(f"queue share must be in (0, 1], got {share}")
    return max(1, math.ceil(share * n - 1e-9))


def threshold_curve(labels: np.ndarray, scores: np.ndarray) -> dict[str, np.ndarray]:
    """Every threshold that a rule "flag the orders scoring at least t" can realise.

    Entry 0 flags nothing (its threshold lies just above the highest score); entry
    ``i > 0`` flags every order scoring at least the ``i``-th highest distinct score.
    Tied scores are always flagged together, so ``flagged`` jumps by the size of each
    tie group.

    Returns:
        ``threshold``, ``flagged`` (orders flagged, increasing), ``true_positives``
        (frauds among them), each one entry per threshold.
    """
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], labels[order]
    caught = np.cumsum(hits)
    # The last order of each run of equal scores closes a tie group.
    ends = np.flatnonzero(np.append(ranked[1:] != ranked[:-1], True))
    return {
        "threshold": np.concatenate(([np.nextafter(ranked[0], np.inf)], ranked[ends])),
        "flagged": np.concatenate(([0], ends + 1)),
        "true_positives": np.concatenate(([0], caught[ends])),
    }


def expected_costs(
    curve: Mapping[str, np.ndarray],
    positives: int,
    n: int,
    false_positive_cost: float,
    missed_fraud_cost: float,
) -> np.ndarray:
    """Expected cost per order at each threshold of :func:`threshold_curve`:
    ``(false_positive_cost * FP + missed_fraud_cost * FN) / n``."""
    false_positives = curve["flagged"] - curve["true_positives"]
    missed = positives - curve["true_positives"]
    return (false_positive_cost * false_positives + missed_fraud_cost * missed) / n


def _point(
    curve: Mapping[str, np.ndarray], costs: np.ndarray, index: int, positives: int
) -> dict[str, float]:
    flagged = int(curve["flagged"][index])
    caught = int(curve["true_positives"][index])
    return {
        "threshold": float(curve["threshold"][index]),
        "flagged": flagged,
        "precision": caught / flagged if flagged else 0.0,
        "recall": caught / positives,
        "cost_per_order": float(costs[index]),
    }


def queue_metrics(
    labels: np.ndarray,
    scores: np.ndarray,
    shares: Sequence[float],
    false_positive_cost: float,
    missed_fraud_cost: float,
    name: str = "scores",
) -> dict[str, object]:
    """Precision, recall, threshold and expected cost of review queues, and the
    threshold that minimises the expected cost per order.

    A queue of share ``q`` has room for ``queue_size(q, n)`` orders. It flags every
    order scoring at least its threshold, the lowest threshold that does not overflow
    the room: when tied scores straddle the queue's last place, the whole tie group
    stays out and the queue holds fewer orders (``flagged``) than its ``size``; when
    the highest score alone is tied across more orders than the room, the queue is
    empty (precision 0, threshold just above the highest score).

    The cost minimum is searched over every realisable threshold, flagging nothing
    included; on equal costs the highest threshold (the smallest queue) wins.

    Returns:
        A dict with ``queue`` (per ``queue_name(q)``: ``share``, ``size``,
        ``threshold``, ``flagged``, ``precision``, ``recall``, ``cost_per_order``)
        and ``cost`` (``false_positive``, ``missed_fraud``,
        ``no_queue_cost_per_order`` and ``minimum``, which holds ``threshold``,
        ``flagged``, ``share``, ``precision``, ``recall`` and ``cost_per_order``).

    Raises:
        MetricError: On a single class, mismatched lengths, non-finite scores, a share
            outside (0, 1], two shares with the same key, or a negative cost.
    """
    labels, scores = _checked(labels, scores, name)
    for cost_name, cost in (
        ("false_positive", false_positive_cost),
        ("missed_fraud", missed_fraud_cost),
    ):
        if not (math.isfinite(cost) and cost >= 0):
            raise MetricError(f"{name}: {cost_name} cost must be >= 0, got {cost}")
    n, positives = labels.size, int(labels.sum())
    curve = threshold_curve(labels, scores)
    costs = expected_costs(curve, positives, n, false_positive_cost, missed_fraud_cost)
    queues: dict[str, dict[str, float]] = {}
    for share in shares:
        key = queue_name(share)
        if key in queues:
            raise MetricError(f"{name}: queue share {share} repeats {key}")
        size = queue_size(share, n)
        index = int(np.searchsorted(curve["flagged"], size, side="right")) - 1
        queues[key] = {
            "share": float(share),
            "size": size,
            **_point(curve, costs, index, positives),
        }
    best = int(np.argmin(costs))
    minimum = _point(curve, costs, best, positives)
    return {
        "queue": queues,
        "cost": {
            "false_positive": float(false_positive_cost),
            "missed_fraud": float(missed_fraud_cost),
            "no_queue_cost_per_order": float(costs[0]),
            "minimum": {**minimum, "share": minimum["flagged"] / n},
        },
    }
