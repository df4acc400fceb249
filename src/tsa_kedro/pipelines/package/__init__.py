"""Package: build the servable model.tar.gz with its inference handler."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
