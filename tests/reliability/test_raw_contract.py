"""Bad exports are refused at the door (ingest, and requests through the same gate),
naming the column and example order ids, and preprocessing neither drops a large
share of a split silently nor lets an extreme value through unclipped."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.raw_data import as_partitions, base_schema, ingest_params, tiny_orders
from tsa_kedro.features.raw_orders import RawDataError, normalize_raw_orders
from tsa_kedro.features.tensors import TensorParams, build_tensors, prepare_transforms
from tsa_kedro.features.transforms import fit_transforms
from tsa_kedro.pipelines.ingest.nodes import download_split
from tsa_kedro.pipelines.preprocess.nodes import (
    DropShareError,
    build_tensor_chunks,
    check_drop_shares,
    drop_limits,
    merge_tensor_chunks,
    report_preprocessing,
)

SCHEMA = base_schema()


def _orders(rows: int = 40) -> pd.DataFrame:
    orders = tiny_orders()
    start = int(np.flatnonzero(orders[SCHEMA.timestamp].astype(int) > 1.7e9)[0])
    return orders.iloc[start + 500 : start + 500 + rows].reset_index(drop=True).copy()


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("order_ts", "-5", "before 2000-01-01"),
        ("order_ts", "0", "before 2000-01-01"),
        ("order_ts", "4102444800", "more than a day in the future"),  # 2100-01-01
        ("order_ts", "99999999999", "more than a day in the future"),  # year 5138
        ("cid", "", "column cid: 1 id\\(s\\) are missing"),
        ("cid", "My Text String", "column cid: 1 id\\(s\\) are missing"),
        ("ccid", None, "column ccid: 1 id\\(s\\) are missing"),
        ("amount", "1e308", "column amount: 1 value\\(s\\) exceed 1e\\+15"),
        ("cid_orders_1h", "-2e16", "column cid_orders_1h: 1 value\\(s\\) exceed"),
    ],
)
def test_impossible_values_are_refused_with_column_and_order_id(
    column: str, value: str | None, message: str
) -> None:
    raw = _orders()
    raw.loc[3, column] = value
    order_id = raw.loc[3, SCHEMA.order_id]
    with pytest.raises(RawDataError, match=message) as error:
        normalize_raw_orders(raw, SCHEMA, "orders.tsv.gz")
    assert "orders.tsv.gz" in str(error.value)
    assert order_id in str(error.value)


def test_the_earliest_order_date_is_configurable() -> None:
    raw = _orders()
    params = {**SCHEMA.to_params(), "earliest_order_date": "2030-01-01"}
    with pytest.raises(RawDataError, match="before 2030-01-01"):
        normalize_raw_orders(raw, type(SCHEMA).from_params(params), "export")


@pytest.mark.parametrize(
    ("column", "history", "message"),
    [
        ("cid_hist_amount", "12.5,80", "are the histories joined by"),
        ("ccid_hist_amount", "12.5~abc", "neither numbers nor null tokens"),
        ("cid_hist_ts", "1709252483~yesterday", "neither numbers nor null tokens"),
    ],
)
def test_bad_history_tokens_are_refused_at_the_door(
    column: str, history: str, message: str
) -> None:
    raw = _orders()
    row = int(np.flatnonzero(raw[column].str.count("~") == 1)[0])
    raw.loc[row, column] = history
    with pytest.raises(RawDataError, match=message) as error:
        normalize_raw_orders(raw, SCHEMA, "export", ragged_tolerance=1.0)
    assert f"column {column}" in str(error.value)
    assert raw.loc[row, SCHEMA.order_id] in str(error.value)


def test_null_tokens_and_empty_histories_pass_the_history_check() -> None:
    raw = _orders()
    raw.loc[0, "cid_hist_amount"] = ""
    raw.loc[1, "ccid_hist_amount"] = "~".join(
        ["My Text String"] * (raw.loc[1, "ccid_hist_ts"].count("~") + 1)
    )
    out = normalize_raw_orders(raw, SCHEMA, "export", ragged_tolerance=1.0)
    assert len(out) == len(raw)


def test_ingest_refuses_impossible_timestamps_instead_of_dropping_them() -> None:
    orders = tiny_orders().copy()
    orders.loc[7, SCHEMA.timestamp] = "-5"
    with pytest.raises(RawDataError, match="before 2000-01-01"):
        download_split(
            "vali", as_partitions(orders), SCHEMA.to_params(), ingest_params()
        )


def test_extreme_values_are_clipped_and_counted() -> None:
    raw = normalize_raw_orders(_orders(200), SCHEMA, "export", ragged_tolerance=1.0)
    transforms = prepare_transforms(
        *fit_transforms([raw], SCHEMA, {"min_frequency": 1}), SCHEMA
    )
    request = raw.copy()
    request.loc[0, "amount"] = 1e14  # below max_abs_number, far above training
    request.loc[1, "cid_orders_1h"] = -1e9
    bundle, stats = build_tensors(
        request, SCHEMA, transforms, TensorParams(seq_len=8, scaled_clip=2.0)
    )
    amount = SCHEMA.num_features.index("amount")
    scaled = bundle["X_seq_num_cid"][:, :, : len(SCHEMA.num_features)]
    assert scaled.max() <= 3.0 and scaled.min() >= -2.0
    assert bundle["X_seq_num_cid"][0, -1, amount] == 3.0
    assert bundle["X_num"].min() >= -2.0
    assert stats["clipped"]["amount"] >= 2  # the current order in both sequences
    assert stats["clipped"]["cid_orders_1h"] == 1
    assert np.isfinite(bundle["X_num"]).all()


@pytest.mark.parametrize("clip", [0, -1, "wide", True])
def test_scaled_clip_parameter_is_validated(clip) -> None:
    with pytest.raises(ValueError, match="preprocess.scaled_clip must be a number > 0"):
        TensorParams.from_params({"seq_len": 4, "scaled_clip": clip})


def test_a_split_losing_most_rows_fails_naming_the_reason() -> None:
    limits = drop_limits({"max_drop_share": {"negative_delta": 0.01}})
    report = {
        "rows_in": 11253,
        "dropped": {"negative_delta_cid": 11126, "unlabelled": 100},
    }
    with pytest.raises(DropShareError) as error:
        check_drop_shares(report, limits)
    message = str(error.value)
    assert "negative_delta_cid: 11126 of 11253 rows (98.87%)" in message
    assert "preprocess.max_drop_share.negative_delta" in message
    assert "unlabelled" not in message  # no limit configured: 100 %
    check_drop_shares(
        {"rows_in": 11253, "dropped": {"negative_delta_cid": 100}}, limits
    )


@pytest.mark.parametrize(
    ("shares", "message"),
    [
        ({"negative_deltas": 0.1}, "unknown reasons \\['negative_deltas'\\]"),
        ({"unlabelled": 1.5}, "max_drop_share.unlabelled must be a share"),
        ({"unlabelled": "x"}, "max_drop_share.unlabelled must be a share"),
    ],
)
def test_drop_limits_are_validated(shares: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        drop_limits({"max_drop_share": shares})


def test_the_merge_refuses_a_split_that_lost_too_many_rows() -> None:
    """Every cid history of the split holds an order after the current one:
    preprocessing drops almost every row, the report says so, the merge refuses."""
    orders = normalize_raw_orders(_orders(300), SCHEMA, "export", ragged_tolerance=1.0)
    fitted = fit_transforms([orders], SCHEMA, {"min_frequency": 1})
    future = orders.copy()
    has_history = future["cid_hist_ts"] != ""
    later = (future[SCHEMA.timestamp] + 60).astype(str)
    future.loc[has_history, "cid_hist_ts"] = [
        "~".join([*ts.split("~")[:-1], stamp])
        for ts, stamp in zip(
            future.loc[has_history, "cid_hist_ts"], later[has_history], strict=True
        )
    ]
    preprocess = {
        "seq_len": 4,
        "workers": 1,
        "max_drop_share": {"negative_delta": 0.01},
    }
    chunks = build_tensor_chunks(
        raw_chunks={"part-00000": future},
        cat_to_index=fitted[0],
        scaling=fitted[1],
        default_values=fitted[2],
        raw_schema=SCHEMA.to_params(),
        preprocess=preprocess,
        downsample={"target_positive_rate": None},
    )
    bundles = {name: load() for name, load in chunks.items()}
    report = report_preprocessing(bundles)
    assert report["dropped"]["negative_delta_cid"] == int(has_history.sum()) > 200
    with pytest.raises(DropShareError, match="negative_delta_cid: .* rows"):
        merge_tensor_chunks(bundles, fitted[0], SCHEMA.to_params(), preprocess)
    relaxed = {**preprocess, "max_drop_share": {"negative_delta": 1.0}}
    merged = merge_tensor_chunks(bundles, fitted[0], SCHEMA.to_params(), relaxed)
    assert len(merged["Y"]) == report["rows_out"]
