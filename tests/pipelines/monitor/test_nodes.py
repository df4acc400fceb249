"""The monitor nodes on the tiny bundle: training-like orders pass, planted shifts
fail and are named, and the failure comes after the report."""

from __future__ import annotations

import dataclasses
import json

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from tsa_kedro.datasets.raw_export import RawExportDataset
from tsa_kedro.pipelines.monitor.nodes import (
    DriftFailure,
    MonitorInputError,
    check_drift,
    compare_with_reference,
)
from tsa_kedro.pipelines.score.model_source import load_scoring_model
from tsa_kedro.pipelines.score.nodes import score_orders

from .conftest import SHIFTED_AMOUNT, SHIFTED_CATEGORY

MONITOR = {
    "psi_warn": 0.1,
    "psi_fail": 0.25,
    "unknown_share_warn": 0.05,
    "clipped_share_warn": 0.05,
    "fail_run_on": "fail",
}


@pytest.fixture(scope="module")
def model(model_archive):
    return load_scoring_model(str(model_archive), tracking_uri="unused", device="cpu")


def _export(folder) -> dict:
    return RawExportDataset(
        path=str(folder),
        dataset={"type": "pandas.ParquetDataset"},
        filename_suffix=".parquet",
    ).load()


def _monitor(folder, model, **params):
    orders = _export(folder)
    _, table, _ = score_orders(orders, model, {"batch_orders": 1000})
    return compare_with_reference(orders, table, model, {**MONITOR, **params})


def test_orders_like_the_training_ones_are_ok(exports, model):
    summary, page, figure = _monitor(exports["like_training"], model)
    assert summary["status"] == "ok", [
        (f["feature"], f["psi"], f["status"])
        for f in summary["features"]
        if f["status"] != "ok"
    ]
    assert summary["failed"] == [] and summary["warned"] == []
    assert summary["score"]["status"] == "ok"
    assert all(v == 0 for v in summary["unknown_share"].values())
    assert "<script" not in page and "http" not in page.split("<body>")[1]
    check_drift(summary, MONITOR)  # nothing failed: no error
    json.dumps(summary)
    plt.close(figure)


def test_planted_shift_fails_and_is_named(exports, model):
    summary, page, figure = _monitor(exports["shifted"], model)
    by_name = {f["feature"]: f for f in summary["features"]}
    assert summary["status"] == "fail"
    assert set(summary["failed"]) == {SHIFTED_AMOUNT, SHIFTED_CATEGORY}
    assert by_name[SHIFTED_CATEGORY]["unknown_share"] == pytest.approx(1.0)
    assert by_name[SHIFTED_AMOUNT]["clipped_share"] > MONITOR["clipped_share_warn"]
    assert summary["features"][0]["feature"] in {SHIFTED_AMOUNT, SHIFTED_CATEGORY}
    for name in (SHIFTED_AMOUNT, SHIFTED_CATEGORY):
        assert name in page
    assert page.index(SHIFTED_AMOUNT) < page.index("card_type")  # sorted by PSI
    with pytest.raises(DriftFailure) as failure:
        check_drift(summary, MONITOR)
    assert SHIFTED_AMOUNT in str(failure.value)
    assert SHIFTED_CATEGORY in str(failure.value)
    check_drift(summary, {**MONITOR, "fail_run_on": "never"})
    plt.close(figure)


def test_a_bundle_without_profile_is_refused(exports, model):
    old = dataclasses.replace(model, reference_profile=None)
    with pytest.raises(MonitorInputError, match="reference_profile.json"):
        compare_with_reference(
            _export(exports["like_training"]), pd.DataFrame(), old, MONITOR
        )


def test_scores_of_another_model_are_refused(exports, model):
    orders = _export(exports["like_training"])
    _, table, _ = score_orders(orders, model, {"batch_orders": 1000})
    table["model_version"] = "other"
    with pytest.raises(MonitorInputError, match="pipeline=score"):
        compare_with_reference(orders, table, model, MONITOR)
