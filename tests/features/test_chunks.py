"""Downsampling, the chunk worker pool, merging and the split report."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import tsa_kedro
from tests.features.raw_builder import raw_frame, small_schema
from tsa_kedro.features.chunks import (
    STATS_KEY,
    ChunkContext,
    ChunkError,
    ChunkProcessor,
    Downsampling,
    arrow_threads_per_worker,
    downsample_negatives,
    worker_count,
)
from tsa_kedro.features.contract import TensorContractError
from tsa_kedro.features.merge import (
    chunk_stats,
    merge_bundles,
    summarise_chunks,
)
from tsa_kedro.features.tensors import TensorParams
from tsa_kedro.features.transforms import fit_transforms, vocabulary_size

SCHEMA = small_schema()


def _chunk(n: int, start: int, positive_every: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(start)
    orders = []
    for i in range(n):
        past = [
            {
                "order_id": f"h{j}",
                "ts": 500 + j,
                "cat0": "ab"[j % 2],
                "cat1": "x",
                "num0": j,
                "num1": 1.0,
            }
            for j in range(int(rng.integers(0, 6)))
        ]
        orders.append(
            {
                "order_id": start + i,
                "ts": 1000,
                "label": int(i % positive_every == 0),
                "values": {
                    "cat0": "abc"[i % 3],
                    "cat1": "x",
                    "num0": float(i),
                    "num1": 2.0,
                    "eng0": 1.0,
                },
                "history": {"cid": past, "ccid": past[-2:]},
            }
        )
    return raw_frame(orders, SCHEMA)


def _context(sampling=None) -> ChunkContext:
    cat_to_index, scaling, defaults = fit_transforms([_chunk(30, 0)], SCHEMA, {})
    return ChunkContext(
        schema_params=SCHEMA.to_params(),
        cat_to_index=cat_to_index,
        scaling=scaling,
        default_values=defaults,
        tensor_params=TensorParams(seq_len=4),
        downsampling=sampling or Downsampling(),
    )


def test_downsampling_reaches_the_target_rate_and_is_seeded():
    raw = _chunk(100, 0, positive_every=10)  # 10 positives, 90 negatives
    sampling = Downsampling(target_positive_rate=0.2, seed=7)
    kept, counts = downsample_negatives(raw, "is_fraud", sampling, "chunk-1")
    assert counts == {"positives": 10, "negatives": 90, "downsampled_negatives": 50}
    assert (kept["is_fraud"] == 1).sum() == 10
    assert (kept["is_fraud"] == 0).sum() == 40
    again, _ = downsample_negatives(raw, "is_fraud", sampling, "chunk-1")
    assert again["order_id"].tolist() == kept["order_id"].tolist()
    other, _ = downsample_negatives(raw, "is_fraud", sampling, "chunk-2")
    assert other["order_id"].tolist() != kept["order_id"].tolist()
    same, counts = downsample_negatives(raw, "is_fraud", Downsampling(), "chunk-1")
    assert len(same) == 100 and counts["downsampled_negatives"] == 0
    with pytest.raises(ValueError, match="target_positive_rate"):
        Downsampling.from_params({"target_positive_rate": 1.5})


def _module_file() -> str:
    return tsa_kedro.__file__


def test_spawned_workers_import_this_package():
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        assert pool.submit(_module_file).result() == tsa_kedro.__file__


def test_pool_results_equal_in_process_results(tmp_path: Path):
    sources = {}
    for i in range(4):
        path = tmp_path / f"chunk-{i}.parquet"
        _chunk(12, 100 * i).to_parquet(path)
        sources[f"chunk-{i}"] = functools.partial(pd.read_parquet, path)
    context = _context(Downsampling(target_positive_rate=0.5, seed=1))
    serial = ChunkProcessor(sources, context, workers=1)
    expected = {c: serial.result(c) for c in serial.chunk_ids}
    pooled = ChunkProcessor(sources, context, workers=2).lazy_results()
    assert sorted(pooled) == sorted(expected)
    for chunk_id in sorted(pooled):
        bundle = pooled[chunk_id]()
        assert set(bundle) == set(expected[chunk_id])
        for key in set(bundle) - {STATS_KEY}:
            np.testing.assert_array_equal(bundle[key], expected[chunk_id][key], key)
        stats, serial_stats = chunk_stats(bundle), chunk_stats(expected[chunk_id])
        assert stats.pop("seconds") > 0  # worker timings differ, nothing else may
        assert serial_stats.pop("seconds") > 0
        worker, parent = stats.pop("worker"), serial_stats.pop("worker")
        assert worker["pid"] != parent["pid"]  # converted in a worker process
        assert worker["peak_rss_bytes"] > 0 and parent["peak_rss_bytes"] > 0
        assert worker["arrow_pool"] == "system"  # started with malloc as Arrow's pool
        assert worker["arrow_threads"] == arrow_threads_per_worker(2)
        assert worker["cpu_seconds"] > 0 and parent["cpu_seconds"] > 0
        assert stats == serial_stats
        assert stats["chunk"] == chunk_id
        assert stats["rows_in"] == 12


# Run as a main script: it notes each process that runs it, then converts one chunk
# whose source is a library function and one whose source is defined in the script.
MAIN_SCRIPT = """
import functools, json, os, sys
import pandas as pd
with open(os.environ["RUNS_OF_MAIN"], "a") as runs:
    runs.write(f"{os.getpid()}\\n")

