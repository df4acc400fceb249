"""Register: gate the model on its metrics, then register the bundle in a model registry."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
