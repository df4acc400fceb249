"""Numeric-code categoricals: one spelling per value, current order and histories."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import yaml

from tsa_kedro.features.numeric_codes import (
    canonical_code,
    canonicalise_columns,
    canonicalise_histories,
)
from tsa_kedro.features.raw_orders import normalize_raw_orders
from tsa_kedro.features.transforms import fit_transforms
from tsa_kedro.schema import ID_TYPES, RawSchema, SchemaError
from tsa_kedro.synthetic import SyntheticConfig, generate_orders

PROJECT = Path(__file__).resolve().parents[2]
SAMPLE_ENV = PROJECT / "conf" / "production_sample" / "parameters.yml"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3", "3"),
        ("3.0", "3"),
        (" 3 ", "3"),
        ("+3", "3"),
        ("003", "3"),
        ("3e0", "3"),
        ("3.000", "3"),
        ("-0", "0"),
        ("-1.0", "-1"),
        ("2.50", "2.5"),
        ("12345678901234567890.0", "12345678901234567890"),  # beyond float digits
        ("", ""),
        ("My Text String", "My Text String"),
        ("nan", "nan"),
        ("inf", "inf"),
        ("m00042", "m00042"),
        ("1e400", "1e400"),  # no code: not spelled out
    ],
)
def test_canonical_code(text: str, expected: str) -> None:
    assert canonical_code(text) == expected


def test_history_tokens_are_rewritten_one_by_one_and_counted() -> None:
    histories = pa.array(["1~1.0~ 2 ", "", "x~3.0~", "My Text String~4.00"])
    rewritten, counts = canonicalise_histories(histories, "~")
    assert rewritten.to_pylist() == ["1~1~2", "", "x~3~", "My Text String~4"]
    assert counts.tolist() == [2, 0, 1, 1]


def test_columns_in_small_batches_give_the_same_result(monkeypatch) -> None:
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 50, (6, 40))
    columns = [
        np.asarray([f"{c}.0" if c % 2 else str(c) for c in row], dtype=object)
        for row in codes
    ]
    columns[2][5] = None
    whole, whole_counts = canonicalise_columns(columns, None)
    monkeypatch.setattr("tsa_kedro.features.numeric_codes.BATCH_CELLS", 50)
    batched, batched_counts = canonicalise_columns(columns, None)
    assert whole_counts == batched_counts
    assert sum(whole_counts) == int((codes % 2 == 1).sum()) - int(codes[2, 5] % 2)
    for a, b in zip(whole, batched, strict=True):
        assert a.tolist() == b.tolist()
    assert whole[2][5] is None
    assert whole[0].tolist() == [str(c) for c in codes[0]]


def test_schema_rejects_a_numeric_code_feature_that_is_not_categorical() -> None:
    params = _sample_params()["raw_schema"]
    with pytest.raises(SchemaError, match=r"numeric_cat_features names \['amount'\]"):
        RawSchema.from_params({**params, "numeric_cat_features": ["amount"]})


def _sample_params() -> dict:
    return yaml.safe_load(SAMPLE_ENV.read_text())


def _production_format(
    output_format: str, seed: int = 5
) -> tuple[pd.DataFrame, RawSchema]:
    params = _sample_params()
    schema = RawSchema.from_params(params["raw_schema"])
    profile = params["synthetic_profiles"][params["synthetic_profile"]]
    config = SyntheticConfig.from_params(
        {
            **profile,
            "seed": seed,
            "end_date": "2024-02-10",
            "n_customers": 80,
            "output_format": output_format,
        }
    )
    return generate_orders(config, schema).orders, schema


@pytest.mark.parametrize("output_format", ["text", "typed"])
def test_normalize_writes_every_numeric_code_one_way(output_format: str) -> None:
    raw, schema = _production_format(output_format)
    features = schema.numeric_cat_features
    if output_format == "typed":  # a float column of codes: 3.0 on every row
        assert all(raw[f].dtype == np.float64 for f in features)
    else:
        spelled = raw[features[0]].str.endswith(".0").mean()
        assert 0.3 < spelled < 0.7, "the export writes codes both ways"
    canonicalised: Counter = Counter()
    out = normalize_raw_orders(
        raw, schema, "export", ragged_tolerance=1.0, canonicalised=canonicalised
    )
    for feature in features:
        current = out[feature].dropna()
        assert current.str.fullmatch(r"[0-9]+").all(), feature
        for id_type in ID_TYPES:
            tokens = out[schema.history_column(id_type, feature)].str.split("~")
            flat = pd.Series([t for row in tokens for t in row])
            present = flat[~flat.isin(schema.null_tokens)]
            assert present.str.fullmatch(r"[0-9]+").all(), (feature, id_type)
        assert canonicalised[feature] > 0
    # features that are not numeric codes are left as exported
    other = [c for c in schema.cat_features if c not in features]
    assert canonicalised.keys() == set(features)
    text = normalize_raw_orders(
        raw,
        RawSchema.from_params({**schema.to_params(), "numeric_cat_features": []}),
        "export",
        ragged_tolerance=1.0,
    )
    for column in other:
        pd.testing.assert_series_equal(out[column], text[column])


def test_vocabulary_has_one_row_per_code_and_rows_for_history_only_values() -> None:
    raw, schema = _production_format("text")
    out = normalize_raw_orders(raw, schema, "export", ragged_tolerance=1.0)
    # train on the later orders: their histories reach back before the window
    out = out.iloc[len(out) * 3 // 4 :].reset_index(drop=True)
    cat_to_index, _, _ = fit_transforms([out], schema, {"min_frequency": 1})
    for feature in schema.numeric_cat_features:
        vocab = cat_to_index[feature]
        assert len({canonical_code(v) for v in vocab}) == len(vocab), feature
    # a code seen only in the histories of train still gets its own row, after
    # the current-order values
    merchants = cat_to_index["merchant_id"]
    current = set(out["merchant_id"].dropna())
    in_history = {
        t
        for id_type in ID_TYPES
        for row in out[schema.history_column(id_type, "merchant_id")]
        for t in row.split("~")
        if t not in schema.null_tokens
    }
    only_history = in_history - current
    assert only_history, "the sample needs merchants seen only in histories"
    assert only_history <= set(merchants)
    assert max(merchants[v] for v in current) < min(merchants[v] for v in only_history)


def test_history_only_values_obey_min_frequency() -> None:
    raw, schema = _production_format("text")
    out = normalize_raw_orders(raw, schema, "export", ragged_tolerance=1.0)
    out.loc[:, "ccid_hist_card_type"] = ""
    out.loc[0, "cid_hist_card_type"] = "prepaid_x~prepaid_x~rare_y"
    for min_frequency, expected in ((1, {"prepaid_x", "rare_y"}), (2, {"prepaid_x"})):
        cat_to_index, _, _ = fit_transforms(
            [out], schema, {"min_frequency": min_frequency}
        )
        added = set(cat_to_index["card_type"]) - set(out["card_type"].dropna())
        assert added == expected