def load_here(path):  # only a process that ran this script can call it
    return pd.read_parquet(path)

if __name__ == "__main__":
    from tests.features.test_chunks import _chunk, _context
    from tsa_kedro.features.chunks import ChunkProcessor
    from tsa_kedro.features.merge import chunk_stats
    folder = sys.argv[1]
    _chunk(5, 0).to_parquet(f"{folder}/a.parquet")
    _chunk(7, 50).to_parquet(f"{folder}/b.parquet")
    sources = {
        "a": functools.partial(pd.read_parquet, f"{folder}/a.parquet"),
        "b": functools.partial(load_here, f"{folder}/b.parquet"),
    }
    processor = ChunkProcessor(sources, _context(), workers=2)
    stats = {c: chunk_stats(processor.result(c)) for c in ("a", "b")}
    print(json.dumps({
        "parent": os.getpid(),
        "main_file": sys.modules["__main__"].__file__,
        "chunks": {c: [s["worker"]["pid"], s["rows_out"]] for c, s in stats.items()},
    }))
"""


def test_workers_do_not_rerun_the_main_script(tmp_path: Path):
    """Under ``kedro run`` the main script is the ``kedro`` command: a spawned worker
    would import Kedro's CLI before its first chunk. Workers skip it; a source that
    needs the script is loaded in the parent and its frame sent."""
    script = tmp_path / "main_script.py"
    script.write_text(textwrap.dedent(MAIN_SCRIPT))
    runs = tmp_path / "runs_of_main.txt"
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "RUNS_OF_MAIN": str(runs), "PYTHONPATH": f"{root}:{root}/src"}
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert runs.read_text().split() == [str(result["parent"])]  # the parent alone
    assert result["main_file"] == str(script)  # the main module is restored
    for chunk, rows in (("a", 5), ("b", 7)):
        pid, rows_out = result["chunks"][chunk]
        assert pid != result["parent"]  # both converted in a worker
        assert rows_out == rows


def test_pool_results_come_through_files_removed_once_mapped():
    sources = {f"chunk/{i}": _chunk(6, 10 * i) for i in range(3)}  # not file names
    processor = ChunkProcessor(sources, _context(), workers=2)
    folder = Path(processor._spill_dir)
    first = processor.result("chunk/0")
    assert folder.is_dir()
    assert not list(folder.glob("000000.*"))  # unlinked as soon as mapped
    rest = [processor.result(c) for c in ("chunk/1", "chunk/2")]
    assert not folder.exists()  # the last result closes the pool and the folder
    serial = ChunkProcessor(sources, _context(), workers=1)
    for chunk_id, bundle in zip(sorted(sources), [first, *rest], strict=True):
        expected = serial.result(chunk_id)
        for key in set(expected) - {STATS_KEY}:
            np.testing.assert_array_equal(bundle[key], expected[key], key)
    first["X_num"][:] = 0  # copy-on-write: the arrays are the caller's to change


def test_a_result_that_cannot_be_written_names_the_chunk():
    processor = ChunkProcessor(
        {"chunk-a": _chunk(3, 0), "chunk-b": _chunk(3, 10)}, _context(), workers=2
    )
    Path(processor._spill_dir).rmdir()
    with pytest.raises(ChunkError, match="chunk 'chunk-a': cannot write its result"):
        processor.result("chunk-a")


def test_a_failing_chunk_is_named():
    bad = _chunk(3, 0).drop(columns=["ccid_hist_ts"])
    context = _context()
    sources = {"chunk-a": _chunk(3, 10), "chunk-b": bad, "chunk-c": _chunk(3, 20)}
    processor = ChunkProcessor(sources, context, workers=2)
    processor.result("chunk-a")
    with pytest.raises(ChunkError, match="chunk 'chunk-b'.*ccid_hist_ts"):
        processor.result("chunk-b")
    with pytest.raises(ChunkError, match="chunk 'x'"):
        ChunkProcessor({"x": bad}, context, workers=1).result("x")


def test_arrow_threads_share_out_the_cores():
    cores = worker_count(None)
    assert arrow_threads_per_worker(1) == cores
    assert arrow_threads_per_worker(cores) == 1
    assert arrow_threads_per_worker(4 * cores) == 1  # never none
    if cores >= 4:
        assert arrow_threads_per_worker(2) == cores // 2


def test_worker_count():
    assert worker_count(None) >= 1
    assert worker_count(3) == 3
    with pytest.raises(ValueError, match="workers"):
        worker_count(0)


def _bundles(context: ChunkContext, n_chunks: int = 3) -> dict[str, dict]:
    processor = ChunkProcessor(
        {f"c{i}": _chunk(8, 10 * i) for i in range(n_chunks)}, context
    )
    return {c: processor.result(c) for c in processor.chunk_ids}


def test_merge_concatenates_in_chunk_order_and_drops_stats():
    context = _context()
    bundles = _bundles(context)
    vocab = vocabulary_size(context.cat_to_index)
    merged = merge_bundles(bundles, SCHEMA, 4, vocab)
    assert STATS_KEY not in merged
    for key, array in merged.items():
        np.testing.assert_array_equal(
            array, np.concatenate([bundles[c][key] for c in sorted(bundles)]), key
        )
        assert array.dtype.kind == bundles["c0"][key].dtype.kind


@pytest.mark.parametrize(
    ("key", "corrupt", "message"),
    [
        (
            "X_seq_num_cid",
            lambda a: np.where(a == 1.0, np.nan, a).astype(a.dtype),
            "NaN",
        ),
        ("X_seq_cat_ccid", lambda a: a + 1000, "outside the vocabulary"),
        ("Y", lambda a: (a + 2).astype(np.int8), "labels outside"),
        ("X_num", lambda a: a.astype(np.float64), "dtype float64"),
        ("X_seq_cat_cid", lambda a: a[:, 1:], "shape"),
        ("order_id", lambda a: a[1:], "expected unicode"),
    ],
)
def test_validation_names_chunk_and_array(key, corrupt, message):
    context = _context()
    bundles = _bundles(context)
    bundles["c1"] = {**bundles["c1"], key: corrupt(bundles["c1"][key])}
    vocab = vocabulary_size(context.cat_to_index)
    with pytest.raises(TensorContractError, match=rf"'c1', array '{key}'.*{message}"):
        merge_bundles(bundles, SCHEMA, 4, vocab)


def test_missing_array_and_wrong_seq_len_are_named():
    context = _context()
    bundles = _bundles(context, 1)
    vocab = vocabulary_size(context.cat_to_index)
    with pytest.raises(TensorContractError, match="'c0', array 'X_seq_cat_cid'.*shape"):
        merge_bundles(bundles, SCHEMA, 5, vocab)
    del bundles["c0"]["Y"]
    with pytest.raises(TensorContractError, match="'c0', array 'Y': missing"):
        merge_bundles(bundles, SCHEMA, 4, vocab)


def test_report_aggregates_chunk_statistics():
    context = _context(Downsampling(target_positive_rate=0.5, seed=2))
    bundles = _bundles(context)
    report = summarise_chunks([chunk_stats(b) for b in bundles.values()])
    assert report["rows_in"] == 24
    assert report["rows_out"] == sum(len(b["Y"]) for b in bundles.values())
    dropped = sum(report["dropped"].values()) + report["downsampled_negatives"]
    assert report["rows_in"] - report["rows_out"] == dropped
    positives = sum(int(b["Y"].sum()) for b in bundles.values())
    assert report["positive_rate_after_downsampling"] == positives / report["rows_out"]
    assert report["positive_rate_before_downsampling"] == pytest.approx(6 / 24)
    assert report["unseen_categories"]["cat0"]["rate"] == 0.0
    assert sum(report["time_delta"]["histogram"]) == report["time_delta"]["count"]
    json.dumps(report)
