"""The ``train`` pipeline."""

from tsa_kedro.pipelines.train.pipeline import create_pipeline

__all__ = ["create_pipeline"]
