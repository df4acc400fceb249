"""Hand-built orders produce exactly the expected tensors; the vectorised builder
matches the per-order reference on random orders."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.features.raw_builder import raw_frame, small_schema
from tests.features.reference import ReferencePreprocessor
from tsa_kedro.features import encoding
from tsa_kedro.features.contract import BUNDLE_KEYS
from tsa_kedro.features.tensors import (
    TensorParams,
    build_tensors,
    prepare_transforms,
)
from tsa_kedro.features.transforms import fit_transforms

SCHEMA = small_schema()
CAT_TO_INDEX = {"cat0": {"a": 1, "b": 2}, "cat1": {"x": 3, "y": 4}}
SCALING = {
    "sequence": {"num0": {"min": 0.0, "max": 10.0}, "num1": {"min": 5.0, "max": 5.0}},
    "dense": {"eng0": {"min": 0.0, "max": 2.0}, "eng1": {"min": -1.0, "max": 1.0}},
}
DEFAULTS = {
    "cat0": "b",
    "cat1": None,
    "num0": 5.0,
    "num1": 7.0,
    "eng0": 1.0,
    "eng1": 0.0,
}
NULL = "My Text String"


def _prepared():
    return prepare_transforms(CAT_TO_INDEX, SCALING, DEFAULTS, SCHEMA)


# History columns are staged together (requests) or one by one (chunks);
# the tests that build tensors run both ways.
STAGING = pytest.mark.parametrize("staging", ["together", "by_column"])


def route(staging: str) -> dict[str, bool]:
    """``build_tensors``' keyword for one way of staging the history columns."""
    return {"columns_together": staging == "together"}


def _past(ts, cat0, cat1, num0, num1):
    return {
        "order_id": "p",
        "ts": ts,
        "cat0": cat0,
        "cat1": cat1,
        "num0": num0,
        "num1": num1,
    }


HAND_ORDERS = [
    # A: both histories empty, unknown current category, missing numerics
    {
        "order_id": "A",
        "ts": 10_000,
        "label": 1,
        "values": {"cat0": "a", "cat1": "zzz", "num0": 2.0, "eng0": 2.0},
    },
    # B: a cid history longer than seq_len with null tokens and an unknown value
    {
        "order_id": "B",
        "ts": 10_000,
        "label": 0,
        "values": {"cat1": "y", "num0": 10.0, "num1": 5.0, "eng0": 0.0, "eng1": 1.0},
        "history": {
            "cid": [
                _past(1000, "a", "x", 1.0, 5.0),
                _past(2000, "b", "y", 2.0, 6.0),
                _past(9000, NULL, None, None, 7.0),
                _past(9990, "zzz", "y", 10.0, NULL),
            ],
            "ccid": [_past(9500, "b", "x", 0.0, 5.0)],
        },
    },
    # C: a cid history order later than the current order
    {
        "order_id": "C",
        "ts": 10_000,
        "label": 0,
        "history": {"cid": [_past(10_500, "a", "x", 1.0, 1.0)]},
    },
    # D: ragged cid history (two timestamps, one value)
    {
        "order_id": "D",
        "ts": 10_000,
        "label": 0,
        "history": {
            "cid": [_past(1, "a", "x", 1.0, 1.0), _past(2, "a", "x", 1.0, 1.0)]
        },
        "columns": {"cid_hist_cat0": "a"},
    },
    # E: unlabelled
    {"order_id": "E", "ts": 10_000, "label": None},
    # F: a null history timestamp
    {
        "order_id": "F",
        "ts": 10_000,
        "label": 1,
        "history": {"ccid": [_past(NULL, "a", "x", 1.0, 1.0)]},
    },
    # G: a value although the history is empty
    {"order_id": "G", "ts": 10_000, "label": 0, "columns": {"ccid_hist_num1": "3"}},
]


