"""Custom Kedro datasets."""

from tsa_kedro.datasets.tensor_bundle import TensorBundle, TensorBundleDataset

__all__ = ["TensorBundle", "TensorBundleDataset"]
