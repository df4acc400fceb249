"""The monitor pipeline: the score pipeline's model loading, then the comparison."""

from kedro.pipeline import Pipeline, node, pipeline

from tsa_kedro.pipelines.score import create_pipeline as score_pipeline

from .nodes import check_drift, compare_with_reference


def create_pipeline(**kwargs) -> Pipeline:
    """Load ``score.model`` (the score pipeline's own node), compare the scored orders
    with its reference profile, write the report, then check the thresholds.

    Returns:
        The monitor pipeline (not part of ``__default__`` or ``demo``).
    """
    load_model = score_pipeline().only_nodes("load_score_model")
    return load_model + pipeline(
        [
            node(
                compare_with_reference,
                inputs=[
                    "score_orders",
                    "scores_table",
                    "score_model",
                    "params:monitor",
                ],
                outputs=["drift_summary", "drift_report", "drift_psi_plot"],
                name="compare_with_reference",
            ),
            node(
                check_drift,
                inputs=["drift_summary", "params:monitor"],
                outputs=None,
                name="check_drift",
            ),
        ]
    )
