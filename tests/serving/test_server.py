"""The HTTP endpoint: a real server process on the tiny bundle, over real sockets."""

from __future__ import annotations

import csv
import http.client
import io
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from wsgiref.util import setup_testing_defaults

import pandas as pd
import pytest

from tsa_kedro.serving.handler import TSAPredictor
from tsa_kedro.serving.server import EndpointApp, RequestError, response_type

PROJECT = Path(__file__).resolve().parents[2]
MAX_BODY_BYTES = 2_000_000
N_ORDERS = 200  # the bundle allows 500 per request
START_TIMEOUT_S = 240


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start(model: Path, log: Path, *extra: str) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(PROJECT / "src")}
    process = subprocess.Popen(
        [sys.executable, "-m", "tsa_kedro.serving.server", "--model", str(model),
         "--port", str(port), "--threads", "2", *extra],
        cwd=PROJECT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )  # fmt: skip
    return process, port


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _call(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


@pytest.fixture(scope="module")
def server(tiny_package, tmp_path_factory) -> Iterator[tuple[subprocess.Popen, int]]:
    """The server on the tiny bundle's ``model.tar.gz`` (unpacked by the server)."""
    folder = tmp_path_factory.mktemp("endpoint")
    archive = folder / "model.tar.gz"
    archive.write_bytes(tiny_package[0])
    log = folder / "server.log"
    process, port = _start(archive, log, "--max-body-bytes", str(MAX_BODY_BYTES))
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"server exited {process.returncode}:\n{log.read_text()}")
            try:
                if _call(port, "GET", "/ping")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not up in {START_TIMEOUT_S} s:\n{log.read_text()}")
            time.sleep(0.5)
        yield process, port
    finally:
        _stop(process)
    assert "Traceback" not in log.read_text()


@pytest.fixture(scope="module")
def predictor(model_dir: Path) -> TSAPredictor:
    return TSAPredictor.from_model_dir(model_dir)


@pytest.fixture(scope="module")
def records(tiny_model) -> list[dict]:
    return json.loads(tiny_model.raw_cali.iloc[:N_ORDERS].to_json(orient="records"))


def _answers(headers: dict[str, str], body: bytes) -> list[dict]:
    if headers["Content-Type"] == "text/csv":
        rows = list(csv.DictReader(io.StringIO(body.decode())))
        return [{k: v for k, v in row.items() if v != ""} for row in rows]
    return [{k: v for k, v in row.items() if v is not None} for row in json.loads(body)]


def _body(records: list[dict], content_type: str) -> bytes:
    if content_type == "text/csv":
        return pd.DataFrame(records).to_csv(index=False).encode()
    return json.dumps(records).encode()


def test_ping(server) -> None:
    status, headers, body = _call(server[1], "GET", "/ping")
    assert status == 200
    assert json.loads(body) == {"status": "healthy"}


@pytest.mark.parametrize("accept", ["application/json", "text/csv", None])
@pytest.mark.parametrize("content_type", ["application/json", "text/csv"])
def test_scores_equal_the_predictor(
    server, predictor, records, content_type, accept
) -> None:
    headers = {"Content-Type": content_type} | ({"Accept": accept} if accept else {})
    status, response_headers, body = _call(
        server[1], "POST", "/invocations", _body(records, content_type), headers
    )
    assert status == 200, body
    assert response_headers["Content-Type"] == (accept or "application/json")
    answers = _answers(response_headers, body)
    expected = predictor.predict(pd.DataFrame(records))
    assert [a["order_id"] for a in answers] == [e["order_id"] for e in expected]
    scored = 0
    for answer, reference in zip(answers, expected, strict=True):
        assert ("error" in answer) == ("error" in reference)
        if "error" in reference:
            continue
        scored += 1
        for field in ("score", "percentile", "calibrated_probability"):
            assert float(answer[field]) == pytest.approx(reference[field], abs=1e-6)
    assert scored > N_ORDERS // 2


def test_keep_alive_connection_serves_many_requests(server, records) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server[1], timeout=120)
    try:
        for _ in range(3):
            connection.request(
                "POST",
                "/invocations",
                body=json.dumps(records[:1]),
                headers={"Content-Type": "application/json"},
            )
            response = connection.getresponse()
            assert response.status == 200
            assert len(json.loads(response.read())) == 1
    finally:
        connection.close()


JSON_TYPE = {"Content-Type": "application/json"}