@STAGING
def test_hand_built_orders_give_exact_tensors(staging):
    raw = raw_frame(HAND_ORDERS, SCHEMA)
    bundle, stats = build_tensors(
        raw,
        SCHEMA,
        _prepared(),
        TensorParams(seq_len=3, delta_cap_seconds=500.0),
        **route(staging),
    )
    assert list(bundle) == list(BUNDLE_KEYS)
    expected = {
        "X_seq_cat_cid": [
            [[0, 0], [0, 0], [1, 0]],
            [[2, 0], [0, 4], [2, 4]],
        ],
        "X_seq_num_cid": [
            [[0, 0, 0, 0], [0, 0, 0, 0], [0.2, 2.0, 0, 1]],
            [[0.5, 2.0, 500, 1], [1.0, 2.0, 10, 1], [1.0, 0.0, 0, 1]],
        ],
        "X_seq_cat_ccid": [
            [[0, 0], [0, 0], [1, 0]],
            [[0, 0], [2, 3], [2, 4]],
        ],
        "X_seq_num_ccid": [
            [[0, 0, 0, 0], [0, 0, 0, 0], [0.2, 2.0, 0, 1]],
            [[0, 0, 0, 0], [0.0, 0.0, 500, 1], [1.0, 0.0, 0, 1]],
        ],
        "X_num": [[1.0, 0.5], [0.0, 1.0]],
        "Y": [1, 0],
    }
    dtypes = {"X_seq_cat": np.int32, "X_seq_num": np.float32, "X_num": np.float32}
    for key, value in expected.items():
        dtype = next((d for k, d in dtypes.items() if key.startswith(k)), np.int8)
        np.testing.assert_array_equal(bundle[key], np.array(value, dtype=dtype), key)
        assert bundle[key].dtype == dtype, key
    assert bundle["order_id"].tolist() == ["A", "B"]
    assert bundle["order_id"].dtype.kind == "U"
    assert stats["rows_in"] == 7
    assert stats["rows_out"] == 2
    assert {k: v for k, v in stats["dropped"].items() if v} == {
        "unlabelled": 1,
        "ragged_history_cid": 1,
        "ragged_history_ccid": 1,
        "missing_history_timestamp_ccid": 1,
        "negative_delta_cid": 1,
    }
    assert stats["positives"] == 1
    assert stats["unseen"] == {
        "cat0": {"unseen": 1, "present": 3},
        "cat1": {"unseen": 1, "present": 4},
    }
    delta = stats["delta"]
    assert (delta["count"], delta["min"], delta["max"], delta["capped"]) == (
        3,
        10.0,
        1000.0,
        1,
    )


@STAGING
def test_numbers_in_a_text_column_read_as_their_text(staging):
    # one non-text object column: the one-call conversion of requests gives way to
    # the column-by-column one, with the same result as text
    as_text = raw_frame(HAND_ORDERS, SCHEMA).astype({"cat1": object})
    as_text["cat1"] = [str(i % 3) for i in range(len(as_text))]
    as_numbers = as_text.copy()
    as_numbers["cat1"] = pd.array([i % 3 for i in range(len(as_text))], dtype=object)
    params = TensorParams(seq_len=3, delta_cap_seconds=500.0)
    expected, expected_stats = build_tensors(
        as_text, SCHEMA, _prepared(), params, **route(staging)
    )
    bundle, stats = build_tensors(
        as_numbers, SCHEMA, _prepared(), params, **route(staging)
    )
    for key, array in expected.items():
        np.testing.assert_array_equal(bundle[key], array, key)
    assert stats == expected_stats


def test_inference_mode_needs_no_label_and_keeps_unlabelled_rows():
    raw = raw_frame(HAND_ORDERS[:1] + HAND_ORDERS[4:5], SCHEMA).drop(
        columns=["is_fraud"]
    )
    bundle, stats = build_tensors(
        raw, SCHEMA, _prepared(), TensorParams(seq_len=3), labels=False
    )
    assert "Y" not in bundle
    assert bundle["order_id"].tolist() == ["A", "E"]
    assert stats["positives"] is None
    # E has no history and no values: defaults everywhere, cat1 default None -> 0
    np.testing.assert_array_equal(bundle["X_seq_cat_cid"][1, -1], [2, 0])


