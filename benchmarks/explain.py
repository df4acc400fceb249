"""Latency of one production-width order explained (reason codes) against the same
order scored plainly, through the handler in process, in the same run.

Run from the project root (by hand, never in CI)::

    PYTHONPATH=src .venv/bin/python -m benchmarks.explain [--calls 50] [--threads 2]
        [--steps 32]

Builds the production-width ``model.tar.gz`` of ``benchmarks.endpoint``
(``production_bundle``: the production preset, seeded random weights, the model
exported to ``model.onnx``), loads it with ``handler.model_fn`` and, after
``WARM_UP_CALLS`` untimed calls of each, times ``--calls`` pairs of requests of one
order in turns, so load from other processes hits both alike:

- ``plain``: ``input_fn``, ``predict_fn``, ``output_fn`` on ``[order]`` (on the CPU the
  compiled artefact scores);
- ``explained``: the same on ``{"instances": [order], "explain": true, "top_k": 3}``
  (scoring as above, then integrated gradients of the eager model over ``--steps``
  points: ``tsa_kedro.models.explain``).

Reported: p50 and p99 (ms) of each and ``explained_over_plain``, the ratio of the
p50s (target: at most 10).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks._output import write_results
from benchmarks.endpoint import production_bundle
from tsa_kedro.serving import handler
from tsa_kedro.serving.archive import safe_extract

WARM_UP_CALLS = 5
TOP_K = 3


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = 1000 * np.asarray(seconds)
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99))}


def measure(model: handler.TSAPredictor, order: str, calls: int) -> dict:
    """p50/p99 of plain and explained one-order requests, timed in turns."""
    records = json.loads(order)
    bodies = {
        "plain": json.dumps(records).encode(),
        "explained": json.dumps(
            {"instances": records, "explain": True, "top_k": TOP_K}
        ).encode(),
    }

    def request(body: bytes) -> list[dict]:
        parsed = handler.input_fn(body, "application/json")
        text = handler.output_fn(handler.predict_fn(parsed, model), "application/json")
        return json.loads(text)

    plain, explained = request(bodies["plain"]), request(bodies["explained"])
    assert abs(plain[0]["score"] - explained[0]["score"]) < 1e-6
    assert len(explained[0]["reasons"]["features"]) == TOP_K
    for _ in range(WARM_UP_CALLS):
        for body in bodies.values():
            request(body)
    times: dict[str, list[float]] = {name: [] for name in bodies}
    for _ in range(calls):
        for name, body in bodies.items():
            start = time.perf_counter()
            request(body)
            times[name].append(time.perf_counter() - start)
    result = {name: _percentiles(t) for name, t in times.items()}
    result["explained_over_plain"] = result["explained"]["p50"] / result["plain"]["p50"]
    result["convergence_delta"] = explained[0]["reasons"]["convergence_delta"]
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50, help="timed calls of each")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads")
    parser.add_argument(
        "--steps", type=int, default=handler.EXPLAIN_STEPS, help="integration points"
    )
    parser.add_argument("--output", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    bundle, order = production_bundle()
    with tempfile.TemporaryDirectory(prefix="explain-bench-") as folder:
        archive = Path(folder) / "model.tar.gz"
        archive.write_bytes(bundle)
        safe_extract(archive, Path(folder) / "model")
        model = handler.model_fn(str(Path(folder) / "model"))
        model.explain_steps = args.steps
        timings = measure(model, order, args.calls)
    results = {
        "threads": args.threads,
        "calls": args.calls,
        "steps": args.steps,
        "top_k": TOP_K,
        "compiled": model.compiled is not None,
        "device": str(model.device),
        "torch": torch.__version__,
        **timings,
    }
    write_results(results, args.output)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
