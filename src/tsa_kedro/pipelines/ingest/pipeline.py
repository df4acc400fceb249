"""The ingest stage: one download node written once, instantiated per split.

``download_train``, ``download_vali`` and ``download_cali`` run independently (in
parallel under a parallel runner, as separate steps on SageMaker). Each reads
``raw_orders``, the shared ``raw_schema`` / ``ingest`` parameters and its own
``ingest.windows.<split>`` block, and writes ``<split>.raw_chunks`` and
``<split>.ingest_report``. The nodes are not namespaced: the ``train`` / ``vali`` /
``cali`` namespaces belong to preprocessing, and a namespace split by
``fit_transforms`` would break kedro viz's modular pipelines and layers.
"""

from kedro.pipeline import Pipeline, node, pipeline

from tsa_kedro.pipelines.ingest.nodes import download
from tsa_kedro.pipelines.ingest.windows import SPLITS


def create_pipeline(**kwargs) -> Pipeline:
    """``download_train``, ``download_vali``, ``download_cali``."""
    return pipeline(
        [
            node(
                download,
                inputs=[
                    "raw_orders",
                    "params:raw_schema",
                    "params:ingest",
                    f"params:ingest.windows.{split}",
                ],
                outputs=[f"{split}.raw_chunks", f"{split}.ingest_report"],
                name=f"download_{split}",
            )
            for split in SPLITS
        ],
        tags="ingest",
    )
