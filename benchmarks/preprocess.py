"""Preprocessing throughput and memory: vectorised builder against the per-order baseline.

Run from the project root (by hand, never in CI)::

    PYTHONPATH=src .venv/bin/python -m benchmarks.preprocess            # both profiles
    PYTHONPATH=src .venv/bin/python -m benchmarks.preprocess --profile production
    PYTHONPATH=src .venv/bin/python -m benchmarks.preprocess --chunks 2 --rows 200  # smoke

For each profile (``default``: the widths of ``conf/base/parameters.yml``, seq_len 32;
``production``: 109 categorical / 67 numerical / 297 engineered features, seq_len 51,
histories of about 25 orders) it builds random raw chunks that follow the normalised raw
contract, fits the transforms on one chunk, and measures in the same run:

- the per-order reference implementation (``tests/features/reference.py``), orders/s;
- ``build_tensors`` in-process, orders/s (the ratio to the reference is the speed-up),
  on object-string columns (what ``pd.read_parquet`` gives by default) and on
  Arrow-backed columns (``dtype_backend="pyarrow"``, no conversion needed);
- the chunk pool (``ChunkProcessor``, spawn) with 1 and 2 workers over the same chunks
  read from Parquet Arrow-backed, as the ``raw_chunks`` datasets load them, saved by
  ``TensorChunksDataset`` as the pipeline saves them (each worker writes its chunk's
  tensors in place, the parent commits), orders/s overall and per worker (worker
  start-up included), and the peak RSS of each worker process against the output
  bytes of the chunks it wrote;
- where the pool's time goes, from each chunk's start time: the start-up (until the
  last worker began its first chunk) and orders/s after it; the cores a worker kept
  busy while converting (Arrow's threads beside the converting one: one worker alone
  has every core for them, a pool worker its share, ``arrow_threads_per_worker``) and
  orders per CPU-second; and the ceiling two
  workers could reach on this machine: two processes started and warmed beforehand,
  each converting its own copy of the same chunks, against one (no pool, no parent);
- how results reach the parent, in turns with 2 workers and each result saved as the
  tensor dataset saves it: mapped from the files the workers write
  (``ChunkProcessor``) against pickled back through the pool's pipe (``transport``);
- peak RSS of a fresh worker process reading, converting and writing (staging) one
  chunk, against the chunk's output tensor bytes (target: the increment over the worker's start-up RSS at
  most 3x), with the Parquet chunk read as Python-object text and as Arrow-backed text.
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import yaml

from tests.features.reference import ReferencePreprocessor
from tsa_kedro.datasets import TensorBundleDataset, TensorChunksDataset
from tsa_kedro.datasets.arrow_parquet import ArrowParquetDataset
from tsa_kedro.features import chunks as chunks_module
from tsa_kedro.features.chunks import (
    STATS_KEY,
    ChunkContext,
    ChunkProcessor,
    Downsampling,
)
from tsa_kedro.features.tensors import TensorParams, build_tensors, prepare_transforms
from tsa_kedro.features.transforms import fit_transforms
from tsa_kedro.schema import ID_TYPES, RawSchema

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PROFILES = {
    "default": {
        "seq_len": 32,
        "history_mean": 12,
        "chunk_rows": 4000,
        "reference_rows": 400,
    },
    "production": {
        "seq_len": 51,
        "history_mean": 25,
        "chunk_rows": 1500,
        "reference_rows": 60,
        "widths": (109, 67, 297),
    },
}
REPEATS = 3
VOCABULARY = 60  # distinct values per categorical feature
NULL_RATE = 0.02


def profile_schema(profile: dict[str, Any]) -> RawSchema:
    """The project's raw schema, or one of the production widths."""
    params = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters.yml").read_text())
    schema = params["raw_schema"]
    if "widths" in profile:
        n_cat, n_num, n_eng = profile["widths"]
        schema |= {
            "cat_features": [f"cat_{i:03d}" for i in range(n_cat)],
            "num_features": [f"num_{i:03d}" for i in range(n_num)],
            "eng_features": [f"eng_{i:03d}" for i in range(n_eng)],
        }
    return RawSchema.from_params(schema)