def _error_cases(records: list[dict]) -> list[tuple]:
    without_column = [
        {k: v for k, v in r.items() if k != "cid_hist_ts"} for r in records[:2]
    ]
    return [
        ("GET", "/nowhere", None, {}, 404, "no resource"),
        ("GET", "/invocations", None, {}, 405, "answers POST"),
        ("POST", "/invocations", b"[{", JSON_TYPE, 400, "not valid JSON"),
        ("POST", "/invocations", b"[" * 40 + b"]" * 40, JSON_TYPE, 400, "levels deep"),
        ("POST", "/invocations", b"a,b\n1,2,3\n", {"Content-Type": "text/csv"},
         400, "different number of fields"),
        ("POST", "/invocations", b"\xff\xfe", JSON_TYPE, 400, "not UTF-8"),
        ("POST", "/invocations", b"[]", JSON_TYPE, 400, "no orders"),
        ("POST", "/invocations", b"[]", {"Content-Type": "application/x-parquet"},
         415, "unsupported Content-Type"),
        ("POST", "/invocations", b"[]", {}, 415, "unsupported Content-Type"),
        ("POST", "/invocations", b"[]", {**JSON_TYPE, "Accept": "application/xml"},
         406, "cannot answer Accept"),
        ("POST", "/invocations", b"[]",
         {**JSON_TYPE, "Accept": "text/csv;q=0, application/json;q=0"}, 406, "Accept"),
        ("POST", "/invocations", json.dumps([{}] * 501).encode(), JSON_TYPE, 400,
         "501 orders; the maximum batch size is 500"),
        ("POST", "/invocations", json.dumps(records[:2] * 2).encode(), JSON_TYPE,
         400, "repeat"),
        ("POST", "/invocations", json.dumps(without_column).encode(), JSON_TYPE,
         422, "cid_hist_ts"),
        # http.client sends an iterable body chunked, without Content-Length
        ("POST", "/invocations", iter([b"[]"]), JSON_TYPE, 411, "Content-Length"),
    ]  # fmt: skip


def test_refused_requests_get_their_status_and_a_json_reason(server, records) -> None:
    process, port = server
    for method, path, body, headers, status, message in _error_cases(records):
        got, response_headers, answer = _call(port, method, path, body, headers)
        assert got == status, (path, headers, answer)
        assert response_headers["Content-Type"] == "application/json"
        error = json.loads(answer)
        assert error["status"] == status
        assert message in error["error"], error
        assert "Traceback" not in error["error"]
    # the server survives them
    assert process.poll() is None
    status, _, answer = _call(port, "POST", "/invocations", json.dumps(records[:3]), JSON_TYPE)  # fmt: skip
    assert status == 200
    assert len(json.loads(answer)) == 3


def test_body_over_the_limit_is_refused_before_it_is_read(server, records) -> None:
    """413 comes back although the body is never sent: only its announced size."""
    with socket.create_connection(("127.0.0.1", server[1]), timeout=60) as client:
        client.sendall(
            b"POST /invocations HTTP/1.1\r\nHost: test\r\n"
            b"Content-Type: application/json\r\n"
            + f"Content-Length: {MAX_BODY_BYTES + 1}\r\n\r\n".encode()
        )
        reply = client.makefile("rb")
        status_line = reply.readline().decode()
        headers = http.client.parse_headers(reply)
        body = reply.read(int(headers["Content-Length"]))
    assert status_line.split()[1] == "413"
    error = json.loads(body)
    assert error["status"] == 413
    assert f"limit of {MAX_BODY_BYTES} bytes" in error["error"]
    status, _, _ = _call(
        server[1], "POST", "/invocations", json.dumps(records[:1]), JSON_TYPE
    )
    assert status == 200


def test_bundle_that_does_not_load_stops_the_server(model_dir, tmp_path) -> None:
    broken = tmp_path / "model"
    shutil.copytree(model_dir, broken)
    with (broken / "percentile_map.json").open("a") as file:
        file.write(" ")
    log = tmp_path / "server.log"
    process, _ = _start(broken, log)
    try:
        returncode = process.wait(timeout=START_TIMEOUT_S)
    finally:
        _stop(process)
    text = log.read_text()
    assert returncode != 0, text
    assert f"model bundle {broken} did not load" in text
    assert "percentile_map.json" in text


def test_missing_model_path_exits_with_its_name(tmp_path) -> None:
    missing = tmp_path / "absent.tar.gz"
    result = subprocess.run(
        [sys.executable, "-m", "tsa_kedro.serving.server", "--model", str(missing)],
        cwd=PROJECT,
        env={**os.environ, "PYTHONPATH": str(PROJECT / "src")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert f"model path {missing} does not exist" in result.stderr


def test_internal_failure_is_a_generic_500_and_logged(model_dir, records, caplog):
    """A bundle setting that breaks scoring (score batches of 0 orders)."""
    model = TSAPredictor.from_model_dir(model_dir)
    model.score_batch_size = 0
    app = EndpointApp(model)
    body = json.dumps(records[:2]).encode()
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/invocations",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    setup_testing_defaults(environ)
    started = []
    with caplog.at_level(logging.ERROR, logger="tsa_kedro.serving.server"):
        answer = b"".join(app(environ, lambda *a: started.append(a)))
    assert started[0][0] == "500 Internal Server Error"
    assert json.loads(answer) == {
        "error": "internal error while scoring; see the server log",
        "status": 500,
    }
    assert "POST /invocations failed" in caplog.text
    assert caplog.records[-1].exc_info is not None


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        (None, "application/json"),
        ("", "application/json"),
        ("*/*", "application/json"),
        ("text/csv", "text/csv"),
        ("text/*", "text/csv"),
        ("text/csv; charset=utf-8", "text/csv"),
        ("application/json;q=0.5, text/csv", "text/csv"),
        ("application/xml, text/csv;q=0.2", "text/csv"),
        ("text/csv;q=0, */*", "application/json"),
    ],
)
def test_response_type(accept, chosen) -> None:
    assert response_type(accept) == chosen


def test_response_type_refuses_what_it_cannot_answer() -> None:
    with pytest.raises(RequestError, match="application/xml") as refused:
        response_type("application/xml")
    assert refused.value.status == 406
