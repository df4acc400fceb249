import io

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from tests.raw_data import CONF, base_schema, tiny_config
from tsa_kedro.features.raw_orders import (
    history_lengths,
    normalize_raw_orders,
    ragged_rows,
)
from tsa_kedro.schema import ID_TYPES
from tsa_kedro.synthetic import (
    FRAUD_PATTERNS,
    SyntheticConfig,
    SyntheticConfigError,
    generate_orders,
    partition_orders,
    production_width_schema,
)
from tsa_kedro.synthetic.aggregates import is_known_aggregate

CONFIG = SyntheticConfig(n_customers=1500)


@pytest.fixture(scope="module")
def generated():
    schema = base_schema()
    result = generate_orders(CONFIG, schema)
    return result, normalize_raw_orders(result.orders, schema, "generated")


def test_columns_are_the_contract_and_all_text(generated):
    result, _ = generated
    schema = base_schema()
    assert list(result.orders.columns) == schema.all_columns()
    assert all(result.orders[c].map(type).eq(str).all() for c in result.orders.columns)
    ts = pd.to_numeric(result.orders[schema.timestamp])
    assert ts.is_monotonic_increasing
    assert ts.min() >= CONFIG.start_epoch
    assert ts.max() < CONFIG.start_epoch + CONFIG.n_days * 86400
    assert result.orders[schema.order_id].is_unique


def test_fraud_rate_and_pattern_mix_follow_the_config(generated):
    result, orders = generated
    planted = pd.Series(result.pattern).value_counts(normalize=True)
    assert planted.drop("legit").sum() == pytest.approx(CONFIG.fraud_rate, rel=0.2)
    for pattern, share in CONFIG.fraud_shares().items():
        assert planted[pattern] == pytest.approx(share, rel=0.35), pattern
    labels = orders[base_schema().label]
    fraud = result.pattern != "legit"
    labelled = labels.notna().to_numpy()
    assert (labels[labelled] == 1).to_numpy().tolist() == fraud[labelled].tolist()
    assert (~labelled).mean() == pytest.approx(CONFIG.unlabelled_rate, rel=0.3)
    raw = result.orders[base_schema().label]
    assert (raw == "-1").sum() > 0 and (raw == "").sum() > 0


def test_every_month_has_hundreds_of_positives(generated):
    result, orders = generated
    schema = base_schema()
    month = pd.to_datetime(orders[schema.timestamp], unit="s").dt.month
    positives = (orders[schema.label] == 1).groupby(month).sum()
    assert len(positives) == 5
    assert positives.min() >= 100  # 1500 customers; the 3000 default doubles it


def test_planted_patterns_show_in_history_features(generated):
    result, orders = generated
    pattern = pd.Series(result.pattern)
    legit = pattern == "legit"

    def share(column, condition, rows):
        return condition(orders.loc[rows.to_numpy(), column]).mean()

    tests = pattern == "card_testing"
    burst = lambda s: s >= 3  # noqa: E731
    assert share("ccid_small_orders_1h", burst, tests) > 0.6
    assert share("ccid_small_orders_1h", burst, legit) < 0.02

    velocity = pattern == "velocity"
    assert share("cid_orders_1h", burst, velocity) > 0.6
    assert share("cid_orders_1h", burst, legit) < 0.02

    # A taken-over account spends amount_multiplier times its usual amount.
    usual = orders["amount"][legit.to_numpy()].groupby(orders["cid"]).median()
    ratio = orders["amount"] / orders["cid"].map(usual)
    taken_over = (pattern == "compromised_customer").to_numpy()
    assert ratio[taken_over].median() > 0.6 * CONFIG.amount_multiplier
    assert ratio[legit.to_numpy()].median() == pytest.approx(1.0, abs=0.1)
    first_in_window = orders["amount_to_cid_mean_ratio"][taken_over]
    assert first_in_window.quantile(0.9) > CONFIG.amount_multiplier