def _joined(tokens: np.ndarray, lengths: np.ndarray, sep: str) -> pa.Array:
    """Join flat tokens into one text per row (``lengths`` tokens each)."""
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    lists = pa.ListArray.from_arrays(pa.array(offsets), pa.array(tokens))
    return pc.binary_join(lists, sep)


def random_raw_chunk(
    schema: RawSchema, rows: int, history_mean: int, seed: int
) -> pd.DataFrame:
    """Random orders in the normalised raw form, built column by column."""
    rng = np.random.default_rng(seed)
    null_token = schema.null_tokens[-1]
    now = 1_700_000_000 + rng.integers(0, 10**7, rows)
    columns: dict[str, Any] = {
        schema.order_id: np.char.add("o", np.arange(rows).astype(str)).astype(object),
        schema.id_columns["cid"]: rng.integers(0, 10**6, rows)
        .astype(str)
        .astype(object),
        schema.id_columns["ccid"]: rng.integers(0, 10**6, rows)
        .astype(str)
        .astype(object),
        schema.timestamp: now.astype(np.int64),
        schema.label: pd.array((rng.random(rows) < 0.05).astype(np.int8), dtype="Int8"),
    }
    for feature in schema.cat_features:
        values = np.char.add("v", rng.integers(0, VOCABULARY, rows).astype(str)).astype(
            object
        )
        values[rng.random(rows) < NULL_RATE] = None
        columns[feature] = values
    for feature in (*schema.num_features, *schema.eng_features):
        values = rng.normal(100, 30, rows).round(2)
        values[rng.random(rows) < NULL_RATE] = np.nan
        columns[feature] = values
    for id_type in ID_TYPES:
        lengths = rng.poisson(history_mean, rows)
        total = int(lengths.sum())
        row_of = np.repeat(np.arange(rows), lengths)
        ages = np.sort(rng.integers(1, 10**7, total))[::-1]  # oldest first per row
        times = (now[row_of] - ages).astype(str)
        columns[schema.history_timestamp_column(id_type)] = _joined(
            times, lengths, schema.separator
        ).to_pandas()
        ids = np.char.add("h", rng.integers(0, 10**8, total).astype(str))
        columns[schema.history_order_id_column(id_type)] = _joined(
            ids, lengths, schema.separator
        ).to_pandas()
        for feature in schema.cat_features:
            tokens = np.char.add("v", rng.integers(0, VOCABULARY, total).astype(str))
            tokens[rng.random(total) < NULL_RATE] = null_token
            columns[schema.history_column(id_type, feature)] = _joined(
                tokens, lengths, schema.separator
            ).to_pandas()
        for feature in schema.num_features:
            tokens = rng.normal(100, 30, total).round(2).astype(str)
            tokens[rng.random(total) < NULL_RATE] = ""
            columns[schema.history_column(id_type, feature)] = _joined(
                tokens, lengths, schema.separator
            ).to_pandas()
    return pd.DataFrame(columns)[schema.all_columns()]


def _timed(function: Any) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def _bundle_bytes(bundle: dict[str, np.ndarray]) -> int:
    return sum(a.nbytes for k, a in bundle.items() if k != "stats_json")


def _status_bytes(field: str) -> int:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in bytes.

    ``VmHWM`` is the peak of this address space; unlike ``ru_maxrss`` it does not
    inherit the parent's peak across fork and exec.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _rss_worker(
    path: str, context: ChunkContext, queue: multiprocessing.Queue, backend: str
) -> None:
    """In a fresh process: convert one chunk, report start-up and peak RSS."""
    from tsa_kedro.features.chunks import process_chunk  # noqa: PLC0415

    base = _status_bytes("VmRSS")
    if backend == "numpy":
        load = functools.partial(pd.read_parquet, path)
    else:  # as the raw_chunks datasets load them
        load = ArrowParquetDataset(
            filepath=path, load_args={"dtype_backend": backend}
        ).load
    bundle = process_chunk("rss", load, context)
    output_bytes = _bundle_bytes(bundle)
    target = f"{Path(path).parent}/rss-{backend}"
    TensorBundleDataset(filepath=target).save(bundle)  # written as a worker writes it
    peak = _status_bytes("VmHWM")
    queue.put({"startup_rss": base, "peak_rss": peak, "output_bytes": output_bytes})


