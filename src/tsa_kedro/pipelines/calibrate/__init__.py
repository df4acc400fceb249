"""The ``calibrate`` stage: monotone B-spline calibration of the model's scores."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
