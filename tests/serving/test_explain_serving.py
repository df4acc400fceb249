"""Reason codes through the handler and the endpoint: only when asked, k entries,
refused options."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from wsgiref.util import setup_testing_defaults

import pandas as pd
import pytest

from tsa_kedro.models import explain
from tsa_kedro.serving import handler, payload
from tsa_kedro.serving.handler import TSAPredictor
from tsa_kedro.serving.payload import (
    EXPLAIN_ATTR,
    PayloadError,
    apply_query,
    parse_request,
)
from tsa_kedro.serving.server import EndpointApp

N_ORDERS = 6


@pytest.fixture(scope="module")
def predictor(model_dir: Path) -> TSAPredictor:
    return TSAPredictor.from_model_dir(model_dir, device="cpu")


@pytest.fixture(scope="module")
def records(tiny_model) -> list[dict]:
    raw = tiny_model.raw_cali
    with_history = raw[raw["cid_hist_ts"] != ""]
    return json.loads(with_history.iloc[:N_ORDERS].to_json(orient="records"))


def _request(records, **options) -> bytes:
    return json.dumps({"instances": records, **options}).encode()


def _check_reasons(reasons: dict, k: int, names: list[str]) -> None:
    assert set(reasons) == {
        "features",
        "cid_orders",
        "ccid_orders",
        "convergence_delta",
    }
    assert len(reasons["features"]) == k
    for entry in reasons["features"]:
        assert entry["name"] in names
        assert entry["attribution"] > 0
    for key in ("cid_orders", "ccid_orders"):
        assert len(reasons[key]) <= k
        for entry in reasons[key]:
            assert entry["position"] >= 1
            assert entry["seconds_before"] > 0
            assert entry["attribution"] > 0


def test_reasons_only_when_asked(predictor, records):
    plain = predictor.predict(parse_request(json.dumps(records), payload.JSON, 100))
    assert all("reasons" not in answer for answer in plain)
    not_asked = parse_request(_request(records, explain=False), payload.JSON, 100)
    assert EXPLAIN_ATTR not in not_asked.attrs
    assert all("reasons" not in a for a in predictor.predict(not_asked))

    asked = parse_request(_request(records, explain=True, top_k=2), payload.JSON, 100)
    answers = predictor.predict(asked)
    names = predictor.explainer().names
    assert len(answers) == N_ORDERS
    for answer, reference in zip(answers, plain, strict=True):
        assert answer["score"] == reference["score"]  # explaining changes no score
        _check_reasons(answer["reasons"], 2, names)
    assert any(answer["reasons"]["cid_orders"] for answer in answers)
    # top_k defaults to 3
    default = parse_request(_request(records[:1], explain=True), payload.JSON, 100)
    (answer,) = predictor.predict(default)
    _check_reasons(answer["reasons"], payload.DEFAULT_TOP_K, names)


def test_csv_answer_holds_the_reason_texts(predictor, records):
    orders = apply_query(
        parse_request(pd.DataFrame(records).to_csv(index=False), payload.CSV, 100),
        "explain=true&top_k=2",
    )
    answers = predictor.predict(orders)
    rows = list(csv.DictReader(io.StringIO(handler.output_fn(answers, payload.CSV))))
    assert len(rows) == N_ORDERS
    for row, answer in zip(rows, answers, strict=True):
        features = row["reason_features"].split(";")
        assert len(features) == 2
        # match-rate names hold a colon (cid_match_rate:<feature>): the attribution
        # follows the last one
        name, value = features[0].rsplit(":", 1)
        assert name == answer["reasons"]["features"][0]["name"]
        assert float(value) == pytest.approx(
            answer["reasons"]["features"][0]["attribution"], rel=1e-3
        )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"explain": True, "top_k": 0}, "'top_k' must be from 1 to 50, got 0"),
        ({"explain": True, "top_k": 51}, "'top_k' must be from 1 to 50"),
        ({"explain": True, "top_k": "5"}, "'top_k' must be an integer"),
        ({"explain": True, "top_k": 2.5}, "'top_k' must be an integer"),
        ({"explain": True, "top_k": True}, "'top_k' must be an integer"),
        ({"explain": "yes"}, "'explain' must be true or false"),
    ],
)
def test_bad_json_options_name_the_field(options, message):
    with pytest.raises(PayloadError, match=f"JSON body field {message}"):
        parse_request(_request([{"a": 1}], **options), payload.JSON, 10)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("explain=true&top_k=0", "query parameter 'top_k' must be from 1 to 50"),
        ("explain=true&top_k=abc", "query parameter 'top_k' must be an integer"),
        ("explain=maybe", "query parameter 'explain' must be true or false"),
        ("explain=true&topk=3", "unknown query parameters \\['topk'\\]"),
        ("explain=true&explain=false", "query parameters \\['explain'\\] are repeated"),
    ],
)
def test_bad_query_options_name_the_field(query, message):
    with pytest.raises(PayloadError, match=message):
        apply_query(pd.DataFrame({"a": [1]}), query)


def test_options_given_twice_are_refused():
    orders = parse_request(_request([{"a": 1}], explain=True), payload.JSON, 10)
    with pytest.raises(PayloadError, match="both in the JSON body and in the query"):
        apply_query(orders, "explain=true")


def test_bounds_agree_with_the_explainer():
    assert payload.MAX_TOP_K == explain.MAX_TOP_K
    assert payload.DEFAULT_TOP_K == explain.DEFAULT_TOP_K


def _post(app: EndpointApp, body: bytes, content_type: str, query: str = ""):
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/invocations",
        "QUERY_STRING": query,
        "CONTENT_TYPE": content_type,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    setup_testing_defaults(environ)
    started = []
    answer = b"".join(app(environ, lambda *a: started.append(a)))
    return int(started[0][0].split()[0]), answer


def test_endpoint_reasons_only_when_asked_and_bad_top_k_is_400(predictor, records):
    app = EndpointApp(predictor)
    status, body = _post(app, json.dumps(records).encode(), payload.JSON)
    assert status == 200
    assert all("reasons" not in a for a in json.loads(body))

    status, body = _post(app, _request(records, explain=True, top_k=4), payload.JSON)
    assert status == 200
    for answer in json.loads(body):
        assert len(answer["reasons"]["features"]) == 4

    csv_body = pd.DataFrame(records).to_csv(index=False).encode()
    status, body = _post(app, csv_body, payload.CSV, "explain=true&top_k=1")
    assert status == 200
    (answer, *_) = json.loads(body)
    assert len(answer["reasons"]["features"]) == 1

    status, body = _post(app, csv_body, payload.CSV, "explain=true&top_k=-1")
    assert status == 400
    assert "'top_k'" in json.loads(body)["error"]
    status, body = _post(app, _request(records, explain=True, top_k=0), payload.JSON)
    assert status == 400
    assert "JSON body field 'top_k'" in json.loads(body)["error"]


def test_predict_frame_reason_columns(predictor, records):
    raw = pd.DataFrame(records)
    plain = predictor.predict_frame(raw)
    assert not any(c.startswith("reason_") for c in plain.columns)
    framed = predictor.predict_frame(raw, explain_top_k=2)
    assert list(framed.columns) == [*plain.columns, *payload.REASON_COLUMNS]
    pd.testing.assert_series_equal(framed["score"], plain["score"])
    for text in framed["reason_features"]:
        assert len(text.split(";")) == 2


def test_the_bundle_ships_the_explainer(model_dir: Path):
    assert (model_dir / "code/tsa_kedro/models/explain.py").is_file()