def measure_worker_memory(
    path: str, context: ChunkContext, backend: str
) -> dict[str, float]:
    """Peak RSS of one spawned worker reading and converting one chunk.

    ``backend``: ``numpy`` reads text as Python objects (pandas' default, what
    ``pandas.ParquetDataset`` gives without ``load_args``), ``pyarrow`` keeps it in
    Arrow buffers (``load_args: {dtype_backend: pyarrow}``).
    """
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_rss_worker, args=(path, context, queue, backend))
    process.start()
    result = queue.get()
    process.join()
    result["increment_over_output"] = (
        result["peak_rss"] - result["startup_rss"]
    ) / result["output_bytes"]
    result["peak_over_output"] = result["peak_rss"] / result["output_bytes"]
    return result


def _pickled_in_worker(chunk_id: str, source: Any) -> dict[str, np.ndarray]:
    """A pool task that sends the whole bundle back through the pool's pipe."""
    state = chunks_module._WORKER_STATE
    return chunks_module.process_chunk(
        chunk_id, source, state["context"], state["prepared"]
    )


def _save_like_the_dataset(bundle: dict[str, np.ndarray], folder: str) -> None:
    for key, array in bundle.items():
        np.save(f"{folder}/{key}.npy", np.asarray(array), allow_pickle=False)


def time_transport(
    sources: dict[str, Any], context: ChunkContext, orders: int, tmp: str
) -> dict[str, float]:
    """Two workers, each chunk's result saved by the parent as the tensor dataset does
    (``np.save`` of every array), in turns: results mapped from the workers' files
    (``ChunkProcessor``) against pickled back through the pool's pipe. Orders/s."""
    saved = f"{tmp}/saved"
    os.makedirs(saved, exist_ok=True)
    seconds: dict[str, list[float]] = {"files": [], "pipe": []}
    for _ in range(2):
        start = time.perf_counter()
        results = ChunkProcessor(sources, context, workers=2).lazy_results()
        for chunk_id in sorted(results):
            _save_like_the_dataset(results[chunk_id](), saved)
        seconds["files"].append(time.perf_counter() - start)

        start = time.perf_counter()
        with ProcessPoolExecutor(
            2,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=chunks_module._init_worker,
            initargs=(context,),
        ) as pool:
            futures = {
                c: pool.submit(_pickled_in_worker, c, s) for c, s in sources.items()
            }
            for chunk_id in sorted(futures):
                _save_like_the_dataset(futures[chunk_id].result(), saved)
        seconds["pipe"].append(time.perf_counter() - start)
    rates = {k: orders / min(v) for k, v in seconds.items()}
    rates["files_over_pipe"] = rates["files"] / rates["pipe"]
    return rates


def _warm_worker(
    paths: list[str], context: ChunkContext, barrier: Any, queue: Any, folder: str
) -> None:
    """In a spawned process: convert and write one chunk to warm up, wait for the
    others, then time converting and writing every chunk in ``paths``."""
    prepared = chunks_module._prepare(context)

    def convert(i: int, path: str) -> None:
        load = ArrowParquetDataset(
            filepath=path, load_args={"dtype_backend": "pyarrow"}
        )
        bundle = chunks_module.process_chunk(f"c{i}", load.load, context, prepared)
        TensorBundleDataset(filepath=f"{folder}/{os.getpid()}-{i}").save(bundle)

    convert(-1, paths[0])
    barrier.wait()
    start = time.perf_counter()
    for i, path in enumerate(paths):
        convert(i, path)
    queue.put(time.perf_counter() - start)


def measure_ceiling(
    paths: list[str], context: ChunkContext, tmp: str, repeats: int = 2
) -> dict[str, Any]:
    """What two workers can give on this machine at most: one, then two processes,
    started and warmed before the clock starts, each converting and writing the same
    chunks (no pool, no parent). Ratio: two processes' orders/s over one's."""
    ctx = multiprocessing.get_context("spawn")
    folder = f"{tmp}/ceiling"
    os.makedirs(folder, exist_ok=True)
    ratios = []
    for _ in range(repeats):  # in turns
        seconds = {}
        for k in (1, 2):
            barrier, queue = ctx.Barrier(k), ctx.Queue()
            workers = [
                ctx.Process(
                    target=_warm_worker, args=(paths, context, barrier, queue, folder)
                )
                for _ in range(k)
            ]
            with chunks_module.worker_environment():
                for worker in workers:
                    worker.start()
            seconds[k] = max(queue.get() for _ in workers)
            for worker in workers:
                worker.join()
        ratios.append(2 * seconds[1] / seconds[2])
    return {"two_over_one": ratios}


