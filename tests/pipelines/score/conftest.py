"""A small raw export in production format and the tiny model bundle of the serving
tests, for the score pipeline."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.serving import conftest as serving

# The serving tests' tiny bundle, shared with this folder.
tiny_model = serving.tiny_model
tiny_package = serving.tiny_package
model_dir = serving.model_dir

N_ORDERS = 60
REJECTED_ORDER = 7  # a history order later than the order itself


def production_quirks(raw: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Orders as a production export writes them: codes as ``1`` and ``1.0``, null
    tokens in numerical cells, orders without history, and one order that
    preprocessing rejects (its id is returned too)."""
    raw = raw.iloc[:N_ORDERS].reset_index(drop=True).copy()
    raw.loc[0, "channel"] = "1"
    raw.loc[1, "channel"] = "1.0"
    raw.loc[2, "item_count"] = "3.0"
    raw.loc[3, "item_count"] = "3"
    raw.loc[4, "shipping_fee"] = "My Text String"
    raw.loc[5, "discount_rate"] = ""
    history = [c for c in raw.columns if c.startswith("cid_hist_")]
    raw.loc[6, history] = ""  # an order without customer history
    with_history = raw.index[raw["cid_hist_ts"] != ""]
    bad = int(with_history[with_history > REJECTED_ORDER][0])
    times = raw.loc[bad, "cid_hist_ts"].split("~")
    times[-1] = str(int(raw.loc[bad, "order_ts"]) + 3600)
    raw.loc[bad, "cid_hist_ts"] = "~".join(times)
    return raw, str(raw.loc[bad, "order_id"])


@pytest.fixture(scope="module")
def score_export(tiny_model, tmp_path_factory) -> tuple[Path, pd.DataFrame, str]:
    """A folder with one Parquet and one CSV file (every column text), the orders
    in it and the id of the rejected one."""
    raw, rejected = production_quirks(tiny_model.raw_cali)
    folder = tmp_path_factory.mktemp("score_export") / "new-orders"
    folder.mkdir()
    half = len(raw) // 2
    raw.iloc[:half].to_parquet(folder / "part-00000.parquet", index=False)
    raw.iloc[half:].to_csv(folder / "part-00001.csv", index=False)
    (folder / "_SUCCESS").write_text("")
    return folder, raw, rejected


@pytest.fixture(scope="module")
def model_archive(tiny_package, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("archive") / "model.tar.gz"
    path.write_bytes(tiny_package[0])
    return path
