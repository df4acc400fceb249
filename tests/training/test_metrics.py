"""Metrics against scikit-learn on known inputs; the percentile map's properties."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    average_precision_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from tsa_kedro.training.metrics import (
    MetricError,
    classification_metrics,
    operating_point_name,
    percentile_map,
    top_fraction_point,
)


@pytest.fixture
def scored():
    rng = np.random.default_rng(3)
    labels = (rng.random(2000) < 0.1).astype(int)
    scores = np.clip(rng.normal(0.3 + 0.3 * labels, 0.15), 0, 1)
    return labels, scores


def test_aucs_match_sklearn(scored):
    labels, scores = scored
    metrics = classification_metrics(labels, scores, [0.01, 0.05])
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(labels, scores))
    assert metrics["pr_auc"] == pytest.approx(average_precision_score(labels, scores))
    assert metrics["n"] == 2000 and metrics["positives"] == labels.sum()
    assert set(metrics["operating_points"]) == {"top_1%", "top_5%"}


@pytest.mark.parametrize("fraction", [0.01, 0.05, 0.5])
def test_operating_points_match_sklearn(scored, fraction):
    labels, scores = scored
    point = top_fraction_point(labels, scores, fraction)
    flagged = scores >= point["threshold"]
    assert flagged.sum() == point["flagged"] == int(np.ceil(fraction * labels.size))
    assert point["precision"] == pytest.approx(precision_score(labels, flagged))
    assert point["recall"] == pytest.approx(recall_score(labels, flagged))
    assert point["f1"] == pytest.approx(f1_score(labels, flagged))


def test_operating_point_on_a_hand_made_example():
    labels = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 1])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    point = top_fraction_point(labels, scores, 0.3)  # flags 0.9, 0.8, 0.7
    assert point["threshold"] == 0.7
    assert point["precision"] == pytest.approx(2 / 3)
    assert point["recall"] == pytest.approx(2 / 3)
    assert point["f1"] == pytest.approx(2 / 3)


def test_operating_point_names():
    assert operating_point_name(0.01) == "top_1%"
    assert operating_point_name(0.005) == "top_0.5%"


def test_single_class_is_rejected_by_name():
    with pytest.raises(MetricError, match="tsa: labels hold a single class"):
        classification_metrics(np.zeros(5), np.linspace(0, 1, 5), [0.1], name="tsa")


def test_non_finite_scores_are_rejected():
    with pytest.raises(MetricError, match="NaN"):
        classification_metrics(np.array([0, 1]), np.array([0.1, np.nan]), [0.5])


def test_percentile_map_properties(scored):
    _, scores = scored
    pairs = percentile_map(scores)
    assert len(pairs) == 1000
    values = np.array(pairs)
    assert np.all(np.diff(values[:, 0]) >= 0)
    assert np.all(np.diff(values[:, 1]) > 0)
    assert values[0, 1] == pytest.approx(0.1) and values[-1, 1] == 100.0
    assert values[-1, 0] == scores.max()
    assert values[499, 0] == pytest.approx(np.median(scores))
    # A score's share of calibration scores at or below it matches its percentile.
    share = np.mean(scores <= values[899, 0])
    assert share == pytest.approx(0.9, abs=0.002)


def test_percentile_map_of_constant_scores_is_flat():
    pairs = np.array(percentile_map(np.full(10, 0.25)))
    assert np.all(pairs[:, 0] == 0.25)


def test_percentile_map_rejects_empty_scores():
    with pytest.raises(MetricError, match="score_file: no scores"):
        percentile_map(np.array([]), name="score_file")