def test_single_order_equals_its_row_in_a_batch():
    raw = raw_frame(HAND_ORDERS, SCHEMA)
    params = TensorParams(seq_len=3, delta_cap_seconds=500.0)
    batch, _ = build_tensors(raw, SCHEMA, _prepared(), params)
    single, _ = build_tensors(raw.iloc[[1]], SCHEMA, _prepared(), params, labels=False)
    for key in single:
        np.testing.assert_array_equal(single[key][0], batch[key][1], key)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"is_fraud": 3}, "label column 'is_fraud'"),
        ({"cid_hist_num0": "1.5x"}, "cid_hist_num0"),
        ({"num1": "1.5x"}, "raw column 'num1' must be numeric"),
        ({"eng0": "abc"}, "raw column 'eng0' must be numeric"),
    ],
)
@STAGING
def test_bad_values_are_rejected_naming_the_column(change, message, staging):
    raw = raw_frame(
        [
            {
                "order_id": "A",
                "ts": 5,
                "label": 0,
                "history": {"cid": [_past(1, "a", "x", 1.0, 1.0)]},
            }
        ],
        SCHEMA,
    )
    raw = raw.astype({"is_fraud": "float64"})
    for column, value in change.items():
        raw[column] = value
    with pytest.raises(ValueError, match=message):
        build_tensors(
            raw, SCHEMA, _prepared(), TensorParams(seq_len=3), **route(staging)
        )


def test_missing_column_and_transform_entries_are_named():
    raw = raw_frame(HAND_ORDERS[:1], SCHEMA).drop(columns=["ccid_hist_ts"])
    with pytest.raises(KeyError, match="ccid_hist_ts"):
        build_tensors(raw, SCHEMA, _prepared(), TensorParams(seq_len=3))
    with pytest.raises(KeyError, match="cat1"):
        prepare_transforms({"cat0": {}}, SCALING, DEFAULTS, SCHEMA)
    with pytest.raises(ValueError, match="seq_len"):
        TensorParams.from_params({"seq_len": 0})


# --- property test: vectorised == per-order reference ---------------------------

CATEGORIES = st.sampled_from(["a", "b", "x", "y", "zzz", NULL, None])
NUMBERS = st.one_of(
    st.none(),
    st.sampled_from([NULL, float("nan"), float("inf")]),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
)


@st.composite
def past_order(draw, now: int):
    ts = draw(st.one_of(st.integers(now - 20_000, now + 50), st.just(NULL)))
    values = {f: draw(CATEGORIES) for f in SCHEMA.cat_features}
    values |= {f: draw(NUMBERS) for f in SCHEMA.num_features}
    return {
        "order_id": draw(st.text("abc123", min_size=1, max_size=3)),
        "ts": ts,
        **values,
    }


@st.composite
def order(draw, index: int):
    now = draw(st.integers(10_000, 30_000))
    current = {f: draw(CATEGORIES) for f in SCHEMA.cat_features}
    current |= {
        f: draw(st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False)))
        for f in (*SCHEMA.num_features, *SCHEMA.eng_features)
    }
    history = {
        id_type: draw(st.lists(past_order(now), max_size=7))
        for id_type in ("cid", "ccid")
    }
    result = {
        "order_id": f"o{index}",
        "ts": now,
        "label": draw(st.sampled_from([0, 1, 1, 0, None, -1])),
        "values": current,
        "history": history,
    }
    if draw(st.integers(0, 9)) == 0:  # sometimes a ragged column
        id_type = draw(st.sampled_from(["cid", "ccid"]))
        feature = draw(st.sampled_from(list(SCHEMA.seq_features)))
        result["columns"] = {f"{id_type}_hist_{feature}": "1~2~3"}
    return result


