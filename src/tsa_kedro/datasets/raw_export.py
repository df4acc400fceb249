"""The raw order export: a folder (local or ``s3://``) of Parquet, CSV or TSV files."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
from kedro.io.core import DatasetError
from kedro_datasets.pandas import CSVDataset, ParquetDataset

from tsa_kedro.datasets.atomic_partitioned import AtomicPartitionedDataset

# Every column of a text export is read as text, with nothing turned into NaN:
# ingest parses and validates each column, and raw_schema.null_tokens decides what
# is missing ("" and "My Text String" in production).
_TEXT = {"dtype": str, "keep_default_na": False, "na_filter": False}
READERS: dict[str, tuple[type, dict[str, Any]]] = {
    ".parquet": (ParquetDataset, {}),
    ".csv": (CSVDataset, {"sep": ",", **_TEXT}),
    ".csv.gz": (CSVDataset, {"sep": ",", "compression": "gzip", **_TEXT}),
    ".tsv": (CSVDataset, {"sep": "\t", **_TEXT}),
    ".tsv.gz": (CSVDataset, {"sep": "\t", "compression": "gzip", **_TEXT}),
}


def _suffix(path: str) -> str | None:
    """The reader suffix ``path`` ends with (the longest that matches), if any."""
    matches = [s for s in READERS if path.endswith(s)]
    return max(matches, key=len) if matches else None


class RawExportDataset(AtomicPartitionedDataset):
    """A raw order export as partitions, whatever mix of file formats it holds.

    ``load`` finds every file below ``path`` (a folder, or one file) that ends in
    ``.parquet``, ``.csv``, ``.csv.gz``, ``.tsv`` or ``.tsv.gz`` and returns one loader
    per file, keyed by its path below ``path`` without the suffix. Text files are read
    with every column as text and no value turned into NaN. Files of other kinds
    (``_SUCCESS`` markers, manifests) are skipped. ``save`` (the synthetic generator)
    writes the configured ``dataset`` and ``filename_suffix`` all or nothing, like
    ``AtomicPartitionedDataset``.

    Rejected: a ``path`` that holds no file of a readable kind (``DatasetError``
    naming the path, the kinds read and the files found).

    Example catalog entry:

    .. code-block:: yaml

        raw_orders:
          type: tsa_kedro.datasets.raw_export.RawExportDataset
          path: ${runtime_params:raw_export, ${globals:data_root}/01_raw/orders}
          dataset:
            type: pandas.ParquetDataset   # what the synthetic generator writes
          filename_suffix: .parquet
    """

    def _list_partitions(self) -> list[str]:
        return [
            path
            for path in self._filesystem.find(self._normalized_path, **self._load_args)
            if _suffix(path) is not None
        ]

    def load(self) -> dict[str, Callable[[], pd.DataFrame]]:
        """One loader per readable file below ``path``.

        Raises:
            DatasetError: No readable file is there.
        """
        partitions = {}
        for path in self._list_partitions():
            suffix = _suffix(path)
            reader, load_args = READERS[suffix]
            dataset = reader(
                filepath=self._join_protocol(path),
                load_args=dict(load_args),
                credentials=self._credentials or None,
                fs_args=self._fs_args or None,
            )
            key = self._path_to_partition(path)
            partitions[key[: -len(suffix)] if key.endswith(suffix) else key] = (
                dataset.load
            )
        if not partitions:
            found = self._filesystem.find(self._normalized_path)[:5]
            raise DatasetError(
                f"raw export '{self._path}' holds no {', '.join(READERS)} file "
                f"(found {found or 'nothing'})"
            )
        return partitions
