"""Synthetic order data: the raw source on a fresh clone."""

from tsa_kedro.pipelines.synthetic.pipeline import create_pipeline

__all__ = ["create_pipeline"]
