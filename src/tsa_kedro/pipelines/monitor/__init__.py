"""Monitor: compare the orders scored and their scores with the model's training
reference profile (docs/source/monitoring.md)."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
