"""``TensorChunksDataset``: tensor chunks whose producers write their own files.

A ``PartitionedDataset`` of ``TensorBundleDataset`` partitions (one bundle directory
per chunk, listed by its ``manifest.json``). Saving a plain mapping of bundles (or of
callables returning bundles) works as ``PartitionedDataset`` does. Saving the lazy
results of the preprocessing engines (anything with a ``stage_into`` method) first
tells them where each chunk goes, before any chunk is produced; each worker then
writes its chunk's arrays straight to that location under a staging name
(``TensorBundleDataset.stage``) and hands back only a ``StagedBundle`` (paths, shapes,
counts), which this dataset commits chunk by chunk in chunk order: the manifest, and
locally the rename of the staging directory into place. No array passes through the
process that saves.

On several hosts of one SageMaker processing job (``tsa_kedro.hosts``), each host saves
only its share of the chunks into the same location, and no chunk is visible until all
of them are:

1. every host first deletes the chunk manifests found under the location, so that
   nothing of an earlier save still reads as a result;
2. it stages its chunks' arrays at their final place (no manifest) and then writes
   its part, ``_hosts/<host>.json``: the job's id and each chunk's ``StagedBundle``;
3. a host that then finds the parts of every host of its job (the last to finish; two
   finishing together both do it, with the same outcome) commits every chunk in chunk
   order, then removes ``_hosts`` and whatever else of the location is not a chunk.

The committed location holds the same files as a one-host save of the same chunks.
``_hosts`` is removed last, so while it is there (a host failed, or the commit stopped
half-way) loading refuses and names the hosts whose parts are there; a host that fails
leaves no manifest behind either (steps 1 and 3). A rerun is a new job, whose hosts
ignore the parts of earlier jobs.
"""

from __future__ import annotations

import json
import os
from copy import deepcopy
from pathlib import PurePosixPath
from typing import Any

from kedro.io.core import DatasetError
from kedro_datasets.partitions import PartitionedDataset

from tsa_kedro.datasets.tensor_bundle import (
    MANIFEST,
    StagedBundle,
    TensorBundleDataset,
)
from tsa_kedro.hosts import HostShard, current_job, current_shard

PARTS = "_hosts"