def test_compromised_terminals_are_new_to_the_card(generated):
    result, orders = generated
    pattern = pd.Series(result.pattern)
    seen = [
        terminal in history.split("~")
        for terminal, history in zip(
            orders["terminal_id"], orders["ccid_hist_terminal_id"], strict=True
        )
    ]
    seen = pd.Series(seen)
    with_history = orders["ccid_hist_ts"].to_numpy() != ""
    compromised = (pattern == "compromised_terminal").to_numpy() & with_history
    legit = (pattern == "legit").to_numpy() & with_history
    assert seen[compromised].mean() < 0.5 * seen[legit].mean()
    # Each attack: one terminal, many different cards, within the configured weeks.
    attacked = orders[(pattern == "compromised_terminal").to_numpy()]
    per_terminal = attacked.groupby("terminal_id").agg(
        orders=("order_id", "size"),
        cards=("ccid", "nunique"),
        span=("order_ts", lambda ts: ts.max() - ts.min()),
    )
    weeks = CONFIG.compromised_terminal_weeks * 7 * 86400
    assert (per_terminal["span"] <= weeks).mean() > 0.9
    assert per_terminal["orders"].median() > 10
    assert (per_terminal["cards"] >= 0.9 * per_terminal["orders"]).all()


def test_history_columns_hold_the_previous_orders_oldest_first(generated):
    result, _ = generated
    schema = base_schema()
    df = result.orders
    ts = pd.to_numeric(df[schema.timestamp]).to_numpy()
    for id_type in ID_TYPES:
        ids = df[schema.id_columns[id_type]].to_numpy()
        by_id = pd.Series(np.arange(len(df))).groupby(ids).agg(list)
        ragged = ragged_rows(df, schema, id_type).to_numpy().any(axis=1)
        rng = np.random.default_rng(0)
        for row in rng.choice(len(df), 200, replace=False):
            earlier = [r for r in by_id[ids[row]] if r < row][-CONFIG.history_length :]
            expected_ids = "~".join(df[schema.order_id].to_numpy()[earlier])
            assert df[schema.history_order_id_column(id_type)].iat[row] == expected_ids
            expected_amounts = "~".join(df["amount"].to_numpy()[earlier])
            hist_amount = df[schema.history_column(id_type, "amount")].iat[row]
            if not ragged[row]:
                assert hist_amount == expected_amounts
            stamps = df[schema.history_timestamp_column(id_type)].iat[row]
            if stamps and id_type == "cid":
                values = np.array(stamps.split("~"), dtype=np.int64)
                assert (np.diff(values) >= 0).all() and values[-1] <= ts[row]
    lengths = history_lengths(df[schema.history_order_id_column("cid")], "~")
    assert lengths.max() == CONFIG.history_length


def test_null_tokens_and_corrupt_rows_appear_at_the_configured_rates(generated):
    result, orders = generated
    schema = base_schema()
    raw = result.orders
    n = len(raw)
    for column in ("payment_method", "amount", "cid_orders_24h"):
        tokens = raw[column].isin(schema.null_tokens).mean()
        assert tokens == pytest.approx(CONFIG.null_token_rate, abs=0.004), column
    assert set(raw["payment_method"]) >= set(schema.null_tokens)
    ragged = ragged_rows(orders, schema, "cid").to_numpy().any(axis=1).sum()
    assert ragged == pytest.approx(CONFIG.ragged_history_rate * n, abs=10)
    assert ragged > 0
    hist = orders[schema.history_timestamp_column("ccid")]
    last = pd.to_numeric(hist.str.rsplit("~", n=1).str[-1].replace("", np.nan))
    future = (last > orders[schema.timestamp]).sum()
    assert future == pytest.approx(CONFIG.future_history_rate * n, abs=10)
    assert future > 0


