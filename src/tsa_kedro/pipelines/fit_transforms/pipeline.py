"""The ``fit_transforms`` pipeline: reads ``train.raw_chunks`` only."""

from kedro.pipeline import Pipeline, node, pipeline

from tsa_kedro.pipelines.fit_transforms.nodes import fit_preprocessing_transforms


def create_pipeline(**kwargs) -> Pipeline:
    """One node fitting all three transforms in a single pass over train."""
    return pipeline(
        [
            node(
                fit_preprocessing_transforms,
                inputs=[
                    "train.raw_chunks",
                    "params:raw_schema",
                    "params:fit_transforms",
                ],
                outputs=["cat_to_index", "scaling", "default_values"],
                name="fit_transforms",
                tags=["preprocessing", "highmem"],
            )
        ]
    )