@st.composite
def orders(draw):
    size = draw(st.integers(0, 12))
    return [draw(order(i)) for i in range(size)]


@STAGING
@settings(max_examples=100, deadline=None)
@given(orders(), st.integers(1, 6), st.booleans())
def test_vectorised_equals_reference(staging, orders_, seq_len, labels):
    raw = raw_frame(orders_, SCHEMA)
    cap = 5000.0
    bundle, stats = build_tensors(
        raw,
        SCHEMA,
        _prepared(),
        TensorParams(seq_len, cap),
        labels=labels,
        **route(staging),
    )
    reference = ReferencePreprocessor(
        SCHEMA, CAT_TO_INDEX, SCALING, DEFAULTS, seq_len=seq_len, delta_cap=cap
    )
    expected, dropped = reference.tensors(raw, labels=labels)
    assert set(bundle) == set(expected)
    for key, array in expected.items():
        assert bundle[key].dtype.kind == array.dtype.kind, key
        np.testing.assert_array_equal(bundle[key], array, key)
    assert {k: v for k, v in stats["dropped"].items() if v} == dropped


def test_arrow_backed_columns_give_the_same_tensors():
    raw = raw_frame(HAND_ORDERS, SCHEMA)
    arrow = pa.Table.from_pandas(raw, preserve_index=False).to_pandas(
        types_mapper=pd.ArrowDtype
    )
    params = TensorParams(seq_len=3, delta_cap_seconds=500.0)
    expected, expected_stats = build_tensors(raw, SCHEMA, _prepared(), params)
    bundle, stats = build_tensors(arrow, SCHEMA, _prepared(), params)
    for key, array in expected.items():
        assert bundle[key].dtype == array.dtype, key
        np.testing.assert_array_equal(bundle[key], array, key)
    assert stats == expected_stats
    assert fit_transforms([arrow], SCHEMA, {}) == fit_transforms([raw], SCHEMA, {})


def test_arrow_backed_numbers_with_nulls_and_integers_read_from_their_buffers():
    raw = raw_frame(HAND_ORDERS, SCHEMA)
    raw.loc[0, "num0"] = np.nan  # a null in Arrow, NaN in numpy: imputed alike
    raw["eng1"] = np.arange(len(raw), dtype=np.int64)  # integers read as float64
    arrow = pa.Table.from_pandas(raw, preserve_index=False).to_pandas(
        types_mapper=pd.ArrowDtype
    )
    assert arrow["num0"].isna().iloc[0]
    assert pa.types.is_integer(arrow["eng1"].dtype.pyarrow_dtype)
    params = TensorParams(seq_len=3, delta_cap_seconds=500.0)
    expected, expected_stats = build_tensors(raw, SCHEMA, _prepared(), params)
    bundle, stats = build_tensors(arrow, SCHEMA, _prepared(), params)
    for key, array in expected.items():
        assert bundle[key].tobytes() == array.tobytes(), key
    assert stats == expected_stats

    arrow["eng0"] = pd.array(["abc"] * len(arrow), dtype=pd.ArrowDtype(pa.string()))
    with pytest.raises(ValueError, match="raw column 'eng0' must be numeric"):
        build_tensors(arrow, SCHEMA, _prepared(), params)


# --- signed-log scaling -------------------------------------------------------------
LOG_SCALING = {
    "sequence": {
        "num0": {"min": 0.0, "max": math.log1p(100.0), "transform": "signed_log1p"},
        "num1": {"min": 5.0, "max": 5.0},
    },
    "dense": {
        "eng0": {"min": 0.0, "max": 2.0},
        "eng1": {
            "min": -math.log1p(1.0),
            "max": math.log1p(1.0),
            "transform": "signed_log1p",
        },
    },
}