class TensorChunksDataset(PartitionedDataset):
    """Partitions of ``TensorBundleDataset``; producers may write them directly.

    Takes the arguments of ``partitions.PartitionedDataset``; ``dataset`` defaults to
    ``tsa_kedro.datasets.TensorBundleDataset`` and ``filename_suffix`` to
    ``/manifest.json``.

    Rejected (``DatasetError``): a ``dataset`` that is not a ``TensorBundleDataset``,
    and a ``filename_suffix`` other than ``/manifest.json`` (the manifest is what makes
    a chunk visible).

    Example catalog entry:

    .. code-block:: yaml

        train.tensor_chunks:
          type: tsa_kedro.datasets.TensorChunksDataset
          path: ${globals:data_root}/05_model_input/train/tensor_chunks
          overwrite: true
    """

    def __init__(
        self,
        *,
        path: str,
        dataset: str | type | dict[str, Any] = TensorBundleDataset,
        filename_suffix: str = "/" + MANIFEST,
        **kwargs: Any,
    ):
        super().__init__(
            path=path, dataset=dataset, filename_suffix=filename_suffix, **kwargs
        )
        if not issubclass(self._dataset_type, TensorBundleDataset):
            raise DatasetError(
                f"TensorChunksDataset at {path}: dataset must be a "
                f"TensorBundleDataset, got {self._dataset_type.__name__}"
            )
        if filename_suffix != "/" + MANIFEST:
            raise DatasetError(
                f"TensorChunksDataset at {path}: filename_suffix must be "
                f"'/{MANIFEST}', got {filename_suffix!r}"
            )

    def bundle_arguments(self, chunk_id: str) -> dict[str, Any]:
        """The ``TensorBundleDataset`` arguments of one chunk (picklable)."""
        kwargs = deepcopy(self._dataset_config)
        kwargs[self._filepath_arg] = self._join_protocol(
            self._partition_to_path(chunk_id)
        )
        return kwargs

    def save(self, data: dict[str, Any]) -> None:
        """Save the chunks; engines' lazy results write their own arrays (module
        doc), so only their manifests are written here. On one of several hosts,
        ``data`` is this host's share and the split is committed once every host has
        staged its share (module doc).

        Raises:
            ShardConfigError: On several hosts, the job's description is unusable.
            DatasetError: A chunk cannot be written (as ``TensorBundleDataset``).
        """
        shard = current_shard()
        if shard.sharded:
            self._save_share(data, shard, current_job())
            return
        stage_into = getattr(data, "stage_into", None)
        if callable(stage_into):
            stage_into({chunk_id: self.bundle_arguments(chunk_id) for chunk_id in data})
        super().save(data)

    def _bundle(self, chunk_id: str) -> TensorBundleDataset:
        return self._dataset_type(**self.bundle_arguments(chunk_id))

    def _part_path(self, host: str) -> str:
        return f"{self._normalized_path.rstrip('/')}/{PARTS}/{host}.json"

    def _save_share(self, data: dict[str, Any], shard: HostShard, job: str) -> None:
        fs = self._filesystem
        root = self._normalized_path.rstrip("/")
        if fs.exists(root):  # step 1: nothing of an earlier save stays visible
            committed = [p for p in fs.find(root) if p.endswith("/" + MANIFEST)]
            if committed:
                fs.rm(committed)
        stage_into = getattr(data, "stage_into", None)
        if callable(stage_into):
            stage_into({chunk_id: self.bundle_arguments(chunk_id) for chunk_id in data})
        staged: dict[str, StagedBundle] = {}
        try:
            for chunk_id in sorted(data):
                value = data[chunk_id]
                value = value() if callable(value) else value
                if not isinstance(value, StagedBundle):
                    value = self._bundle(chunk_id).stage(value)
                staged[chunk_id] = value
            part = {
                "job": job,
                "host": shard.host,
                "chunks": {
                    chunk_id: {
                        "target": bundle.target,
                        "location": bundle.location,
                        "entries": bundle.entries,
                    }
                    for chunk_id, bundle in staged.items()
                },
            }
            fs.makedirs(f"{root}/{PARTS}", exist_ok=True)
            with fs.open(self._part_path(shard.host), "w") as stream:
                json.dump(part, stream)
        except BaseException:
            for chunk_id, bundle in staged.items():
                self._bundle(chunk_id).discard(bundle)
            raise
        self._commit_when_complete(shard, job)
        self._invalidate_caches()

    def _commit_when_complete(self, shard: HostShard, job: str) -> None:
        fs = self._filesystem
        root = self._normalized_path.rstrip("/")
        fs.invalidate_cache(root)
        parts = []
        try:
            for path in fs.find(f"{root}/{PARTS}"):
                with fs.open(path, "r") as stream:
                    part = json.load(stream)
                if part.get("job") == job:
                    parts.append(part)
        except FileNotFoundError:
            return  # another host of this job has just committed and cleaned up
        if len({part["host"] for part in parts}) < shard.count:
            return  # another host of this job has yet to stage its chunks
        chunks = {
            chunk_id: StagedBundle(**staged)
            for part in parts
            for chunk_id, staged in part["chunks"].items()
        }
        for chunk_id in sorted(chunks):  # step 3
            staged = chunks[chunk_id]
            try:
                self._bundle(chunk_id).save(staged)
            except FileNotFoundError as error:
                # locally, another host finishing at the same time may have moved the
                # staged directory into place first
                if not os.path.exists(f"{staged.target}/{MANIFEST}"):
                    raise DatasetError(
                        f"cannot commit chunk {chunk_id!r} of '{self._path}': its "
                        f"staged files are gone ({error})"
                    ) from error
        kept = {PurePosixPath(chunk_id).parts[0] for chunk_id in chunks}
        fs.invalidate_cache(root)
        for path in fs.ls(root, detail=False):
            if PurePosixPath(path).name not in kept:
                try:
                    fs.rm(path, recursive=True)
                except FileNotFoundError:
                    pass  # removed by another host finishing at the same time

    def load(self) -> dict[str, Any]:
        """The committed chunks, by chunk id.

        Raises:
            DatasetError: No chunk is committed, or a multi-host save has not
                finished (its ``_hosts`` parts are still there, even if some chunks
                were committed before the committing host stopped); the message names
                the hosts whose parts are there.
        """
        fs = self._filesystem
        parts = f"{self._normalized_path.rstrip('/')}/{PARTS}"
        fs.invalidate_cache(parts)
        if fs.exists(parts):
            hosts = sorted(PurePosixPath(p).stem for p in fs.find(parts))
            raise DatasetError(
                f"the tensor chunks in '{self._path}' are not committed: a multi-host "
                f"build did not finish (parts of hosts {hosts} in {parts}); rerun the "
                f"build step"
            )
        return super().load()
