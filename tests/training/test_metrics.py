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
    queue_metrics,
    queue_name,
    queue_size,
    threshold_curve,
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


# --- Review queues and expected cost -----------------------------------------------------

# Ten orders, three frauds; 0.8 is tied between a fraud and a legitimate order.
QUEUE_LABELS = np.array([1, 1, 0, 1, 0, 0, 0, 0, 0, 0])
QUEUE_SCORES = np.array([0.9, 0.8, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])


def test_queue_names_are_dotted_path_friendly():
    assert queue_name(0.01) == "top_1pct"
    assert queue_name(0.05) == "top_5pct"
    assert queue_name(0.001) == "top_0p1pct"
    assert queue_name(0.005) == "top_0p5pct"
    assert "." not in queue_name(0.0025)


def test_queue_size_is_the_rounded_up_share_of_orders():
    assert queue_size(0.01, 1000) == 10
    assert queue_size(0.07, 100) == 7  # 0.07 * 100 is 7.000000000000001 in floats
    assert queue_size(0.001, 10) == 1
    assert queue_size(0.25, 10) == 3
    with pytest.raises(MetricError, match="queue share must be in"):
        queue_size(0.0, 10)


def test_threshold_curve_flags_tie_groups_together():
    curve = threshold_curve(QUEUE_LABELS, QUEUE_SCORES)
    assert list(curve["flagged"]) == [0, 1, 3, 4, 5, 6, 7, 8, 9, 10]
    assert list(curve["true_positives"]) == [0, 1, 2, 3, 3, 3, 3, 3, 3, 3]
    assert curve["threshold"][0] > 0.9
    assert list(curve["threshold"][1:4]) == [0.9, 0.8, 0.7]


def test_queue_precision_recall_and_threshold_on_a_hand_made_example():
    result = queue_metrics(QUEUE_LABELS, QUEUE_SCORES, [0.1, 0.3, 0.4], 5.0, 100.0)
    top_10, top_30, top_40 = (
        result["queue"][k] for k in ("top_10pct", "top_30pct", "top_40pct")
    )
    assert (top_10["size"], top_10["flagged"], top_10["threshold"]) == (1, 1, 0.9)
    assert top_10["precision"] == 1.0 and top_10["recall"] == pytest.approx(1 / 3)
    # Room for 3: 0.9 and both 0.8s fit exactly.
    assert (top_30["size"], top_30["flagged"], top_30["threshold"]) == (3, 3, 0.8)
    assert top_30["precision"] == pytest.approx(2 / 3)
    assert top_30["recall"] == pytest.approx(2 / 3)
    assert (top_40["flagged"], top_40["threshold"]) == (4, 0.7)
    assert top_40["precision"] == 0.75 and top_40["recall"] == 1.0


def test_ties_never_make_a_queue_larger_than_its_size():
    # Room for 2, but the second and third orders tie at 0.8: the tie group stays out.
    result = queue_metrics(QUEUE_LABELS, QUEUE_SCORES, [0.2], 5.0, 100.0)
    queue = result["queue"]["top_20pct"]
    assert queue["size"] == 2
    assert queue["flagged"] == 1 and queue["threshold"] == 0.9
    assert queue["precision"] == 1.0 and queue["recall"] == pytest.approx(1 / 3)
    assert np.sum(QUEUE_SCORES >= queue["threshold"]) == queue["flagged"]


def test_a_tie_at_the_top_larger_than_the_queue_leaves_it_empty():
    labels = np.array([1, 0, 0, 1, 0])
    scores = np.array([0.9, 0.9, 0.9, 0.2, 0.1])
    queue = queue_metrics(labels, scores, [0.2], 1.0, 1.0)["queue"]["top_20pct"]
    assert (queue["size"], queue["flagged"]) == (1, 0)
    assert queue["precision"] == 0.0 and queue["recall"] == 0.0
    assert queue["threshold"] > 0.9
    assert np.sum(scores >= queue["threshold"]) == 0


