"""The synthetic stage: ``raw_orders`` from the generator."""

from kedro.pipeline import Pipeline, node, pipeline

from tsa_kedro.pipelines.synthetic.nodes import generate_synthetic_orders


def create_pipeline(**kwargs) -> Pipeline:
    """One node writing the raw partitions of the selected synthetic profile."""
    return pipeline(
        [
            node(
                generate_synthetic_orders,
                inputs=[
                    "params:raw_schema",
                    "params:synthetic_profiles",
                    "params:synthetic_profile",
                ],
                outputs="raw_orders",
                name="generate_synthetic_orders",
            )
        ]
    )
