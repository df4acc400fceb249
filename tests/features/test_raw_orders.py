import numpy as np
import pandas as pd
import pytest

from tests.raw_data import base_schema, tiny_orders
from tsa_kedro.features import raw_orders
from tsa_kedro.features.raw_orders import (
    RawDataError,
    history_lengths,
    normalize_raw_orders,
    ragged_rows,
)

SOURCE = "exports/orders_2024-01.tsv.gz"


ROUTE = {"columns_together": False}


@pytest.fixture(autouse=True, params=["together", "by_column"])
def text_conversion(request, monkeypatch):
    """Every test twice: text columns converted in one pass over all of them (as for
    requests), and column by column (as for chunks)."""
    monkeypatch.setitem(ROUTE, "columns_together", request.param == "together")
    return request.param


@pytest.fixture
def raw():
    """A month of raw orders, every column as text (a fresh copy per test)."""
    orders = tiny_orders()
    return orders[orders["order_ts"].astype(int) < 1706745600].reset_index(drop=True)


def normalize(df, **kwargs):
    return normalize_raw_orders(df, base_schema(), SOURCE, **ROUTE, **kwargs)


def test_types_follow_the_contract(raw):
    out = normalize(raw)
    schema = base_schema()
    assert list(out.columns) == schema.all_columns()
    assert out[schema.timestamp].dtype == np.int64
    assert str(out[schema.label].dtype) == "Int8"
    assert set(out[schema.label].dropna().unique()) == {0, 1}
    for column in (*schema.num_features, *schema.eng_features):
        assert out[column].dtype == np.float64, column
    for column in (schema.order_id, "cid", "payment_method", "cid_hist_amount"):
        assert out[column].dtype == object
    # null tokens: NaN for numbers, None for categoricals, kept inside histories
    amount_tokens = raw["amount"].isin(schema.null_tokens).to_numpy()
    assert amount_tokens.any()
    assert out["amount"].isna().to_numpy().tolist() == amount_tokens.tolist()
    payment_tokens = raw["payment_method"].isin(schema.null_tokens).to_numpy()
    assert out["payment_method"].isna().to_numpy().tolist() == payment_tokens.tolist()
    assert out["cid_hist_payment_method"].str.contains("My Text String").any()


def test_extra_columns_are_dropped_and_input_is_untouched(raw):
    before = raw.copy()
    out = normalize(raw.assign(export_batch="b1"))
    assert "export_batch" not in out.columns
    pd.testing.assert_frame_equal(raw, before)


def test_missing_columns_are_named_with_the_source(raw):
    with pytest.raises(RawDataError) as error:
        normalize(raw.drop(columns=["ccid_hist_ts", "amount"]))
    message = str(error.value)
    assert SOURCE in message and "ccid_hist_ts" in message and "amount" in message


def test_unparseable_timestamps_name_column_and_orders(raw):
    raw.loc[3, "order_ts"] = "2024-01-01 10:00"
    raw.loc[7, "order_ts"] = ""
    with pytest.raises(RawDataError) as error:
        normalize(raw)
    message = str(error.value)
    assert SOURCE in message and "order_ts" in message and "2 timestamp" in message
    assert raw.loc[3, "order_id"] in message and raw.loc[7, "order_id"] in message


def test_typed_and_datetime_timestamps_are_epoch_seconds(raw):
    expected = normalize(raw)["order_ts"]
    as_float = normalize(raw.assign(order_ts=raw["order_ts"].astype(float) + 0.4))
    pd.testing.assert_series_equal(as_float["order_ts"], expected)
    as_datetime = raw.assign(
        order_ts=pd.to_datetime(raw["order_ts"].astype(int), unit="s")
    )
    pd.testing.assert_series_equal(normalize(as_datetime)["order_ts"], expected)
    in_new_york = as_datetime.assign(
        order_ts=as_datetime["order_ts"]
        .dt.tz_localize("UTC")
        .dt.tz_convert("America/New_York")
    )
    pd.testing.assert_series_equal(normalize(in_new_york)["order_ts"], expected)


@pytest.mark.parametrize("bad", ["2", "yes", "0.5"])
def test_labels_outside_the_encoding_are_rejected(raw, bad):
    raw.loc[4, "is_fraud"] = bad
    with pytest.raises(RawDataError) as error:
        normalize(raw)
    assert "is_fraud" in str(error.value) and raw.loc[4, "order_id"] in str(error.value)
    assert SOURCE in str(error.value)


def test_label_encodings_map_to_zero_one_or_null(raw):
    raw.loc[0:5, "is_fraud"] = ["1", "0", "-1", "", "My Text String", " 1.0 "]
    labels = normalize(raw)["is_fraud"].iloc[:6].tolist()
    assert labels == [1, 0, pd.NA, pd.NA, pd.NA, 1]
    numeric = raw.assign(is_fraud=[1.0, -1.0, np.nan, *[0.0] * (len(raw) - 3)])
    assert normalize(numeric)["is_fraud"].iloc[:3].tolist() == [1, pd.NA, pd.NA]
    with pytest.raises(RawDataError, match="is_fraud"):
        normalize(raw.assign(is_fraud=[3] * len(raw)))


@pytest.mark.parametrize("bad", ["12,50", "abc", "inf"])
def test_unparseable_numbers_name_the_column(raw, bad):
    raw.loc[2, "cid_amount_sum_24h"] = bad
    with pytest.raises(RawDataError) as error:
        normalize(raw)
    message = str(error.value)
    assert "cid_amount_sum_24h" in message and raw.loc[2, "order_id"] in message
    assert repr(bad) in message


