"""The register pipeline: metrics gate, then registration of the passing bundle."""

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import check_registration_gate, register_model


def create_pipeline(**kwargs) -> Pipeline:
    """Gate on ``train_metrics`` and ``calibration_metrics``; register ``model_package``.

    Returns:
        The register pipeline.
    """
    return pipeline(
        [
            node(
                check_registration_gate,
                inputs=["train_metrics", "calibration_metrics", "params:register_gate"],
                outputs="registration_gate",
                name="check_registration_gate",
            ),
            node(
                register_model,
                inputs=[
                    "model_package",
                    "registration_gate",
                    "train_metrics",
                    "calibration_metrics",
                    "params:register",
                    "params:register_mlflow",
                    "params:register_sagemaker",
                ],
                outputs="registration_decision",
                name="register_model",
            ),
        ]
    )
