"""``score.engine: ray``: the export scored by a pool of Ray Data actors.

Where Ray runs (``tsa_kedro.ray_cluster``, first that applies): ``score.ray.address``
(a cluster, e.g. ``127.0.0.1:6379`` or ``ray://head:10001``); the ``RAY_ADDRESS``
environment variable; otherwise an embedded Ray instance on this machine with
``score.ray.local_num_cpus`` CPUs (null: all cores), stopped after the run. Ray
listens on the machine's address, not the loopback one, with its token
authentication on. A Ray
instance already started in this process is used as it is. Usage statistics are off
unless ``RAY_USAGE_STATS_ENABLED`` says otherwise; the embedded instance has no
dashboard.

What runs where: read tasks load each export file with the catalog's own loader
(every column of a text file as text) and cut it into the local engine's batches;
``score.ray.concurrency`` actors, placed by Ray where ``score.ray.num_cpus`` CPUs
are free, each load the model once from ``score.model`` (``model_source``) and
score one batch per call through ``nodes.score_batch`` (``TSAPredictor.predict_frame``). Batches travel as pickled
frames, so dtypes arrive exactly as read. The driver collects the scored batches,
names them as the local engine does, and raises the first error an actor reports.
Every node must be able to read the export's files and ``score.model`` (the same
paths on every machine, S3, or the registry).
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import logging  # noqa: E402
import pickle  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable, Iterator, Mapping  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402
from urllib.parse import urlparse  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import ray  # noqa: E402

from tsa_kedro.pipelines.score.model_source import (  # noqa: E402
    ModelSourceError,
    ScoringModel,
    load_scoring_model,
)
from tsa_kedro.pipelines.score.nodes import (  # noqa: E402
    ScoreInputError,
    explain_top_k,
    file_batches,
    log_batch,
    score_batch,
)
from tsa_kedro.ray_cluster import connect  # noqa: E402

logger = logging.getLogger(__name__)

_NO_FILE_ROWS = -1  # the chunk number of an export file without orders
# Ray Data settings for the run (the process's own are restored afterwards).
_DATA_CONTEXT = {
    "enable_progress_bars": False,
    # The pool starts whole before scoring (or fails when the cluster cannot place it
    # within 600 s), so every actor takes batches from the first one on.
    "wait_for_min_actors_s": 600,
    # Every row is a whole batch: one row per Ray block, so any free actor can take
    # the next batch.
    "target_max_block_size": 1,
}


def _pack_error(error: Exception) -> bytes:
    """An actor's or read task's error, to be raised again by the driver."""
    try:
        packed = pickle.dumps(error)
        pickle.loads(packed)
    except Exception:  # noqa: BLE001  (an exception that does not survive pickling)
        packed = pickle.dumps(ScoreInputError(f"{type(error).__name__}: {error}"))
    return packed


def _no_batch(key: str, error: bytes) -> dict[str, Any]:
    return {
        "file": key,
        "chunk": _NO_FILE_ROWS,
        "file_rows": 0,
        "frame": b"",
        "error": error,
    }


def _read_file(
    row: dict[str, Any],
    loaders: Mapping[str, Callable[[], pd.DataFrame]],
    batch_orders: int,
) -> Iterator[dict[str, Any]]:
    """One export file as the local engine's batches, one row per batch."""
    key = row["file"]
    try:
        frame = loaders[key]()
    except Exception as error:  # noqa: BLE001  (raised again by the driver)
        yield _no_batch(key, _pack_error(error))
        return
    batches = file_batches(frame, batch_orders)
    if not batches:
        yield _no_batch(key, b"")
    for chunk, batch in enumerate(batches):
        yield {
            "file": key,
            "chunk": chunk,
            "file_rows": len(frame),
            "frame": pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL),
            "error": b"",
        }


