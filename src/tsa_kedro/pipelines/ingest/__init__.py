"""Ingest: the train, vali and cali downloads from the raw export."""

from tsa_kedro.pipelines.ingest.pipeline import create_pipeline

__all__ = ["create_pipeline"]
