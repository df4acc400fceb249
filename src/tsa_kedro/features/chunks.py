"""Chunk-level preprocessing: downsampling, tensor building and a bounded process pool.

``process_chunk`` is what one worker does with one raw chunk: seeded downsampling of
negatives (training split only), ``build_tensors``, and a JSON statistics record stored
in the chunk's bundle under ``stats_json`` (a 0-d text array), so that the per-split
report can be aggregated from the saved chunks alone; the record also holds the
chunk's output bytes and the converting process's id and peak memory.

A worker's peak memory: a chunk the worker loads is handed to ``build_tensors`` to be
consumed (each history column's text freed once staged), and Arrow allocates from
``malloc`` (``worker_environment``, ``system_allocator``), so the freed text is reused
by the tensors rather than kept by Arrow's own pool.

``ChunkProcessor`` runs ``process_chunk`` over many chunks in worker processes. Results
are handed out by ``result(chunk_id)`` in the order a consumer asks for them (sorted
chunk ids when ``PartitionedDataset`` saves them lazily); at most ``workers + 1`` chunks
are submitted ahead of the consumer, so the parent never holds more than that many
chunk results and each worker holds one chunk at a time.

A worker never sends its arrays back through the pool's pipe. When the results are
saved by ``TensorChunksDataset`` (the ``<split>.tensor_chunks`` datasets), the dataset
first tells the processor each chunk's final location (``stage_into``); a worker then
writes its chunk's arrays there under a staging name (``TensorBundleDataset.stage``)
and returns a ``StagedBundle`` (paths, dtypes, shapes, the chunk's counts), and the
parent only commits it (manifest, rename into place). A failed chunk raises
``ChunkError`` naming it; staged chunks that were not committed are removed. Without
a final location (results consumed in Python), a worker writes each array to a
``.npy`` file in the processor's spill folder (under ``TMPDIR``) and the parent maps
the files into memory and unlinks them at once.

This module imports neither Kedro nor R at import time (the tensor dataset is imported
where a chunk is written to it).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import pickle
import shutil
import sys
import tempfile
import time
import weakref
import zlib
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from tsa_kedro.features.tensors import (
    PreparedTransforms,
    TensorParams,
    build_tensors,
    prepare_transforms,
)
from tsa_kedro.schema import RawSchema

logger = logging.getLogger(__name__)

STATS_KEY = "stats_json"
ChunkSource = pd.DataFrame | Callable[[], pd.DataFrame]


class ChunkError(RuntimeError):
    """A whole chunk could not be preprocessed; the message names the chunk."""


@dataclass(frozen=True)
class Downsampling:
    """Seeded downsampling of negatives to a target positive rate.

    Attributes:
        target_positive_rate: Positive share wanted after downsampling; None disables.
        seed: Base seed; each chunk derives its own from it and its chunk id, so the
            result does not depend on which worker ran the chunk.
    """

    target_positive_rate: float | None = None
    seed: int = 0

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> Downsampling:
        """Build and validate from a ``preprocess.downsample.<split>`` mapping."""
        sampling = cls(**dict(params or {}))
        rate = sampling.target_positive_rate
        if rate is not None and not 0 < rate < 1:
            raise ValueError(
                f"downsample.target_positive_rate must be in (0, 1) or null, got {rate}"
            )
        return sampling


@dataclass(frozen=True)
class ChunkContext:
    """Everything a worker needs besides the chunk itself (picklable)."""

    schema_params: Mapping[str, Any]
    cat_to_index: Mapping[str, Mapping[str, int]]
    scaling: Mapping[str, Any]
    default_values: Mapping[str, Any]
    tensor_params: TensorParams
    downsampling: Downsampling
    labels: bool = True


def downsample_negatives(
    raw: pd.DataFrame,
    label_column: str,
    sampling: Downsampling,
    chunk_id: str,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Keep every positive and as many negatives as the target rate allows.

    Unlabelled rows are left alone (the label filter drops them later).

    Returns:
        The kept rows (original order) and counts ``positives``, ``negatives`` before
        downsampling and ``downsampled_negatives`` removed.
    """
    labels = raw[label_column].to_numpy(dtype=np.float64, na_value=np.nan)
    positive = labels == 1
    negative = labels == 0
    counts = {
        "positives": int(positive.sum()),
        "negatives": int(negative.sum()),
        "downsampled_negatives": 0,
    }
    rate = sampling.target_positive_rate
    if rate is None:
        return raw, counts
    wanted = round(counts["positives"] * (1 - rate) / rate)
    if wanted >= counts["negatives"]:
        return raw, counts
    rng = np.random.default_rng([sampling.seed, zlib.crc32(chunk_id.encode())])
    negatives = np.flatnonzero(negative)
    dropped = rng.choice(negatives, size=negatives.size - wanted, replace=False)
    keep = np.ones(len(raw), dtype=bool)
    keep[dropped] = False
    counts["downsampled_negatives"] = int(dropped.size)
    return raw.iloc[np.flatnonzero(keep)], counts


