"""Latency of one production-width order through the HTTP endpoint, against the handler
called in process, in the same run.

Run from the project root (by hand, never in CI)::

    PYTHONPATH=src .venv/bin/python -m benchmarks.endpoint [--calls 200] [--threads 2]

Builds a real ``model.tar.gz`` with the package node (``build_model_package``) at
production widths (109 categorical / 67 numerical / 297 engineered features, seq_len
51, histories of about 25 orders, the production preset, seeded random weights,
transforms fitted on random orders, a uniform percentile map, a flat calibration
spline, the reference profile of those orders; the model exported to ``model.onnx``
as in the pipeline), starts
``python -m tsa_kedro.serving.server`` on it (one worker, ``--threads`` intra-op threads
through ``OMP_NUM_THREADS``), and loads the same bundle in this process with
``handler.model_fn`` (``--threads`` intra-op threads too).

Then, after ``WARM_UP_CALLS`` untimed calls of each, it times ``--calls`` pairs of
calls in turns, so load from other processes hits both alike:

- ``http``: ``POST /invocations`` of one order as JSON over one keep-alive connection
  (``http.client``), from sending the request to reading the whole answer;
- ``in_process``: ``input_fn``, ``predict_fn`` and ``output_fn`` on the same body.

Reported: p50 and p99 (ms) of each, and ``http_over_in_process``, the ratio of the
p50s: what the HTTP layer (server, sockets, client) adds to the handler's own time.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from benchmarks._output import write_results
from benchmarks._presets import preset_config
from benchmarks.preprocess import PROFILES, random_raw_chunk
from benchmarks.serving import FIT_ROWS, FLAT_SPLINE
from tsa_kedro.features.transforms import fit_transforms, vocabulary_size
from tsa_kedro.models import TwoSeqMoEOrderFeatureAttentionClassifier
from tsa_kedro.pipelines.package.nodes import build_model_package
from tsa_kedro.pipelines.train.nodes import build_reference_profile
from tsa_kedro.schema import RawSchema
from tsa_kedro.serving import handler
from tsa_kedro.serving.archive import safe_extract

ROOT = Path(__file__).resolve().parents[1]
WARM_UP_CALLS = 20
START_TIMEOUT_S = 300
PACKAGE = {
    "sample_size": 2,
    "max_batch_size": 1000,
    "score_batch_size": 256,
    "device": "cpu",
    "compiled_model": "onnx",
    "runtime_requirements": [
        "torch", "numpy", "pandas", "pyarrow", "scipy", "safetensors", "onnxruntime",
    ],
}  # fmt: skip


def production_bundle(seed: int = 0) -> tuple[bytes, str]:
    """``model.tar.gz`` at production widths and a JSON request of one of its orders."""
    settings = PROFILES["production"]
    params = yaml.safe_load((ROOT / "conf/base/parameters.yml").read_text())
    n_cat, n_num, n_eng = settings["widths"]
    schema_params = params["raw_schema"] | {
        "cat_features": [f"cat_{i:03d}" for i in range(n_cat)],
        "num_features": [f"num_{i:03d}" for i in range(n_num)],
        "eng_features": [f"eng_{i:03d}" for i in range(n_eng)],
    }
    schema = RawSchema.from_params(schema_params)
    raw = random_raw_chunk(schema, FIT_ROWS, settings["history_mean"], seed)
    cat_to_index, scaling, defaults = fit_transforms(
        [raw], schema, {"min_frequency": 1}
    )
    config = preset_config(
        "production",
        n_cat_features=n_cat,
        n_num_features=n_num,
        n_eng_features=n_eng,
        vocab_size=vocabulary_size(cat_to_index),
        seq_len=settings["seq_len"],
    )
    torch.manual_seed(seed)
    model = TwoSeqMoEOrderFeatureAttentionClassifier(config)
    records = json.loads(raw.drop(columns=[schema.label]).to_json(orient="records"))
    bundle, _ = build_model_package(
        model.state_dict(),
        config.to_dict(),
        [[p / 100.0, p] for p in np.linspace(0.0, 100.0, 1000).tolist()],
        FLAT_SPLINE,
        cat_to_index,
        scaling,
        defaults,
        build_reference_profile(
            {"part-00000": raw},
            pd.DataFrame({"score": np.linspace(0.0, 1.0, 1000)}),
            schema_params,
        ),
        records[: PACKAGE["sample_size"]],
        schema_params,
        {"seq_len": settings["seq_len"], "delta_cap_seconds": 1.0e7},
        {},
        PACKAGE,
    )
    return bundle, json.dumps(records[-1:])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(
    archive: Path, threads: int, log: Path
) -> tuple[subprocess.Popen, int]:
    """The endpoint on ``archive``, once ``/ping`` answers 200."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tsa_kedro.serving.server", "--model", str(archive),
         "--port", str(port), "--threads", "2"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src"),
             "OMP_NUM_THREADS": str(threads)},
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )  # fmt: skip
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited {process.returncode}: {log.read_text()}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("GET", "/ping")
            if connection.getresponse().status == 200:
                return process, port
        except OSError:
            time.sleep(0.5)
        finally:
            connection.close()
    process.terminate()
    raise RuntimeError(f"server not up in {START_TIMEOUT_S} s: {log.read_text()}")


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = 1000 * np.asarray(seconds)
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99))}


def measure(port: int, model: handler.TSAPredictor, body: str, calls: int) -> dict:
    """p50/p99 of HTTP and in-process calls, timed in turns."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    encoded = body.encode()

    def over_http() -> str:
        connection.request("POST", "/invocations", body=encoded, headers=headers)
        response = connection.getresponse()
        answer = response.read()
        if response.status != 200:
            raise RuntimeError(f"endpoint answered {response.status}: {answer!r}")
        return answer.decode()

    def in_process() -> str:
        parsed = handler.input_fn(encoded, "application/json")
        return handler.output_fn(handler.predict_fn(parsed, model), "application/json")

    first_http, first_local = json.loads(over_http()), json.loads(in_process())
    assert abs(first_http[0]["score"] - first_local[0]["score"]) < 1e-6
    for _ in range(WARM_UP_CALLS):
        over_http()
        in_process()
    times: dict[str, list[float]] = {"http": [], "in_process": []}
    for _ in range(calls):
        for name, call in (("http", over_http), ("in_process", in_process)):
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    connection.close()
    result = {name: _percentiles(t) for name, t in times.items()}
    result["http_over_in_process"] = result["http"]["p50"] / result["in_process"]["p50"]
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="timed calls of each")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads")
    parser.add_argument("--output", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    bundle, body = production_bundle()
    with tempfile.TemporaryDirectory(prefix="endpoint-bench-") as folder:
        archive = Path(folder) / "model.tar.gz"
        archive.write_bytes(bundle)
        safe_extract(archive, Path(folder) / "model")
        model = handler.model_fn(str(Path(folder) / "model"))
        process, port = start_server(archive, args.threads, Path(folder) / "log")
        try:
            timings = measure(port, model, body, args.calls)
        finally:
            process.terminate()
            process.wait(timeout=60)
    results = {
        "threads": args.threads,
        "calls": args.calls,
        "request_bytes": len(body),
        "compiled": model.compiled is not None,
        "torch": torch.__version__,
        **timings,
    }
    write_results(results, args.output)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
