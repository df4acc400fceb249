"""The ingest stage: one download node written once, namespaced per split.

``train.download``, ``vali.download`` and ``cali.download`` run independently (in
parallel under a parallel runner, as separate steps on SageMaker). ``raw_orders`` and
the ``raw_schema`` / ``ingest`` parameters are shared; each instance reads its own
``ingest.windows.<split>`` block.
"""

from kedro.pipeline import Pipeline, node, pipeline

from tsa_kedro.pipelines.ingest.nodes import download
from tsa_kedro.pipelines.ingest.windows import SPLITS


def template() -> Pipeline:
    """The download of one split (un-namespaced)."""
    return pipeline(
        [
            node(
                download,
                inputs=[
                    "raw_orders",
                    "params:raw_schema",
                    "params:ingest",
                    "params:window",
                ],
                outputs=["raw_chunks", "ingest_report"],
                name="download",
            )
        ],
        tags="ingest",
    )


def create_pipeline(**kwargs) -> Pipeline:
    """``train.download``, ``vali.download``, ``cali.download``."""
    return sum(
        (
            pipeline(
                template(),
                namespace=split,
                inputs={"raw_orders"},
                parameters={
                    "params:raw_schema": "params:raw_schema",
                    "params:ingest": "params:ingest",
                    "params:window": f"params:ingest.windows.{split}",
                },
            )
            for split in SPLITS
        ),
        Pipeline([]),
    )
