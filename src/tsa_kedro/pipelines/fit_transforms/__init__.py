"""Fit the categorical vocabulary, numeric scaling and default values on train only."""

from tsa_kedro.pipelines.fit_transforms.pipeline import create_pipeline

__all__ = ["create_pipeline"]
