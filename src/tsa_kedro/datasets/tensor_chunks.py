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
"""

from __future__ import annotations

from copy import deepcopy
from typing import Any

from kedro.io.core import DatasetError
from kedro_datasets.partitions import PartitionedDataset

from tsa_kedro.datasets.tensor_bundle import MANIFEST, TensorBundleDataset


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
        doc), so only their manifests are written here."""
        stage_into = getattr(data, "stage_into", None)
        if callable(stage_into):
            stage_into({chunk_id: self.bundle_arguments(chunk_id) for chunk_id in data})
        super().save(data)
