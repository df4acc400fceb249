"""One model, three ways to score: the batch `score` node, the in-process handler and
the HTTP endpoint give the same numbers for the same 1,000 production-format orders."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest

from tests.pipelines.score.conftest import production_quirks
from tests.serving.test_server import _answers, _call, _start, _stop
from tsa_kedro.pipelines.score.nodes import load_model, score_orders
from tsa_kedro.schema import RawSchema
from tsa_kedro.serving.handler import TSAPredictor
from tsa_kedro.synthetic import SyntheticConfig, generate_orders

N_ORDERS = 1000
REQUEST_ORDERS = 500  # the tiny bundle's max_batch_size
TOLERANCE = 1e-6
NUMBERS = ("score", "calibrated_probability", "percentile")


@pytest.fixture(scope="module")
def orders(tiny_model) -> pd.DataFrame:
    """1,000 new orders (another seed than the model's data, so unseen categories
    occur), every column text, with production quirks and one rejected order."""
    schema = RawSchema.from_params(tiny_model.schema_params)
    config = SyntheticConfig.from_params(
        {
            "seed": 11,
            "start_date": "2024-03-01",
            "end_date": "2024-04-15",
            "n_customers": 400,
            "orders_per_customer_per_day": 0.2,
            "history_length": 12,
            "fraud_rate": 0.05,
            "output_format": "text",
        }
    )
    raw = generate_orders(config, schema).orders
    assert len(raw) >= N_ORDERS
    raw = raw.iloc[:N_ORDERS].reset_index(drop=True)
    quirky, _ = production_quirks(raw)  # the first orders, rewritten
    return pd.concat([quirky, raw.iloc[len(quirky) :]], ignore_index=True)


def _frame(answers: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(answers).set_index("order_id")
    for column in NUMBERS:
        frame[column] = pd.to_numeric(frame.get(column), errors="coerce")
    return frame


def _same(name: str, got: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert sorted(got.index) == sorted(expected.index), name
    got = got.loc[expected.index]
    rejected = expected["score"].isna()
    assert (got["score"].isna() == rejected).all(), f"{name}: other orders rejected"
    for column in NUMBERS:
        difference = np.abs(
            got.loc[~rejected, column] - expected.loc[~rejected, column]
        )
        assert difference.max() <= TOLERANCE, f"{name}: {column} differs"


def test_score_node_handler_and_endpoint_agree(
    orders, model_dir, tiny_package, tmp_path
):
    model_archive = tmp_path / "model.tar.gz"
    model_archive.write_bytes(tiny_package[0])
    handler = TSAPredictor.from_model_dir(model_dir)
    in_process = _frame(
        [
            answer
            for first in range(0, N_ORDERS, REQUEST_ORDERS)
            for answer in handler.predict(orders.iloc[first : first + REQUEST_ORDERS])
        ]
    )
    rejected = in_process["score"].isna()
    assert 1 <= rejected.sum() < 10, "the planted order (and few others) rejected"
    assert in_process.loc[~rejected, "score"].std() > 0

    model = load_model(
        {"model": str(model_archive), "tracking_uri": None, "device": "cpu"},
        {"tracking_uri": "sqlite:///unused.db"},
    )
    halves = {
        "part-00000": lambda: orders.iloc[: N_ORDERS // 2],
        "part-00001": lambda: orders.iloc[N_ORDERS // 2 :],
    }
    _, table, summary = score_orders(halves, model, {"batch_orders": 300})
    assert summary["rows_in"] == N_ORDERS
    _same("score pipeline", _frame(table.to_dict(orient="records")), in_process)

    process, port = _start(model_archive, tmp_path / "server.log", "--threads", "2")
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                if _call(port, "GET", "/ping")[0] == 200:
                    break
            except OSError:
                pass
            assert process.poll() is None, (tmp_path / "server.log").read_text()
            assert time.monotonic() < deadline, "endpoint did not start"
            time.sleep(0.5)
        answers = []
        for first in range(0, N_ORDERS, REQUEST_ORDERS):
            part = orders.iloc[first : first + REQUEST_ORDERS]
            status, headers, body = _call(
                port,
                "POST",
                "/invocations",
                json.dumps(json.loads(part.to_json(orient="records"))).encode(),
                {"Content-Type": "application/json", "Accept": "application/json"},
            )
            assert status == 200, body
            answers += _answers(headers, body)
    finally:
        _stop(process)
    _same("endpoint", _frame(answers), in_process)
