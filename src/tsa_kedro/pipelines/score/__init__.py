"""Score: batch scoring of new raw orders with a packaged or registered model."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