def test_history_carries_signal_the_current_order_lacks(generated):
    result, orders = generated
    schema = base_schema()
    labelled = orders[schema.label].notna().to_numpy()
    data = orders[labelled]
    y = data[schema.label].astype(int).to_numpy()
    current = data[list(schema.num_features)].to_numpy()
    with_history = data[[*schema.num_features, *schema.eng_features]].to_numpy()
    cut = int(len(data) * 0.7)  # rows are in time order: train on the past

    def auc(x):
        model = HistGradientBoostingClassifier(max_iter=60, random_state=0)
        with threadpool_limits(1):
            model.fit(x[:cut], y[:cut])
            return roc_auc_score(y[cut:], model.predict_proba(x[cut:])[:, 1])

    assert auc(with_history) > auc(current) + 0.05


def test_same_seed_gives_identical_parquet_bytes_and_another_seed_does_not():
    schema = base_schema()

    def parquet_bytes(seed):
        orders = generate_orders(tiny_config(seed=seed), schema).orders
        parts = partition_orders(orders, schema, "month")
        blobs = []
        for key in sorted(parts):
            buffer = io.BytesIO()
            parts[key].to_parquet(buffer)
            blobs.append(buffer.getvalue())
        return blobs

    first = parquet_bytes(3)
    assert parquet_bytes(3) == first
    assert parquet_bytes(4) != first


def test_text_and_typed_exports_normalise_to_the_same_frame():
    schema = base_schema()
    text = generate_orders(tiny_config(), schema).orders
    typed = generate_orders(tiny_config(output_format="typed"), schema).orders
    assert typed[schema.timestamp].dtype == np.int64
    assert typed["amount"].dtype == np.float64
    pd.testing.assert_frame_equal(
        normalize_raw_orders(text, schema, "text"),
        normalize_raw_orders(typed, schema, "typed"),
    )


def test_production_width_schema_generates_and_validates():
    schema = production_width_schema()
    assert (len(schema.cat_features), len(schema.num_features)) == (109, 67)
    assert len(schema.eng_features) == 297
    config = tiny_config(n_customers=20, end_date="2024-01-31")
    orders = generate_orders(config, schema).orders
    assert orders.shape[1] == len(schema.all_columns()) == 834
    normalized = normalize_raw_orders(orders, schema, "prod width")
    known = [f for f in schema.eng_features if is_known_aggregate(f)]
    assert len(known) > 150
    assert normalized["cid_orders_30d"].min() >= 1
    filler = normalized[[f for f in schema.cat_features if f.startswith("cat_feature")]]
    assert filler.nunique().min() > 1


def test_committed_production_width_parameters_match_the_function():
    params = yaml.safe_load((CONF / "prod_width" / "parameters.yml").read_text())
    assert params["raw_schema"] == production_width_schema().to_params()
    assert params["synthetic_profile"] == "production_width"
    profiles = yaml.safe_load((CONF / "base" / "parameters_synthetic.yml").read_text())
    for profile in profiles["synthetic_profiles"].values():
        SyntheticConfig.from_params(profile)


def test_base_engineered_features_all_have_real_semantics():
    schema = base_schema()
    assert all(is_known_aggregate(name) for name in schema.eng_features)
    assert set(FRAUD_PATTERNS) == set(CONFIG.fraud_mix)


@pytest.mark.parametrize(
    ("overrides", "parameter"),
    [
        ({"colour": "red"}, "colour"),
        ({"end_date": "2023-12-01"}, "end_date"),
        ({"start_date": "01/01/2024"}, "start_date"),
        ({"fraud_mix": {"phishing": 1.0}}, "fraud_mix"),
        ({"card_testing_burst": [5, 2]}, "card_testing_burst"),
        ({"null_token_rate": 1.5}, "null_token_rate"),
        ({"partition_by": "year"}, "partition_by"),
        ({"n_customers": 0}, "n_customers"),
    ],
)
def test_bad_profile_parameters_are_named(overrides, parameter):
    with pytest.raises(SyntheticConfigError, match=parameter):
        SyntheticConfig.from_params({**tiny_config().__dict__, **overrides})


def test_null_token_containing_the_separator_is_rejected():
    schema = production_width_schema(null_tokens=["", "n~a"])
    with pytest.raises(SyntheticConfigError, match="null_tokens"):
        generate_orders(tiny_config(n_customers=5), schema)