class _Scorer:
    """A scoring actor: loads the model once, scores one batch per call and records
    the node it runs on."""

    def __init__(
        self,
        source: str,
        tracking_uri: str,
        device: str | None,
        identity: tuple[str, str],
        scored_at: pd.Timestamp,
        explain_top_k: int | None = None,
    ):
        self._scored_at = scored_at
        self._explain_top_k = explain_top_k
        self._node = ray.get_runtime_context().get_node_id()
        self._model: ScoringModel | None = None
        self._failure = b""
        try:
            model = load_scoring_model(source, tracking_uri, device)
            if (model.name, model.version) != tuple(identity):
                raise ModelSourceError(
                    f"parameter score.model: {source!r} is {model.name} version "
                    f"{model.version} on Ray node {self._node}, but {identity[0]} "
                    f"version {identity[1]} on the driver"
                )
            self._model = model
        except ModelSourceError as error:
            self._failure = _pack_error(error)

    def _score(
        self, key: str, chunk: int, frame: bytes, error: bytes
    ) -> tuple[bytes, bytes]:
        """``(scored batch, error)``, each pickled or empty."""
        if error or chunk == _NO_FILE_ROWS:
            return b"", error
        if self._failure:
            return b"", self._failure
        try:
            table = score_batch(
                self._model,
                pickle.loads(frame),
                key,
                self._scored_at,
                self._explain_top_k,
            )
        except ScoreInputError as failure:
            return b"", _pack_error(failure)
        return pickle.dumps(table, protocol=pickle.HIGHEST_PROTOCOL), b""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        out: dict[str, list] = {
            "file": [],
            "chunk": [],
            "file_rows": [],
            "node": [],
            "scored": [],
            "error": [],
        }
        for key, chunk, file_rows, frame, read_error in zip(
            batch["file"],
            batch["chunk"],
            batch["file_rows"],
            batch["frame"],
            batch["error"],
            strict=True,
        ):
            scored, error = self._score(str(key), int(chunk), frame, bytes(read_error))
            out["file"].append(str(key))
            out["chunk"].append(int(chunk))
            out["file_rows"].append(int(file_rows))
            out["node"].append(self._node)
            out["scored"].append(scored)
            out["error"].append(error)
        return out


def _portable(source: str) -> str:
    """``score.model`` as every node reads it: a local path made absolute."""
    if source.startswith("models:/") or urlparse(source).scheme not in ("", "file"):
        return source
    return str(Path(source.removeprefix("file://")).expanduser().resolve())


def score_on_ray(
    orders: Mapping[str, Callable[[], pd.DataFrame]],
    model: ScoringModel,
    score: Mapping[str, Any],
    batch_orders: int,
    scored_at: pd.Timestamp,
) -> tuple[dict[str, pd.DataFrame], dict[str, int], dict[str, int]]:
    """Score the export on Ray Data actors (module doc).

    Args:
        orders: The export's files (``RawExportDataset``: key to loader).
        model: The model loaded on the driver; every actor loads the same source and
            must find the same name and version.
        score: The ``score`` parameters (``model``, ``device``, ``ray``).
        batch_orders: Orders per batch (a batch never spans two files).
        scored_at: The time every row records.

    Returns:
        ``(partitions, files, nodes)``: the scored batches named as the local engine
        names them, the orders per file, and the batches each Ray node scored.

    Raises:
        ScoreInputError: A batch cannot be scored (naming the file and column).
        ModelSourceError: An actor cannot load ``score.model`` or finds another
            model there.
        Exception: Whatever a file's loader raised (as the local engine would).
    """
    settings = score["ray"]
    if not orders:
        return {}, {}, {}
    started = connect(settings, "scoring")
    context = ray.data.DataContext.get_current()
    previous = {name: getattr(context, name) for name in _DATA_CONTEXT}
    try:
        for name, value in _DATA_CONTEXT.items():
            setattr(context, name, value)
        actors = int(settings["concurrency"])
        dataset = ray.data.from_items(
            [{"file": key} for key in sorted(orders)], override_num_blocks=len(orders)
        )
        dataset = dataset.flat_map(
            _read_file,
            fn_kwargs={"loaders": dict(orders), "batch_orders": batch_orders},
            num_cpus=0,  # reading waits on storage; actors hold the CPUs
            compute=ray.data.TaskPoolStrategy(size=actors),
        )
        dataset = dataset.map_batches(
            _Scorer,
            fn_constructor_kwargs={
                "source": _portable(model.source),
                "tracking_uri": model.tracking_uri or "",
                "device": score.get("device"),
                "identity": (model.name, model.version),
                "scored_at": scored_at,
                "explain_top_k": explain_top_k(score),
            },
            batch_size=1,
            batch_format="numpy",
            # One batch at a time per actor: a free actor on any node takes the next.
            compute=ray.data.ActorPoolStrategy(
                size=actors, max_tasks_in_flight_per_actor=1
            ),
            num_cpus=float(settings["num_cpus"]),
        )
        scored: dict[tuple[str, int], pd.DataFrame] = {}
        files: dict[str, int] = {}
        nodes: Counter[str] = Counter()
        for row in dataset.iter_rows():
            if row["error"]:
                raise pickle.loads(row["error"])
            files[row["file"]] = int(row["file_rows"])
            if row["chunk"] != _NO_FILE_ROWS:
                scored[(row["file"], int(row["chunk"]))] = pickle.loads(row["scored"])
                nodes[row["node"]] += 1
    finally:
        for name, value in previous.items():
            setattr(context, name, value)
        if started:
            ray.shutdown()
    partitions: dict[str, pd.DataFrame] = {}
    for key, chunk in sorted(scored):
        name = f"batch-{len(partitions):05d}"
        partitions[name] = scored[(key, chunk)]
        log_batch(name, key, partitions[name])
    logger.info("Ray nodes and the batches they scored: %s", dict(nodes))
    return partitions, dict(sorted(files.items())), dict(sorted(nodes.items()))
