"""Custom Kedro datasets."""

from tsa_kedro.datasets.tensor_bundle import (
    StagedBundle,
    TensorBundle,
    TensorBundleDataset,
)
from tsa_kedro.datasets.tensor_chunks import TensorChunksDataset

__all__ = ["StagedBundle", "TensorBundle", "TensorBundleDataset", "TensorChunksDataset"]