def test_numbers_accept_nan_spellings_and_typed_columns(raw):
    raw.loc[2, "amount"] = "NaN"
    raw.loc[3, "amount"] = " 12.5 "
    out = normalize(raw)
    assert np.isnan(out.loc[2, "amount"]) and out.loc[3, "amount"] == 12.5
    typed = normalize(raw.assign(item_count=np.arange(len(raw))))
    assert typed["item_count"].tolist() == list(map(float, range(len(raw))))


def _typed_numbers(raw):
    """``raw`` with every numerical column typed, one of them as nullable Int64."""
    schema = base_schema()
    columns = (*schema.num_features, *schema.eng_features)
    typed = raw.copy()
    for column in columns:
        numbers = pd.to_numeric(raw[column], errors="coerce")
        typed[column] = numbers.astype(np.float64)
    typed[columns[0]] = np.arange(len(raw), dtype=np.int64)
    typed[columns[1]] = pd.array([None, *range(len(raw) - 1)], dtype="Int64")
    return typed, columns


def test_typed_numerical_columns_convert_in_one_block_with_the_same_values(raw):
    typed, columns = _typed_numbers(raw)
    out = normalize(typed)
    assert list(out.columns) == base_schema().all_columns()
    for column in columns:
        expected = pd.to_numeric(typed[column]).to_numpy(np.float64, na_value=np.nan)
        np.testing.assert_array_equal(out[column].to_numpy(), expected, column)
        assert out[column].dtype == np.float64
    # the same orders sent as text give the same numbers
    as_text = normalize(typed.astype({c: object for c in columns}))
    pd.testing.assert_frame_equal(out, as_text)


def test_infinite_value_in_a_typed_column_names_the_column(raw):
    typed, columns = _typed_numbers(raw)
    typed.loc[4, columns[-1]] = np.inf
    with pytest.raises(RawDataError) as error:
        normalize(typed)
    message = str(error.value)
    assert columns[-1] in message and raw.loc[4, "order_id"] in message
    assert SOURCE in message


def test_missing_order_ids_are_rejected(raw):
    raw.loc[5, "order_id"] = None
    with pytest.raises(RawDataError, match=r"order_id.*rows \[5\]"):
        normalize(raw)


def test_numeric_categoricals_become_integer_text(raw):
    out = normalize(raw.assign(channel=np.where(np.arange(len(raw)) % 2, 3.0, np.nan)))
    assert set(out["channel"].dropna()) == {"3"}
    assert out["channel"].isna().sum() == (len(raw) + 1) // 2


def test_ragged_histories_raise_above_the_tolerance_and_pass_below(raw):
    schema = base_schema()
    has_history = np.flatnonzero(history_lengths(raw["cid_hist_ts"], "~") >= 2)
    rows = has_history[:3]
    raw.loc[rows, "cid_hist_amount"] = (
        raw.loc[rows, "cid_hist_amount"].str.rsplit("~", n=1).str[0]
    )
    with pytest.raises(RawDataError) as error:
        normalize(raw)
    message = str(error.value)
    assert "cid_hist_amount" in message and "ragged_tolerance" in message
    assert raw.loc[rows[0], "order_id"] in message and SOURCE in message
    out = normalize(raw, ragged_tolerance=0.05)
    flagged = ragged_rows(out, schema, "cid")
    assert np.flatnonzero(flagged.to_numpy().any(axis=1)).tolist() == rows.tolist()
    assert flagged["cid_hist_amount"].sum() == 3


def test_single_empty_token_is_not_ragged(raw):
    schema = base_schema()
    one = np.flatnonzero(history_lengths(raw["ccid_hist_ts"], "~") == 1)[:2]
    raw.loc[one, "ccid_hist_amount"] = ""
    raw.loc[one, "ccid_hist_terminal_id"] = None
    out = normalize(raw, ragged_tolerance=0.0)
    assert out.loc[one, "ccid_hist_terminal_id"].tolist() == ["", ""]
    assert not ragged_rows(out, schema, "ccid").to_numpy().any()


def test_all_text_csv_export_reads_back_identically(raw, tmp_path):
    path = tmp_path / "orders.tsv.gz"
    raw.to_csv(path, sep="\t", index=False, compression="gzip")
    back = pd.read_csv(
        path,
        sep="\t",
        dtype=str,
        keep_default_na=False,
        na_filter=False,
        compression="gzip",
    )
    pd.testing.assert_frame_equal(normalize(back), normalize(raw))


@pytest.mark.parametrize("rows", [0, 1, 3])
def test_output_frame_assembly_equals_pandas_construction(rows):
    """Columns of several dtypes, interleaved: the same frame as pandas builds, with
    one C-contiguous block per dtype."""
    g = np.random.default_rng(rows)
    columns = {
        "id": np.array([f"o{i}" for i in range(rows)], dtype=object),
        "ts": np.arange(rows, dtype=np.int64),
        "label": pd.array([1, None, 0][:rows], dtype="Int8"),
        "cat": np.array(["a", None, "b"][:rows], dtype=object),
        "x": g.random(rows),
        "history": np.array(["1;2", "", "3"][:rows], dtype=object),
        "y": np.full(rows, np.nan),
    }
    frame = raw_orders._assemble(columns, rows)
    pd.testing.assert_frame_equal(frame, pd.DataFrame(columns))
    assert len(frame._mgr.blocks) == 4
    assert all(
        block.values.flags["C_CONTIGUOUS"]
        for block in frame._mgr.blocks
        if isinstance(block.values, np.ndarray)
    )