def _pool_timeline(stats: list[dict[str, Any]], started: float) -> dict[str, float]:
    """From the chunks' start times: seconds from creating the pool until the last
    worker began its first chunk, and orders/s from the first chunk's start to the
    last one's end (start-up excluded)."""
    first_by_worker: dict[int, float] = {}
    for chunk in stats:
        pid, at = chunk["worker"]["pid"], chunk["worker"]["started_at"]
        first_by_worker[pid] = min(first_by_worker.get(pid, at), at)
    begin = min(first_by_worker.values())
    end = max(c["worker"]["started_at"] + c["seconds"] for c in stats)
    return {
        "start_up_seconds": max(first_by_worker.values()) - started,
        "orders_per_s_after_start_up": sum(c["rows_in"] for c in stats) / (end - begin),
    }


def _pool_worker_memory(stats: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per worker process: its peak RSS, its lowest RSS before a chunk (before the
    first), and the increment against the largest chunk's output bytes it wrote.
    With one worker the chunks run in this process, whose peak may predate them."""
    workers: dict[str, dict[str, float]] = {}
    for chunk in sorted(stats, key=lambda c: c["worker"]["rss_before_bytes"]):
        memory = chunk["worker"]
        worker = workers.setdefault(
            str(memory["pid"]),
            {
                "rss_before_first_chunk": memory["rss_before_bytes"],
                "peak_rss": 0,
                "largest_output_bytes": 0,
            },
        )
        worker["peak_rss"] = max(worker["peak_rss"], memory["peak_rss_bytes"])
        worker["largest_output_bytes"] = max(
            worker["largest_output_bytes"], chunk["output_bytes"]
        )
    for worker in workers.values():
        worker["increment_over_output"] = (
            worker["peak_rss"] - worker["rss_before_first_chunk"]
        ) / worker["largest_output_bytes"]
    return workers


def run_profile(name: str, chunks: int, rows: int | None = None) -> dict[str, Any]:
    profile = dict(PROFILES[name])
    if rows is not None:  # a smoke run: fewer orders per chunk and for the reference
        profile["chunk_rows"] = rows
        profile["reference_rows"] = min(profile["reference_rows"], rows)
    schema = profile_schema(profile)
    rows = profile["chunk_rows"]
    print(f"[{name}] building {chunks} random chunks of {rows} orders ...", flush=True)
    raw = [
        random_raw_chunk(schema, rows, profile["history_mean"], s)
        for s in range(chunks)
    ]
    cat_to_index, scaling, defaults = fit_transforms(
        raw[:1], schema, {"min_frequency": 1}
    )
    prepared = prepare_transforms(cat_to_index, scaling, defaults, schema)
    params = TensorParams(seq_len=profile["seq_len"], delta_cap_seconds=1e7)

    sample = raw[0].iloc[: profile["reference_rows"]]
    reference = ReferencePreprocessor(
        schema, cat_to_index, scaling, defaults, seq_len=params.seq_len, delta_cap=1e7
    )
    expected, _ = reference.tensors(sample)
    bundle, _ = build_tensors(sample, schema, prepared, params)
    for key, array in expected.items():  # same numbers, or the timing means nothing
        np.testing.assert_array_equal(bundle[key], array, key)

    arrow_backed = pa.Table.from_pandas(raw[0], preserve_index=False).to_pandas(
        types_mapper=pd.ArrowDtype
    )
    # interleaved and best of REPEATS: the machine is shared, so the fastest run is
    # the least disturbed one, and each method gets the same chances
    seconds: dict[str, list[float]] = {"reference": [], "objects": [], "arrow": []}
    for _ in range(REPEATS):
        seconds["reference"].append(_timed(lambda: reference.tensors(sample)))
        seconds["objects"].append(
            _timed(lambda: build_tensors(raw[0], schema, prepared, params))
        )
        seconds["arrow"].append(
            _timed(lambda: build_tensors(arrow_backed, schema, prepared, params))
        )
    reference_rate = len(sample) / min(seconds["reference"])
    vector_rate = rows / min(seconds["objects"])
    arrow_rate = rows / min(seconds["arrow"])
    bundle, _ = build_tensors(raw[0], schema, prepared, params)

    context = ChunkContext(
        schema_params=schema.to_params(),
        cat_to_index=cat_to_index,
        scaling=scaling,
        default_values=defaults,
        tensor_params=params,
        downsampling=Downsampling(),
    )
    pool = {}
    with tempfile.TemporaryDirectory() as tmp:
        sources = {}
        for i, chunk in enumerate(raw):
            path = f"{tmp}/part-{i:05d}.parquet"
            chunk.to_parquet(path)
            # as the raw_chunks datasets load them (load_args: dtype_backend: pyarrow)
            sources[f"part-{i:05d}"] = ArrowParquetDataset(
                filepath=path, load_args={"dtype_backend": "pyarrow"}
            ).load
        for workers in (1, 2):
            target = f"{tmp}/tensor_chunks-{workers}"
            start, started_at = time.perf_counter(), time.time()
            processor = ChunkProcessor(sources, context, workers=workers)
            TensorChunksDataset(path=target, overwrite=True).save(
                processor.lazy_results()
            )
            elapsed = time.perf_counter() - start
            stats = [
                json.loads(str(load()[STATS_KEY][()]))
                for load in TensorChunksDataset(path=target).load().values()
            ]
            busy = sum(s["seconds"] for s in stats)
            cpu = sum(s["worker"]["cpu_seconds"] for s in stats)
            pool[workers] = {
                # wall clock, worker start-up and the commits included
                "orders_per_s": rows * chunks / elapsed,
                # orders per second of worker time (reading the Parquet chunk included)
                "orders_per_worker_second": rows * chunks / busy,
                # cores a worker kept busy while converting (Arrow's threads too)
                "cores_per_worker": cpu / busy,
                "orders_per_cpu_second": rows * chunks / cpu,
                **_pool_timeline(stats, started_at),
                "worker_memory": _pool_worker_memory(stats),
            }
        pool["two_over_one"] = pool[2]["orders_per_s"] / pool[1]["orders_per_s"]
        pool["two_over_one_after_start_up"] = (
            pool[2]["orders_per_s_after_start_up"]
            / pool[1]["orders_per_s_after_start_up"]
        )
        pool["ceiling"] = measure_ceiling(
            [f"{tmp}/part-{i:05d}.parquet" for i in range(min(chunks, 4))],
            context,
            tmp,
        )
        pool["transport"] = time_transport(sources, context, rows * chunks, tmp)
        memory = {
            backend: measure_worker_memory(
                f"{tmp}/part-00000.parquet", context, backend
            )
            for backend in ("numpy", "pyarrow")
        }

    result = {
        "profile": name,
        "widths": [
            len(schema.cat_features),
            len(schema.num_features),
            len(schema.eng_features),
        ],
        "seq_len": params.seq_len,
        "history_mean": profile["history_mean"],
        "chunk_rows": rows,
        "chunks": chunks,
        "reference_orders_per_s": reference_rate,
        "vectorised_orders_per_s": vector_rate,
        "speedup_vs_reference": vector_rate / reference_rate,
        "vectorised_arrow_input_orders_per_s": arrow_rate,
        "speedup_arrow_input_vs_reference": arrow_rate / reference_rate,
        "pool": pool,
        "worker_memory": memory,
        "output_bytes_per_order": _bundle_bytes(bundle) / len(bundle["order_id"]),
    }
    print(json.dumps(result, indent=2), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=[*PROFILES, "all"], default="all")
    parser.add_argument("--chunks", type=int, default=4)
    parser.add_argument(
        "--rows", type=int, help="orders per chunk (default: the profile's)"
    )
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    names = list(PROFILES) if args.profile == "all" else [args.profile]
    results = [run_profile(name, args.chunks, args.rows) for name in names]
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
