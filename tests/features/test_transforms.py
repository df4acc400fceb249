"""Fitting of the vocabulary, the min-max scaling and the default values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tests.features.raw_builder import raw_frame, small_schema
from tsa_kedro.features.transforms import fit_transforms, vocabulary_size

SCHEMA = small_schema()
NULL = "My Text String"


def _orders(cat0, cat1, num0, eng0):
    return raw_frame(
        [
            {
                "order_id": i,
                "ts": 100 + i,
                "label": 0,
                "values": {"cat0": a, "cat1": b, "num0": x, "num1": 1.0, "eng0": e},
            }
            for i, (a, b, x, e) in enumerate(zip(cat0, cat1, num0, eng0, strict=True))
        ],
        SCHEMA,
    )


TRAIN = _orders(
    ["a", "a", "b", "c", NULL, None],
    ["x", "y", "y", "y", "z", "z"],
    [1.0, 2.0, 3.0, 10.0, None, float("nan")],
    [0.0, -4.0, 4.0, 2.0, 1.0, 1.0],
)


def test_vocabulary_is_disjoint_frequency_ordered_and_skips_nulls():
    cat_to_index, _, defaults = fit_transforms([TRAIN], SCHEMA, {"min_frequency": 1})
    assert cat_to_index == {
        "cat0": {"a": 1, "b": 2, "c": 3},
        "cat1": {"y": 4, "z": 5, "x": 6},
    }
    assert vocabulary_size(cat_to_index) == 7
    assert defaults["cat0"] == "a"
    assert defaults["cat1"] == "y"


def test_min_frequency_and_unknown_default():
    cat_to_index, _, defaults = fit_transforms(
        [TRAIN], SCHEMA, {"min_frequency": 2, "categorical_default": "unknown"}
    )
    assert cat_to_index == {"cat0": {"a": 1}, "cat1": {"y": 2, "z": 3}}
    assert defaults["cat0"] is None


def test_scaling_and_median_defaults_ignore_missing_values():
    _, scaling, defaults = fit_transforms([TRAIN], SCHEMA, {})
    assert scaling["sequence"]["num0"] == {"min": 1.0, "max": 10.0}
    assert scaling["sequence"]["num1"] == {"min": 1.0, "max": 1.0}
    assert scaling["dense"]["eng0"] == {"min": -4.0, "max": 4.0}
    assert defaults["num0"] == 2.5
    assert defaults["eng0"] == 1.0
    # eng1 is missing everywhere: neutral scaling, default 0
    assert scaling["dense"]["eng1"] == {"min": 0.0, "max": 1.0}
    assert defaults["eng1"] == 0.0


def test_chunked_fit_equals_one_chunk_and_is_json():
    whole = fit_transforms([TRAIN], SCHEMA, {"min_frequency": 1})
    chunked = fit_transforms(
        [TRAIN.iloc[:2], TRAIN.iloc[2:5], TRAIN.iloc[5:]], SCHEMA, {"min_frequency": 1}
    )
    assert whole == chunked
    assert json.loads(json.dumps(whole)) == list(whole)


def test_overrides_and_zero_default():
    _, _, defaults = fit_transforms(
        [TRAIN],
        SCHEMA,
        {"numerical_default": "zero", "default_overrides": {"cat1": "x", "num1": 3}},
    )
    assert defaults["num0"] == 0.0
    assert defaults["num1"] == 3.0
    assert defaults["cat1"] == "x"


def test_median_sample_bounds_rows_and_is_seeded():
    big = _orders(["a"] * 50, ["x"] * 50, list(np.arange(50.0)), [0.0] * 50)
    params = {"median_sample_rows": 10, "seed": 3}
    first = fit_transforms([big], SCHEMA, params)[2]["num0"]
    assert first == fit_transforms([big], SCHEMA, params)[2]["num0"]
    assert 0.0 <= first <= 49.0


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"min_frequency": 0}, "min_frequency"),
        ({"categorical_default": "median"}, "categorical_default"),
        ({"default_overrides": {"nope": 1}}, "nope"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_bad_parameters_are_named(params, message):
    with pytest.raises(ValueError, match=message):
        fit_transforms([TRAIN], SCHEMA, params)


def test_no_rows_and_non_numeric_columns_are_rejected():
    with pytest.raises(ValueError, match="no rows"):
        fit_transforms([TRAIN.iloc[:0]], SCHEMA, {})
    bad = TRAIN.astype({"num0": object})
    bad.loc[0, "num0"] = "ten"
    with pytest.raises(ValueError, match="num0"):
        fit_transforms([bad], SCHEMA, {})


def test_log_scale_records_bounds_on_the_signed_log_axis():
    _, scaling, defaults = fit_transforms(
        [TRAIN], SCHEMA, {"log_scale": ["num0", "eng*"]}
    )
    assert scaling["sequence"]["num0"] == {
        "min": math.log1p(1.0),
        "max": math.log1p(10.0),
        "transform": "signed_log1p",
    }
    assert scaling["dense"]["eng0"] == {
        "min": -math.log1p(4.0),
        "max": math.log1p(4.0),
        "transform": "signed_log1p",
    }
    assert scaling["sequence"]["num1"] == {"min": 1.0, "max": 1.0}  # not matched
    assert defaults["num0"] == 2.5  # defaults stay in raw units (imputed first)


@pytest.mark.parametrize("bad", ["*", [1], None])
def test_log_scale_must_be_a_list_of_patterns(bad):
    with pytest.raises(ValueError, match="fit_transforms.log_scale"):
        fit_transforms([TRAIN], SCHEMA, {"log_scale": bad})