_WORKER_STATE: dict[str, Any] = {}


def _prepare(context: ChunkContext) -> tuple[RawSchema, PreparedTransforms]:
    schema = RawSchema.from_params(context.schema_params)
    prepared = prepare_transforms(
        context.cat_to_index, context.scaling, context.default_values, schema
    )
    return schema, prepared


def _init_worker(context: ChunkContext, arrow_threads: int | None = None) -> None:
    """Pool initializer: prepare the lookup arrays once per worker process, and size
    Arrow's thread pool (``arrow_threads``; None leaves Arrow's default, one thread
    per core)."""
    if arrow_threads is not None:
        pa.set_cpu_count(arrow_threads)
    _WORKER_STATE["context"] = context
    _WORKER_STATE["prepared"] = _prepare(context)


def arrow_threads_per_worker(workers: int) -> int:
    """Arrow threads for each of ``workers`` pool workers: the cores shared out.

    Arrow reads Parquet and converts columns on a thread pool of one thread per core:
    one process converting a production-width chunk (read, build, write) used 1.15
    cores of two. With a worker per core (the default), every worker's pool would
    hold a thread per core as well, so each worker gets its share of the cores and at
    least one thread.
    """
    return max(1, worker_count(None) // workers)


def process_chunk(
    chunk_id: str,
    source: ChunkSource,
    context: ChunkContext,
    prepared: tuple[RawSchema, PreparedTransforms] | None = None,
) -> dict[str, np.ndarray]:
    """Load, downsample and convert one chunk; the bundle carries ``stats_json``.

    Raises:
        ChunkError: Naming the chunk, when anything about it fails.
    """
    started_at = time.time()
    started, cpu_started = time.perf_counter(), time.process_time()
    rss_before = _memory_status("VmRSS")
    try:
        with system_allocator():
            rows_in, counts, bundle, stats = _convert(
                chunk_id, source, context, prepared
            )
    except Exception as exc:
        raise ChunkError(f"chunk {chunk_id!r}: {type(exc).__name__}: {exc}") from exc
    stats = {
        "chunk": chunk_id,
        **stats,
        "rows_in": rows_in,
        "positives_out": stats["positives"],
        **counts,
        "seconds": time.perf_counter() - started,
        "output_bytes": int(sum(array.nbytes for array in bundle.values())),
        # the process that converted the chunk: its memory before the chunk and its
        # peak so far (the chunk's own peak when this process has converted no other),
        # the pool Arrow's C++ code allocates from in it (``system``: malloc) and
        # Arrow's thread count; when it started the chunk (seconds since the epoch:
        # a run's timeline)
        "worker": {
            "pid": os.getpid(),
            "started_at": started_at,
            "rss_before_bytes": rss_before,
            "peak_rss_bytes": _memory_status("VmHWM"),
            "arrow_pool": os.environ.get(ARROW_POOL_VARIABLE, "default"),
            "arrow_threads": pa.cpu_count(),
            # its CPU time over the chunk, all threads (more than ``seconds``: Arrow's
            # threads ran beside the converting one)
            "cpu_seconds": time.process_time() - cpu_started,
        },
    }
    bundle[STATS_KEY] = np.array(json.dumps(stats))
    return bundle


def _convert(
    chunk_id: str,
    source: ChunkSource,
    context: ChunkContext,
    prepared: tuple[RawSchema, PreparedTransforms] | None,
) -> tuple[int, dict[str, int | None], dict[str, np.ndarray], dict[str, Any]]:
    """``process_chunk``'s work: its rows in, downsampling counts, bundle and
    ``build_tensors`` statistics."""
    schema, transforms = prepared or _prepare(context)
    raw = source() if callable(source) else source
    rows_in = len(raw)
    counts = {"positives": None, "negatives": None, "downsampled_negatives": 0}
    # a frame this call loaded or took is its own: its history text is freed as the
    # tensors are built (a frame passed in is left as it is)
    consume = callable(source)
    if context.labels:
        kept, counts = downsample_negatives(
            raw, schema.label, context.downsampling, chunk_id
        )
        if kept is not raw:  # some rows taken
            raw = kept.copy(deep=False)  # its own frame, not a view's
            consume = True
        del kept
    bundle, stats = build_tensors(
        raw,
        schema,
        transforms,
        context.tensor_params,
        labels=context.labels,
        consume=consume,
    )
    return rows_in, counts, bundle, stats


@contextmanager
def system_allocator() -> Iterator[None]:
    """Arrow allocates from the C library's allocator (``malloc``) inside the block.

    A chunk's raw text is read into Arrow buffers and, as its history columns are
    staged, freed while numpy allocates the tensors. Arrow's own pool (mimalloc)
    keeps what is freed for Arrow's later use, so the process's memory would hold
    the whole text next to the tensors; from ``malloc`` the freed text is given back
    or reused by numpy. Buffers are returned to the pool they came from, whenever
    they are freed.
    """
    previous = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(previous)


ARROW_POOL_VARIABLE = "ARROW_DEFAULT_MEMORY_POOL"


@contextmanager
def worker_environment() -> Iterator[None]:
    """Worker processes started inside the block use ``malloc`` for all of Arrow's
    allocations (``ARROW_DEFAULT_MEMORY_POOL=system``, read once when a process
    first allocates, hence set in the environment they start with).

    ``system_allocator`` cannot reach the allocations Arrow's C++ code makes from
    its own default pool (the Parquet reader's); with every allocation from
    ``malloc``, what reading a chunk frees is reused for its tensors. A value already
    set is kept. The calling process's environment is restored on leaving.
    """
    if ARROW_POOL_VARIABLE in os.environ:
        yield
        return
    os.environ[ARROW_POOL_VARIABLE] = "system"
    try:
        yield
    finally:
        os.environ.pop(ARROW_POOL_VARIABLE, None)


@contextmanager
def without_main_module() -> Iterator[None]:
    """Processes spawned inside the block do not re-run the parent's main script.

    A spawned process first imports the script its parent was started with, so that
    functions defined there can be unpickled. Under ``kedro run`` that script is the
    ``kedro`` command, and importing Kedro's CLI (and its logging set-up, which each
    worker announced in the log) made each pool start about 0.4 to 0.5 s later on two
    cores (docs/source/preprocessing.md); pool
    tasks live in this module and sources that need the script are loaded in the
    parent (``picklable(..., without_main=True)``), so workers need nothing from it.
    The main module's ``__file__`` and ``__spec__``, which tell ``multiprocessing``
    what to run, are hidden inside the block and restored on leaving.
    """
    main = sys.modules["__main__"]
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if k in vars(main)}
    main.__dict__.pop("__file__", None)
    main.__spec__ = None
    try:
        yield
    finally:
        main.__dict__.pop("__file__", None)
        main.__dict__.update(saved)


