"""Batch scoring throughput: orders per second through the score pipeline's nodes.

Run from the project root (by hand, never in CI)::

    PYTHONPATH=src .venv/bin/python -m benchmarks.score [--orders 100000] [--threads 2]

For each profile (``default`` or ``production``: 109 / 67 / 297 features, seq_len 51,
the production preset; see ``benchmarks/serving.py``) it builds a predictor with
seeded random weights, random raw orders of that profile in ``--files`` files, and
times:

- ``score``: the ``score_orders`` node (batches of ``--batch-orders`` through
  ``TSAPredictor.predict_frame``: normalisation, tensors, model, percentiles,
  calibration);
- ``parquet``: writing the batches as partitioned Parquet (``AtomicPartitionedDataset``);
- ``duckdb``: writing the rows into the DuckDB table (``DuckDBTableDataset``);
- ``end_to_end``: the three together, in orders per second.

The model scores eagerly on CPU (no ONNX export: the random model is not packaged).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks._output import write_results
from benchmarks.preprocess import PROFILES, random_raw_chunk
from benchmarks.serving import build_predictor
from tsa_kedro.datasets.atomic_partitioned import AtomicPartitionedDataset
from tsa_kedro.datasets.duckdb_table import DuckDBTableDataset
from tsa_kedro.pipelines.score.model_source import ScoringModel
from tsa_kedro.pipelines.score.nodes import score_orders


def _export(profile: str, orders: int, files: int, predictor) -> dict:
    """Random raw orders of ``profile`` in ``files`` parts, with unique ids."""
    schema = predictor.schema
    raw = random_raw_chunk(schema, orders, PROFILES[profile]["history_mean"], seed=1)
    raw = raw.drop(columns=[schema.label])
    parts = np.array_split(np.arange(orders), files)
    return {
        f"part-{i:05d}": (lambda rows=rows: raw.iloc[rows])
        for i, rows in enumerate(parts)
    }


def run_profile(profile: str, args: argparse.Namespace) -> dict:
    predictor, _ = build_predictor(profile)
    model = ScoringModel(
        predictor=predictor,
        name="benchmark",
        version="0",
        source="benchmarks.score",
        location="memory",
    )
    export = _export(profile, args.orders, args.files, predictor)
    params = {"batch_orders": args.batch_orders}
    with tempfile.TemporaryDirectory(prefix="bench-score-") as tmp:
        start = time.perf_counter()
        partitions, table, summary = score_orders(export, model, params)
        scored = time.perf_counter()
        AtomicPartitionedDataset(
            path=f"{tmp}/scores",
            dataset={"type": "pandas.ParquetDataset", "save_args": {"index": False}},
            filename_suffix=".parquet",
        ).save(partitions)
        parquet = time.perf_counter()
        DuckDBTableDataset(
            filepath=f"{tmp}/scores.duckdb",
            table="scores",
            write_mode="replace_matching",
            match_columns=["model_name", "model_version"],
        ).save(table)
        done = time.perf_counter()
    seconds = {
        "score": scored - start,
        "parquet": parquet - scored,
        "duckdb": done - parquet,
        "end_to_end": done - start,
    }
    result = {
        "profile": profile,
        "orders": args.orders,
        "files": args.files,
        "batch_orders": args.batch_orders,
        "rejected": summary["rejected"],
        "seconds": seconds,
        "orders_per_second": {k: args.orders / v for k, v in seconds.items()},
    }
    print(result, flush=True)
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--files", type=int, default=2)
    parser.add_argument("--batch-orders", type=int, default=5_000)
    parser.add_argument(
        "--profiles", nargs="+", default=["production"], choices=PROFILES
    )
    parser.add_argument("--output", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = {
        "threads": args.threads,
        "torch": torch.__version__,
        "profiles": [run_profile(p, args) for p in args.profiles],
    }
    write_results(results, args.output)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
