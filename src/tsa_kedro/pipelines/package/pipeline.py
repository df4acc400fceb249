"""The package pipeline: a sample payload, then the model bundle."""

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import build_model_package, select_sample_payload


def create_pipeline(**kwargs) -> Pipeline:
    """Pick sample orders from the calibration split; build ``model_package``.

    Returns:
        The package pipeline.
    """
    return pipeline(
        [
            node(
                select_sample_payload,
                inputs=[
                    "cali.raw_chunks",
                    "score_file",
                    "params:raw_schema",
                    "params:package",
                ],
                outputs="sample_payload",
                name="select_sample_payload",
            ),
            node(
                build_model_package,
                inputs=[
                    "model_weights",
                    "model_config",
                    "percentile_map",
                    "bspline_parameters",
                    "cat_to_index",
                    "scaling",
                    "default_values",
                    "reference_profile",
                    "sample_payload",
                    "params:raw_schema",
                    "params:preprocess",
                    "params:ingest.windows",
                    "params:package",
                    "training_run",
                ],
                outputs=["model_package", "sample_output"],
                name="build_model_package",
            ),
        ]
    )