@pytest.mark.parametrize("share", [0.001, 0.005, 0.01, 0.05, 0.3])
def test_queues_never_overflow_on_heavily_tied_scores(scored, share):
    labels, scores = scored
    coarse = np.round(scores, 1)  # a handful of distinct values
    queue = queue_metrics(labels, coarse, [share], 5.0, 100.0)["queue"][
        queue_name(share)
    ]
    flagged = coarse >= queue["threshold"]
    assert flagged.sum() == queue["flagged"] <= queue["size"]
    if queue["flagged"]:
        assert queue["precision"] == pytest.approx(precision_score(labels, flagged))
    assert queue["recall"] == pytest.approx(recall_score(labels, flagged))


def test_queue_matches_the_operating_point_without_ties(scored):
    labels, scores = scored
    queue = queue_metrics(labels, scores, [0.05], 5.0, 100.0)["queue"]["top_5pct"]
    point = top_fraction_point(labels, scores, 0.05)
    for key in ("threshold", "flagged", "precision", "recall"):
        assert queue[key] == pytest.approx(point[key])


def test_cost_per_order_and_its_minimum_on_a_hand_made_example():
    result = queue_metrics(QUEUE_LABELS, QUEUE_SCORES, [0.1, 0.3], 5.0, 100.0)
    # Flag nothing: 3 missed frauds over 10 orders.
    assert result["cost"]["no_queue_cost_per_order"] == pytest.approx(30.0)
    # top 10%: 2 missed; top 30%: 1 false positive and 1 missed.
    assert result["queue"]["top_10pct"]["cost_per_order"] == pytest.approx(20.0)
    assert result["queue"]["top_30pct"]["cost_per_order"] == pytest.approx(10.5)
    # Flagging down to 0.7 catches all three frauds for one false positive: 0.5.
    best = result["cost"]["minimum"]
    assert best["cost_per_order"] == pytest.approx(0.5)
    assert (best["threshold"], best["flagged"], best["share"]) == (0.7, 4, 0.4)
    assert best["recall"] == 1.0 and best["precision"] == 0.75
    assert (result["cost"]["false_positive"], result["cost"]["missed_fraud"]) == (
        5.0,
        100.0,
    )


def test_cost_minimum_is_the_lowest_of_every_threshold(scored):
    labels, scores = scored
    best = queue_metrics(labels, scores, [0.01], 5.0, 100.0)["cost"]["minimum"]
    costs = [
        (
            5.0 * np.sum((scores >= t) & (labels == 0))
            + 100.0 * np.sum((scores < t) & (labels == 1))
        )
        / labels.size
        for t in np.unique(scores)
    ]
    assert best["cost_per_order"] == pytest.approx(min(costs))


def test_expensive_false_positives_make_flagging_nothing_cheapest():
    labels = np.array([0, 1, 0, 1])
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    result = queue_metrics(labels, scores, [0.25], 10.0, 1.0)
    best = result["cost"]["minimum"]
    assert best["flagged"] == 0 and best["share"] == 0.0
    assert best["cost_per_order"] == pytest.approx(0.5)  # two missed frauds of four
    assert best["cost_per_order"] == result["cost"]["no_queue_cost_per_order"]
    assert best["threshold"] > 0.9 and best["precision"] == 0.0


def test_queue_metrics_reject_bad_inputs_by_name():
    with pytest.raises(MetricError, match="tsa: missed_fraud cost must be >= 0"):
        queue_metrics(QUEUE_LABELS, QUEUE_SCORES, [0.1], 5.0, -1.0, name="tsa")
    with pytest.raises(
        MetricError, match="baseline: queue share 0.01 repeats top_1pct"
    ):
        queue_metrics(
            QUEUE_LABELS, QUEUE_SCORES, [0.01, 0.01], 5.0, 1.0, name="baseline"
        )
    with pytest.raises(MetricError, match="tsa: labels hold a single class"):
        queue_metrics(np.zeros(4), np.arange(4.0), [0.5], 5.0, 1.0, name="tsa")