def _memory_status(field: str) -> int | None:
    """This process's resident memory now (``VmRSS``) or at its peak (``VmHWM``) in
    bytes, None where ``/proc`` does not say (not Linux)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def stage_chunk(
    chunk_id: str, bundle: dict[str, np.ndarray], destination: Mapping[str, Any]
) -> Any:
    """Write one chunk's arrays to its final location, uncommitted.

    Args:
        chunk_id: The chunk (named in errors).
        bundle: The chunk's bundle (``process_chunk``).
        destination: The chunk's ``TensorBundleDataset`` arguments
            (``TensorChunksDataset.bundle_arguments``).

    Returns:
        The ``StagedBundle``; its ``info`` holds the chunk's statistics.

    Raises:
        ChunkError: Naming the chunk and, through the dataset's error, the file that
            could not be written; nothing of the chunk is left behind.
    """
    from tsa_kedro.datasets.tensor_bundle import TensorBundleDataset  # noqa: PLC0415

    stats = json.loads(str(bundle[STATS_KEY][()]))
    try:
        dataset = TensorBundleDataset(**destination)
        return dataset.stage(bundle, info=stats)
    except Exception as exc:
        raise ChunkError(
            f"chunk {chunk_id!r}: cannot write its tensors to "
            f"{destination.get('filepath')}: {exc}"
        ) from exc


def discard_staged(staged: Any, destination: Mapping[str, Any]) -> None:
    """Remove a chunk staged by ``stage_chunk`` that will not be committed."""
    from tsa_kedro.datasets.tensor_bundle import TensorBundleDataset  # noqa: PLC0415

    TensorBundleDataset(**destination).discard(staged)


def run_chunk(
    chunk_id: str,
    source: ChunkSource,
    context: ChunkContext,
    prepared: tuple[RawSchema, PreparedTransforms] | None,
    destination: Mapping[str, Any] | None,
    spill_dir: str | None = None,
    stem: str = "",
) -> Any:
    """One chunk from raw source to where its consumer reads it.

    Returns:
        With a ``destination``, the chunk's ``StagedBundle`` (arrays written there);
        else with a ``spill_dir``, the paths of its spilled arrays (``spill``); else
        the bundle itself.

    Raises:
        ChunkError: Naming the chunk.
    """
    bundle = process_chunk(chunk_id, source, context, prepared)
    if destination is not None:
        return stage_chunk(chunk_id, bundle, destination)
    if spill_dir is None:
        return bundle
    try:
        return spill(bundle, spill_dir, stem)
    except OSError as exc:
        raise ChunkError(
            f"chunk {chunk_id!r}: cannot write its result to {spill_dir}: {exc}"
        ) from exc


def _process_in_worker(
    chunk_id: str,
    source: ChunkSource,
    destination: Mapping[str, Any] | None,
    spill_dir: str,
    stem: str,
) -> Any:
    return run_chunk(
        chunk_id,
        source,
        _WORKER_STATE["context"],
        _WORKER_STATE["prepared"],
        destination,
        spill_dir,
        stem,
    )


def spill(bundle: Mapping[str, np.ndarray], folder: str, stem: str) -> dict[str, str]:
    """Write every array of ``bundle`` to ``<folder>/<stem>.<key>.npy``.

    Returns:
        The file of each array, by key.
    """
    paths = {}
    for key, array in bundle.items():
        path = os.path.join(folder, f"{stem}.{key}.npy")
        np.save(path, array, allow_pickle=False)
        paths[key] = path
    return paths


def unspill(paths: Mapping[str, str]) -> dict[str, np.ndarray]:
    """Map the arrays written by ``spill`` into memory and unlink their files.

    The arrays stay valid after the unlink (the mapping keeps the data until the
    arrays are dropped); they are copy-on-write, so changing one never touches a file.
    Empty arrays, which cannot be mapped, are read.
    """
    bundle = {}
    try:
        for key, path in paths.items():
            try:
                bundle[key] = np.load(path, mmap_mode="c", allow_pickle=False)
            except ValueError:  # zero-length data cannot be mapped
                bundle[key] = np.load(path, allow_pickle=False)
    finally:
        for path in paths.values():
            if os.path.exists(path):
                os.remove(path)
    return bundle


def picklable(source: ChunkSource, without_main: bool = False) -> bool:
    """Whether a chunk's source pickles (else the frame it returns is sent).

    With ``without_main``, a source that refers to anything defined in the parent's
    main script (pickled as ``__main__.<name>``) does not count: pool workers do not
    run that script (``without_main_module``). A source whose pickle merely holds the
    text ``__main__`` is loaded in the parent too, which is only slower.
    """
    try:
        pickled = pickle.dumps(source)
    except Exception:  # any pickling failure means "send the data instead"
        return False
    return not (without_main and b"__main__" in pickled)


def worker_count(requested: int | None) -> int:
    """The configured worker count, or the number of cores when None."""
    if requested is None:
        if hasattr(os, "sched_getaffinity"):  # the cores this process may use
            return len(os.sched_getaffinity(0))
        return os.cpu_count() or 1
    if not isinstance(requested, int) or requested < 1:
        raise ValueError(f"preprocess.workers must be null or >= 1, got {requested!r}")
    return requested


class ChunkProcessor:
    """Processes chunks in a pool of worker processes with bounded look-ahead.

    With one worker the chunks are processed in the calling process when asked for.
    Sources that pickle (a partition's ``load`` method) are loaded by the worker;
    others (in-memory closures) are loaded in the parent and the DataFrame is sent.
    """

    def __init__(
        self,
        sources: Mapping[str, ChunkSource],
        context: ChunkContext,
        workers: int = 1,
        start_method: str = "spawn",
    ):
        self._sources = dict(sources)
        self._context = context
        self._order = sorted(self._sources)
        self._position = {chunk_id: i for i, chunk_id in enumerate(self._order)}
        self._workers = min(workers, max(len(self._order), 1))
        self._futures: dict[str, Future] = {}
        self._submitted = 0
        self._pool: ProcessPoolExecutor | None = None
        self._prepared = None
        self._destinations: dict[str, Mapping[str, Any]] | None = None
        self._spill_dir: str | None = None
        if self._workers > 1:
            self._spill_dir = tempfile.mkdtemp(prefix="tsa-chunks-")
            # removed by close(), or when the processor is dropped or Python exits
            self._remove_spill_dir = weakref.finalize(
                self, shutil.rmtree, self._spill_dir, True
            )
            self._pool = ProcessPoolExecutor(
                max_workers=self._workers,
                mp_context=multiprocessing.get_context(start_method),
                initializer=_init_worker,
                initargs=(context, arrow_threads_per_worker(self._workers)),
            )
        else:
            self._prepared = _prepare(context)

    @property
    def chunk_ids(self) -> list[str]:
        """The chunk ids, sorted."""
        return list(self._order)

    def _submit_through(self, last: int) -> None:
        while self._submitted <= min(last, len(self._order) - 1):
            chunk_id = self._order[self._submitted]
            source = self._sources.pop(chunk_id)
            if callable(source) and not picklable(source, without_main=True):
                source = source()
            # a worker is started here when needed
            with worker_environment(), without_main_module():
                self._futures[chunk_id] = self._pool.submit(
                    _process_in_worker,
                    chunk_id,
                    source,
                    self._destination(chunk_id),
                    self._spill_dir,
                    f"{self._submitted:06d}",  # chunk ids need not be file names
                )
            self._submitted += 1

    def stage_into(self, destinations: Mapping[str, Mapping[str, Any]]) -> None:
        """Write each chunk straight to its final location (module doc).

        Args:
            destinations: ``{chunk_id: TensorBundleDataset arguments}`` for every
                chunk; ``result`` then returns ``StagedBundle`` objects.

        Raises:
            ValueError: A chunk has no destination, or chunks were already started.
        """
        missing = sorted(set(self._order) - set(destinations))
        if missing:
            raise ValueError(f"no destination for chunks {missing}")
        if self._submitted or len(self._sources) < len(self._order):
            raise ValueError("destinations must be set before any chunk is processed")
        self._destinations = {c: dict(destinations[c]) for c in self._order}

    def _destination(self, chunk_id: str) -> Mapping[str, Any] | None:
        return None if self._destinations is None else self._destinations[chunk_id]

    def result(self, chunk_id: str) -> Any:
        """The bundle of ``chunk_id``, or its ``StagedBundle`` once ``stage_into``
        was called (each chunk can be asked for once).

        Raises:
            ChunkError: When the chunk failed; the pool is shut down and chunks staged
                but not handed out are removed.
        """
        if self._pool is None:
            return run_chunk(
                chunk_id,
                self._sources.pop(chunk_id),
                self._context,
                self._prepared,
                self._destination(chunk_id),
            )
        self._submit_through(self._position[chunk_id] + self._workers)
        try:
            outcome = self._futures.pop(chunk_id).result()
            if self._destinations is None:
                outcome = unspill(outcome)
        except BaseException:
            self.close()
            raise
        if not self._futures and self._submitted == len(self._order):
            self.close()
        return outcome

    def lazy_results(self) -> ChunkResults:
        """``{chunk_id: callable}`` for ``PartitionedDataset``'s lazy saving."""
        return ChunkResults(
            {chunk_id: LazyResult(self, chunk_id) for chunk_id in self._order},
            self.stage_into,
        )

    def close(self) -> None:
        """Stop the workers, drop pending work, remove chunks staged but not handed
        out and the spill folder."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
            for chunk_id, future in self._futures.items():
                if self._destinations is None or future.cancelled():
                    continue
                if future.exception() is None:
                    discard_staged(future.result(), self._destinations[chunk_id])
            self._futures.clear()
        if self._spill_dir is not None:
            self._remove_spill_dir()


class ChunkResults(dict):
    """``{chunk_id: callable}`` of an engine's lazy results; ``stage_into`` makes
    the workers write each chunk to its final location (``TensorChunksDataset``)."""

    def __init__(
        self,
        results: Mapping[str, Callable[[], Any]],
        stage_into: Callable[[Mapping[str, Mapping[str, Any]]], None],
    ):
        super().__init__(results)
        self._stage_into = stage_into

    def stage_into(self, destinations: Mapping[str, Mapping[str, Any]]) -> None:
        """Tell the engine each chunk's ``TensorBundleDataset`` arguments."""
        self._stage_into(destinations)


class LazyResult:
    """A zero-argument callable that fetches one chunk's result from a processor."""

    def __init__(self, processor: Any, chunk_id: str):
        self._processor = processor
        self._chunk_id = chunk_id

    def __call__(self) -> Any:
        return self._processor.result(self._chunk_id)
