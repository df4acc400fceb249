"""Merge the training tensor chunks into ``train.model_input``, validated."""

from tsa_kedro.pipelines.merge.pipeline import create_pipeline

__all__ = ["create_pipeline"]
