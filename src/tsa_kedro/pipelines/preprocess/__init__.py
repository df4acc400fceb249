"""Raw order chunks to tensor chunks, one modular pipeline for train, vali and cali."""

from tsa_kedro.pipelines.preprocess.pipeline import (
    create_pipeline,
    create_split_pipelines,
)

__all__ = ["create_pipeline", "create_split_pipelines"]