def test_signed_log_entries_are_logged_then_min_max_scaled():
    raw = raw_frame(
        [
            {
                "order_id": "L",
                "ts": 1_000,
                "label": 0,
                "values": {"num0": 99.0, "eng0": 1.0, "eng1": -1.0},
                "history": {"cid": [_past(400, "a", "x", 9.0, 5.0)]},
            }
        ],
        SCHEMA,
    )
    prepared = prepare_transforms(CAT_TO_INDEX, LOG_SCALING, DEFAULTS, SCHEMA)
    bundle, _ = build_tensors(raw, SCHEMA, prepared, TensorParams(seq_len=2))
    span = math.log1p(100.0)
    num = bundle["X_seq_num_cid"][0]  # rows: the past order, then the current one
    np.testing.assert_allclose(num[0, 0], math.log1p(9.0) / span, rtol=1e-6)
    np.testing.assert_allclose(num[1, 0], math.log1p(99.0) / span, rtol=1e-6)
    assert num[0, 1] == 0.0  # plain min-max entry of a constant column
    # eng0 plain (1 / 2), eng1 on the log axis: -log1p(1) is its minimum -> 0
    np.testing.assert_allclose(bundle["X_num"][0], [0.5, 0.0], atol=1e-7)


def test_unknown_scaling_transform_is_named():
    bad = {**LOG_SCALING, "dense": {**LOG_SCALING["dense"]}}
    bad["dense"]["eng0"] = {"min": 0.0, "max": 1.0, "transform": "sqrt"}
    with pytest.raises(ValueError, match=r"'eng0'.*unknown transform 'sqrt'"):
        prepare_transforms(CAT_TO_INDEX, bad, DEFAULTS, SCHEMA)


@settings(max_examples=60, deadline=None)
@given(orders(), st.integers(1, 6))
def test_vectorised_equals_reference_with_log_scaling(orders_, seq_len):
    raw = raw_frame(orders_, SCHEMA)
    prepared = prepare_transforms(CAT_TO_INDEX, LOG_SCALING, DEFAULTS, SCHEMA)
    bundle, _ = build_tensors(raw, SCHEMA, prepared, TensorParams(seq_len, 5000.0))
    reference = ReferencePreprocessor(
        SCHEMA, CAT_TO_INDEX, LOG_SCALING, DEFAULTS, seq_len=seq_len, delta_cap=5000.0
    )
    expected, _ = reference.tensors(raw, labels=True)
    for key, array in expected.items():
        if array.dtype.kind == "f":
            np.testing.assert_allclose(bundle[key], array, rtol=1e-6, atol=1e-7)
        else:
            np.testing.assert_array_equal(bundle[key], array, key)


def test_combined_lookup_equals_each_features_own_lookup():
    """The one-index lookup of requests gives every token the code and status
    that its feature's own lookup gives: known values (one holding the key
    separator), a value known to the other feature only, unseen values, null
    tokens (one of them a known value of a feature) and null values."""
    cat_to_index = {
        "cat0": {"a": 1, "b": 2, "1\x1fx": 3, NULL: 4},
        "cat1": {"x": 5, "a": 6},
    }
    prepared = prepare_transforms(cat_to_index, SCALING, DEFAULTS, SCHEMA)
    values = ["a", "b", "x", "1\x1fx", "zzz", NULL, "", None, *SCHEMA.null_tokens]
    tokens = pa.array(values * 2, pa.string())
    feature = np.repeat([0, 1], len(values))
    codes, status = prepared.combined.encode(tokens, feature)
    for i, name in enumerate(prepared.categorical):
        encoder = prepared.categorical[name]
        position = encoding.lookup_positions(pa.array(values, pa.string()), encoder)
        np.testing.assert_array_equal(codes[feature == i], encoder.codes[position])
        np.testing.assert_array_equal(status[feature == i], encoder.status[position])
    assert set(status) == {encoding.PRESENT, encoding.MISSING, encoding.UNSEEN}
