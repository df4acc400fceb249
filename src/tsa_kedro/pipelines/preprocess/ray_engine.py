"""``preprocess.engine: ray``: one Ray task per raw chunk.

Where Ray runs is ``tsa_kedro.ray_cluster`` with the ``preprocess.ray`` parameters
(``address``, ``local_num_cpus``); an embedded instance is stopped after the last
chunk. Each task reserves ``preprocess.ray.num_cpus`` CPUs, loads its chunk with the
partition's own loader (a source that does not pickle is loaded by the driver and the
frame sent), converts it as a local worker does (``features.chunks.run_chunk``) and,
when the results are saved by ``TensorChunksDataset``, writes the chunk's arrays
straight to their final location under a staging name and returns only the
``StagedBundle``; the driver commits the chunks in chunk order. Every node must
therefore reach the chunks' storage at the same path (a shared folder or S3). Tasks
run ahead of the commits by at most as many chunks as the cluster has task slots;
when a chunk fails its ``ChunkError`` (naming it) is raised on the driver and chunks
staged but not committed are removed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from tsa_kedro.features.chunks import (
    ChunkContext,
    ChunkError,
    ChunkResults,
    ChunkSource,
    LazyResult,
    discard_staged,
    picklable,
    run_chunk,
)
from tsa_kedro.ray_cluster import connect, ray

logger = logging.getLogger(__name__)


def _convert(
    chunk_id: str,
    source: ChunkSource,
    context: ChunkContext,
    destination: Mapping[str, Any] | None,
) -> tuple[Any, str]:
    """A task's work: ``(outcome, "")``, or ``(None, message)`` when it failed."""
    try:
        return run_chunk(chunk_id, source, context, None, destination), ""
    except Exception as error:  # noqa: BLE001  (raised again by the driver)
        message = str(error) if isinstance(error, ChunkError) else None
        return None, message or f"chunk {chunk_id!r}: {type(error).__name__}: {error}"


class RayChunkProcessor:
    """``ChunkProcessor``'s interface (``lazy_results``, ``stage_into``, ``result``)
    on Ray tasks (module doc)."""

    def __init__(
        self,
        sources: Mapping[str, ChunkSource],
        context: ChunkContext,
        settings: Mapping[str, Any],
    ):
        self._sources = dict(sources)
        self._context = context
        self._settings = dict(settings)
        self._order = sorted(self._sources)
        self._position = {chunk_id: i for i, chunk_id in enumerate(self._order)}
        self._destinations: dict[str, Mapping[str, Any]] | None = None
        self._pending: dict[str, Any] = {}
        self._submitted = 0
        self._started: bool | None = None  # None: not connected yet
        self._window = 1
        self._task = None

    @property
    def chunk_ids(self) -> list[str]:
        """The chunk ids, sorted."""
        return list(self._order)

    def stage_into(self, destinations: Mapping[str, Mapping[str, Any]]) -> None:
        """As ``ChunkProcessor.stage_into``."""
        missing = sorted(set(self._order) - set(destinations))
        if missing:
            raise ValueError(f"no destination for chunks {missing}")
        if self._submitted:
            raise ValueError("destinations must be set before any chunk is processed")
        self._destinations = {c: dict(destinations[c]) for c in self._order}

    def _connect(self) -> None:
        self._started = connect(self._settings, "preprocessing")
        num_cpus = float(self._settings.get("num_cpus") or 1)
        slots = int(ray.cluster_resources().get("CPU", 1) // num_cpus)
        self._window = max(slots, 1)
        self._task = ray.remote(num_cpus=num_cpus, max_retries=0)(_convert)
        self._context_ref = ray.put(self._context)
        logger.info(
            "preprocessing %d chunks as Ray tasks, %d at a time",
            len(self._order),
            self._window,
        )

    def _submit_through(self, last: int) -> None:
        while self._submitted <= min(last, len(self._order) - 1):
            chunk_id = self._order[self._submitted]
            source = self._sources.pop(chunk_id)
            if callable(source) and not picklable(source):
                source = source()
            destination = (
                None if self._destinations is None else self._destinations[chunk_id]
            )
            self._pending[chunk_id] = self._task.remote(
                chunk_id, source, self._context_ref, destination
            )
            self._submitted += 1

    def result(self, chunk_id: str) -> Any:
        """As ``ChunkProcessor.result``.

        Raises:
            ChunkError: When the chunk failed (naming it); Ray is stopped if this
                processor started it, and staged chunks not handed out are removed.
        """
        if self._started is None:
            self._connect()
        self._submit_through(self._position[chunk_id] + self._window - 1)
        try:
            outcome, error = ray.get(self._pending.pop(chunk_id))
            if error:
                raise ChunkError(error)
        except BaseException:
            self.close()
            raise
        if not self._pending and self._submitted == len(self._order):
            self.close()
        return outcome

    def lazy_results(self) -> ChunkResults:
        """``{chunk_id: callable}`` for ``PartitionedDataset``'s lazy saving."""
        return ChunkResults(
            {chunk_id: LazyResult(self, chunk_id) for chunk_id in self._order},
            self.stage_into,
        )

    def close(self) -> None:
        """Wait for tasks still running, remove what they staged, and stop Ray if
        this processor started it."""
        for chunk_id, ref in self._pending.items():
            try:
                outcome, error = ray.get(ref)
            except Exception:  # noqa: BLE001,S112  (nothing was staged)
                continue
            if not error and self._destinations is not None:
                discard_staged(outcome, self._destinations[chunk_id])
        self._pending.clear()
        if self._started:
            ray.shutdown()
        self._started = False
