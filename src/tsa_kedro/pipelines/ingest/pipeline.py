"""The ingest stage: three independent downloads, one per split."""

from kedro.pipeline import Pipeline, node, pipeline

from tsa_kedro.pipelines.ingest.nodes import (
    download_cali,
    download_train,
    download_vali,
)


def create_pipeline(**kwargs) -> Pipeline:
    """``download_train``, ``download_vali``, ``download_cali``, run in parallel."""
    inputs = ["raw_orders", "params:raw_schema", "params:ingest"]
    return pipeline(
        [
            node(
                func,
                inputs=inputs,
                outputs=[f"{split}.raw_chunks", f"{split}.ingest_report"],
                name=f"download_{split}",
            )
            for split, func in (
                ("train", download_train),
                ("vali", download_vali),
                ("cali", download_cali),
            )
        ],
        tags="ingest",
    )
