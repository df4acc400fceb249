"""The inference handler in process: payload errors, percentiles, rejected orders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tsa_kedro.features.raw_orders import RawDataError
from tsa_kedro.models.predict import choose_device
from tsa_kedro.serving import handler
from tsa_kedro.serving.handler import TSAPredictor, percentile_lookup
from tsa_kedro.serving.payload import PayloadError, format_response, parse_request


@pytest.fixture(scope="module")
def predictor(model_dir: Path) -> TSAPredictor:
    return handler.model_fn(str(model_dir))


def _records(tiny_model, n: int) -> list[dict]:
    return json.loads(tiny_model.raw_cali.iloc[:n].to_json(orient="records"))


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"[{", "application/json", "not valid JSON"),
        (b'{"order_id": 1}', "application/json", "list of order objects"),
        (b"[1, 2]", "application/json", "items \\[0, 1\\] are not"),
        (b"[]", "application/json", "no orders"),
        (b"\xff\xfe", "application/json", "not UTF-8"),
        (b"a,b\n1,2\n", "application/x-parquet", "unsupported content type"),
        (b"a,b\n1,2,3\n", "text/csv", "different number of fields"),
        (b"a,a\n1,2\n", "text/csv", "repeats columns"),
        (b"a,b\n", "text/csv", "no orders"),
    ],
)
def test_payload_errors(body: bytes, content_type: str, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        parse_request(body, content_type, max_batch_size=10)


def test_oversized_batch_is_refused(tiny_model, predictor) -> None:
    records = _records(tiny_model, 3)
    with pytest.raises(PayloadError, match="maximum batch size is 2"):
        parse_request(json.dumps(records), "application/json", max_batch_size=2)
    assert handler._REQUEST_LIMITS["max_batch_size"] == 500  # from the bundle
    too_many = json.dumps(records * 200)
    with pytest.raises(PayloadError, match="600 orders; the maximum batch size is 500"):
        handler.input_fn(too_many, "application/json; charset=utf-8")


def test_missing_column_names_it(tiny_model, predictor) -> None:
    frame = pd.DataFrame(_records(tiny_model, 2)).drop(columns=["cid_hist_ts"])
    with pytest.raises(RawDataError, match="cid_hist_ts"):
        predictor.predict(frame)


def test_repeated_order_ids_are_refused(tiny_model, predictor) -> None:
    frame = pd.DataFrame(_records(tiny_model, 2) * 2)
    with pytest.raises(PayloadError, match="repeat"):
        predictor.predict(frame)


def test_accept_type(predictor) -> None:
    assert json.loads(
        format_response([{"score": float("nan")}], "application/json")
    ) == [{"score": None}]
    with pytest.raises(PayloadError, match="accept"):
        format_response([], "application/x-parquet")
    answers = [
        {"order_id": "a", "score": 0.125, "percentile": 40.0,
         "calibrated_probability": float("nan")},
        {"order_id": "b,c", "error": "order rejected"},
    ]  # fmt: skip
    assert format_response(answers, "text/csv; charset=utf-8").splitlines() == [
        "order_id,score,percentile,calibrated_probability,error",
        "a,0.125,40.0,,",
        '"b,c",,,,order rejected',
    ]
    with pytest.raises(PayloadError, match="no column"):
        format_response([{"order_id": "a", "extra": 1}], "text/csv")


def test_order_with_future_history_gets_an_error_entry(tiny_model, predictor) -> None:
    records = _records(tiny_model, 3)
    ts_column = tiny_model.schema_params["timestamp"]
    bad = dict(records[1])
    history = bad["cid_hist_ts"].split("~")
    if history == [""]:
        pytest.skip("sample order has no cid history")
    history[-1] = str(int(bad[ts_column]) + 3600)  # a history order after this one
    bad["cid_hist_ts"] = "~".join(history)
    answers = predictor.predict(pd.DataFrame([records[0], bad, records[2]]))
    assert [a["order_id"] for a in answers] == [r["order_id"] for r in records]
    assert "score" in answers[0] and "score" in answers[2]
    assert "negative_delta_cid" in answers[1]["error"]
    assert "score" not in answers[1]


def test_batch_composition_does_not_change_scores(tiny_model, predictor) -> None:
    records = _records(tiny_model, 40)
    together = predictor.predict(pd.DataFrame(records))
    alone = [predictor.predict(pd.DataFrame([r]))[0] for r in records[:5]]
    for a, b in zip(together[:5], alone, strict=True):
        if "score" in a:
            assert a["score"] == pytest.approx(b["score"], abs=1e-6)


def test_percentile_lookup() -> None:
    lookup = percentile_lookup([[0.1, 25.0], [0.2, 50.0], [0.2, 75.0], [0.9, 100.0]])
    np.testing.assert_array_equal(
        lookup(np.array([0.05, 0.1, 0.15, 0.2, 0.5, 0.95])),
        [0.0, 25.0, 25.0, 75.0, 75.0, 100.0],
    )
    with pytest.raises(ValueError, match="non-decreasing"):
        percentile_lookup([[0.5, 10.0], [0.4, 20.0]])
    with pytest.raises(ValueError, match="non-empty"):
        percentile_lookup([])


def test_device_falls_back_to_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert choose_device("auto") == torch.device("cpu")
    assert choose_device("cuda") == torch.device("cpu")
    monkeypatch.setenv("TSA_DEVICE", "cpu")
    assert choose_device(None) == torch.device("cpu")


def test_tampered_bundle_is_refused(model_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    (copy / "percentile_map.json").write_text("[[0.0, 100.0]]")
    with pytest.raises(ValueError, match="percentile_map.json"):
        TSAPredictor.from_model_dir(copy)


def test_loading_builds_the_request_lookup_index(model_dir):
    """The first request does not pay for hashing the vocabularies: loading does."""
    predictor = TSAPredictor.from_model_dir(model_dir)
    assert predictor.transforms.combined._built is not None
