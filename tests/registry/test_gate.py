"""The registration gate."""

from __future__ import annotations

import math

import pytest
import yaml

from tests.conftest import PROJECT_ROOT
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


# --- The floors of conf/base/parameters_register.yml ------------------------------------

BASE_GATE = yaml.safe_load(
    (PROJECT_ROOT / "conf" / "base" / "parameters_register.yml").read_text()
)["register_gate"]


def _set(tree: dict, path: str, value: float) -> None:
    *parents, leaf = path.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[leaf] = value


def _strong_model() -> dict:
    """Metrics of a model that clears every base check comfortably."""
    metrics: dict = {}
    for path, value in {
        "train_metrics.tsa.roc_auc": 0.98,
        "train_metrics.tsa.pr_auc": 0.90,
        "train_metrics.baseline.roc_auc": 0.95,
        "train_metrics.baseline.pr_auc": 0.80,
        "calibration_metrics.methods.raw.log_loss": 0.10,
        "calibration_metrics.methods.bspline.log_loss": 0.05,
        "calibration_metrics.methods.isotonic.log_loss": 0.06,
    }.items():
        _set(metrics, path, value)
    for share in ("0p1", "0p5", "1", "5"):
        for model in ("tsa", "baseline"):
            _set(metrics, f"train_metrics.{model}.queue.top_{share}pct.recall", 0.95)
    return metrics


def test_base_gate_passes_a_strong_model() -> None:
    result = evaluate_gate(_strong_model(), BASE_GATE)
    assert result["passed"] is True, result["summary"]


def test_base_gate_rejects_a_model_below_the_queue_recall_floor() -> None:
    check = BASE_GATE["validation_queue_recall"]
    assert check["metric"].startswith("train_metrics.tsa.queue.top_")
    metrics = _strong_model()
    # AUCs still above their floors: only the queue recall gives the model away.
    _set(metrics, check["metric"], check["min"] - 0.01)
    result = evaluate_gate(metrics, BASE_GATE)
    assert result["passed"] is False
    assert result["failed"] == ["validation_queue_recall"]
    (failed,) = [c for c in result["checks"] if not c["passed"]]
    assert failed["shortfall"] == pytest.approx(0.01)
    assert check["metric"] in result["summary"]


def test_base_gate_rejects_calibration_that_worsens_the_raw_log_loss() -> None:
    check = BASE_GATE["calibration_not_worse_than_raw"]
    assert check == {
        "metric": "calibration_metrics.methods.bspline.log_loss",
        "max": "calibration_metrics.methods.raw.log_loss",
        "margin": 0.0,
    }
    metrics = _strong_model()
    # Below the absolute ceiling of calibrated_log_loss, but above the raw scores'.
    _set(metrics, "calibration_metrics.methods.bspline.log_loss", 0.12)
    result = evaluate_gate(metrics, BASE_GATE)
    assert result["failed"] == ["calibration_not_worse_than_raw"]
    (failed,) = [c for c in result["checks"] if not c["passed"]]
    assert failed["threshold"] == pytest.approx(0.10)
    assert failed["shortfall"] == pytest.approx(0.02)
