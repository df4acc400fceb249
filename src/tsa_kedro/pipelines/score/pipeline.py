"""The score pipeline: load the model ``score.model`` names, score ``score_orders``."""

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import load_model, score_orders


def create_pipeline(**kwargs) -> Pipeline:
    """Load the model, then score the export into Parquet, DuckDB and a summary.

    Returns:
        The score pipeline (not part of ``__default__`` or ``demo``).
    """
    return pipeline(
        [
            node(
                load_model,
                inputs=["params:score", "params:register_mlflow"],
                outputs="score_model",
                name="load_score_model",
            ),
            node(
                score_orders,
                inputs=["score_orders", "score_model", "params:score"],
                outputs=["scored_orders", "scores_table", "score_summary"],
                name="score_orders",
            ),
        ]
    )
