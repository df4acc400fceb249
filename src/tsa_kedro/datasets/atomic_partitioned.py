"""A partitioned dataset whose save is all or nothing."""

from __future__ import annotations

from typing import Any

from kedro.io.core import DatasetError
from kedro_datasets.partitions import PartitionedDataset

STAGING_SUFFIX = ".__staging__"


class AtomicPartitionedDataset(PartitionedDataset):
    """``PartitionedDataset`` that never leaves a half-written folder behind.

    ``save`` writes every partition into a sibling staging folder
    (``<path>.__staging__``), and only when all of them are written replaces the old
    folder with it. A failed save removes the staging folder and leaves the previous
    partitions untouched; a crashed one leaves only the staging folder, which the
    next save clears. Partitions of an earlier, longer save never survive.
    On object stores (``s3://``) the final move copies objects, so the window in
    which readers see a missing folder is longer, but they never see a mix.

    Example catalog entry:

    .. code-block:: yaml

        train.raw_chunks:
          type: tsa_kedro.datasets.atomic_partitioned.AtomicPartitionedDataset
          path: ${globals:data_root}/02_intermediate/train/raw_chunks
          dataset:
            type: pandas.ParquetDataset
          filename_suffix: .parquet
    """

    def save(self, data: dict[str, Any]) -> None:
        """Write all partitions of ``data``, then swap them in for the old ones.

        Raises:
            DatasetError: ``data`` has no partitions.
        """
        if not data:
            raise DatasetError(f"Refusing to save no partitions to '{self._path}'")
        final_path = self._path
        final = self._normalized_path
        self._path = final_path.rstrip(self._sep) + STAGING_SUFFIX
        staging = self._normalized_path
        fs = self._filesystem
        try:
            if fs.exists(staging):
                fs.rm(staging, recursive=True)
            super().save(data)
        except Exception:
            if fs.exists(staging):
                fs.rm(staging, recursive=True)
            raise
        finally:
            self._path = final_path
        if fs.exists(final):
            fs.rm(final, recursive=True)
        if self._protocol == "file":
            fs.mv(staging, final, recursive=True)  # one rename
        else:  # object stores have no folders to rename: copy every object over
            root = fs._strip_protocol(staging).rstrip("/")
            target = fs._strip_protocol(final).rstrip("/")
            for key in fs.find(staging):
                fs.copy(key, target + key[len(root) :])
            fs.rm(staging, recursive=True)
        self._invalidate_caches()
