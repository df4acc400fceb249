import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from tsa_kedro.synthetic.aggregates import DISTINCT_SPAN, engineered_features
from tsa_kedro.synthetic.text import HistoryWindows

NAMES = [
    "cid_orders_1h",
    "cid_amount_sum_24h",
    "cid_amount_mean_7d",
    "cid_amount_max_7d",
    "cid_amount_std_7d",
    "cid_small_orders_24h",
    "cid_distinct_cards_7d",
    "cid_days_since_first_order",
    "cid_seconds_since_last_order",
    "amount_to_cid_mean_ratio",
    "night_order_flag",
]


@pytest.fixture(scope="module")
def orders():
    rng = np.random.default_rng(1)
    n = 250
    frame = pd.DataFrame(
        {
            "cid": rng.integers(0, 8, n),
            "ccid": rng.integers(0, 20, n),
            "ts": np.sort(rng.integers(0, 20 * 86400, n)),
            "amount": np.round(rng.lognormal(3, 1, n), 2),
        }
    )
    frame.loc[10, "ts"] = frame.loc[9, "ts"]  # equal times keep table order
    return frame


def brute_force(frame, row):
    """Each aggregate of one order by scanning all earlier orders."""
    t, cid, amount = frame.ts[row], frame.cid[row], frame.amount[row]
    mine = frame[(frame.cid == cid) & (frame.index <= row)]
    prev = mine[mine.index < row]

    def window(rows, seconds):
        return rows[rows.ts > t - seconds]

    prev7 = window(prev, 7 * 86400)
    prev30 = window(prev, 30 * 86400)
    return {
        "cid_orders_1h": len(window(mine, 3600)),
        "cid_amount_sum_24h": window(mine, 86400).amount.sum(),
        "cid_amount_mean_7d": prev7.amount.mean() if len(prev7) else np.nan,
        "cid_amount_max_7d": prev7.amount.max() if len(prev7) else np.nan,
        "cid_amount_std_7d": prev7.amount.std() if len(prev7) > 1 else np.nan,
        "cid_small_orders_24h": (window(mine, 86400).amount <= 5.0).sum(),
        "cid_distinct_cards_7d": window(mine, 7 * 86400)
        .ccid.tail(DISTINCT_SPAN)
        .nunique(),
        "cid_days_since_first_order": (t - mine.ts.min()) / 86400,
        "cid_seconds_since_last_order": t - prev.ts.max() if len(prev) else np.nan,
        "amount_to_cid_mean_ratio": amount / prev30.amount.mean()
        if len(prev30)
        else np.nan,
        "night_order_flag": float(t % 86400 < 6 * 3600),
    }


def test_aggregates_match_a_brute_force_scan(orders):
    keys = {"cid": orders.cid.to_numpy(), "ccid": orders.ccid.to_numpy()}
    values = engineered_features(
        [*NAMES, "unknown_feature"],
        keys,
        orders.ts.to_numpy(),
        orders.amount.to_numpy(),
        5.0,
    )
    assert set(values) == set(NAMES)
    for row in range(len(orders)):
        expected = brute_force(orders, row)
        for name in NAMES:
            assert values[name][row] == pytest.approx(
                expected[name], nan_ok=True, rel=1e-9
            ), (
                name,
                row,
            )


def test_history_strings_join_the_previous_orders_oldest_first():
    ids = np.array([5, 3, 5, 5, 3, 5, 5])
    order = np.lexsort((np.arange(len(ids)), ids))
    key = ids[order]
    first = np.maximum.accumulate(
        np.where(np.r_[True, key[1:] != key[:-1]], np.arange(7), 0)
    )
    tokens = pa.array(["a", "bb", "", "cé", "d", "e", "f"])
    joined = HistoryWindows(order, first, 3).join(tokens, "~").to_pylist()
    assert joined == ["", "", "a", "a~", "bb", "a~~cé", "~cé~e"]
