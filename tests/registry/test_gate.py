"""The registration gate."""

from __future__ import annotations

import math

import pytest

from tsa_kedro.registry.gate import GateConfigError, evaluate_gate

METRICS = {
    "train_metrics": {
        "tsa": {"roc_auc": 0.91, "pr_auc": 0.42},
        "baseline": {"roc_auc": 0.85, "pr_auc": 0.45},
    },
    "calibration_metrics": {"bspline": {"log_loss": 0.08}},
}


def test_passing_model() -> None:
    result = evaluate_gate(
        METRICS,
        {
            "auc": {"metric": "train_metrics.tsa.roc_auc", "min": 0.7},
            "vs_baseline": {
                "metric": "train_metrics.tsa.pr_auc",
                "min": "train_metrics.baseline.pr_auc",
                "margin": 0.05,
            },
            "log_loss": {"metric": "calibration_metrics.bspline.log_loss", "max": 0.1},
        },
    )
    assert result["passed"] is True
    assert result["failed"] == []
    assert [c["passed"] for c in result["checks"]] == [True, True, True]
    assert result["checks"][1]["threshold"] == pytest.approx(0.40)


def test_failing_model_names_metric_and_shortfall() -> None:
    result = evaluate_gate(
        METRICS,
        {
            "pr_auc": {"metric": "train_metrics.tsa.pr_auc", "min": 0.5},
            "vs_baseline": {
                "metric": "train_metrics.tsa.pr_auc",
                "min": "train_metrics.baseline.pr_auc",
                "margin": 0.01,
            },
            "log_loss": {"metric": "calibration_metrics.bspline.log_loss", "max": 0.05},
        },
    )
    assert result["passed"] is False
    assert result["failed"] == ["pr_auc", "vs_baseline", "log_loss"]
    shortfalls = {c["name"]: c["shortfall"] for c in result["checks"]}
    assert shortfalls["pr_auc"] == pytest.approx(0.08)
    assert shortfalls["vs_baseline"] == pytest.approx(0.02)
    assert shortfalls["log_loss"] == pytest.approx(0.03)
    assert (
        "train_metrics.tsa.pr_auc = 0.42 (needs >= 0.5) FAILED, off by 0.08"
        in (result["summary"])
    )


def test_nan_metric_fails_without_crashing() -> None:
    metrics = {"train_metrics": {"tsa": {"roc_auc": math.nan}}}
    result = evaluate_gate(
        metrics, {"auc": {"metric": "train_metrics.tsa.roc_auc", "min": 0.5}}
    )
    assert result["passed"] is False
    assert result["checks"][0]["value"] is None  # strict JSON: no NaN


@pytest.mark.parametrize(
    ("checks", "message"),
    [
        ({}, "no checks"),
        ({"x": {"metric": "train_metrics.tsa.f1", "min": 0.1}}, "no key 'f1'"),
        ({"x": {"metric": "train_metrics.tsa", "min": 0.1}}, "not a number"),
        ({"x": {"metric": "train_metrics.tsa.roc_auc"}}, "exactly one of"),
        ({"x": {"metric": "train_metrics.tsa.roc_auc", "min": 1, "max": 2}}, "exactly"),
        (
            {"x": {"metric": "train_metrics.tsa.roc_auc", "min": 0.1, "margin": -1}},
            ">= 0",
        ),
        ({"x": {"metric": "train_metrics.tsa.roc_auc", "mni": 0.1}}, "unknown keys"),
        ({"x": {"min": 0.1}}, "needs a 'metric'"),
    ],
)
def test_misconfigured_checks_raise(checks: dict, message: str) -> None:
    with pytest.raises(GateConfigError, match=message):
        evaluate_gate(METRICS, checks)
