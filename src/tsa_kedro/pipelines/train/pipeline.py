"""The ``train`` pipeline: train the TSA model, fit the baseline, evaluate both, score
the calibration set, build the percentile map and the reference profile of the training
data for drift monitoring."""

from kedro.pipeline import Pipeline, node, pipeline

from tsa_kedro.pipelines.train.nodes import (
    build_percentile_map,
    build_reference_profile,
    evaluate_models,
    fit_baseline_model,
    record_training_run,
    score_calibration_set,
    train_tsa_model,
)


def create_pipeline(**kwargs) -> Pipeline:
    """Create the ``train`` pipeline.

    Only ``train_tsa_model`` is tagged ``gpu`` (it runs on GPU instances on SageMaker);
    the other nodes are light and run on default instances.
    """
    return pipeline(
        [
            node(
                train_tsa_model,
                inputs={
                    "train_input": "train.model_input",
                    "vali_input": "vali.model_input",
                    "cat_to_index": "cat_to_index",
                    "model_params": "params:train.model",
                    "training_params": "params:train.training",
                    "distributed_params": "params:train.distributed",
                },
                outputs=[
                    "model_weights",
                    "model_config",
                    "training_history",
                    "tsa_validation_scores",
                ],
                name="train_tsa_model",
                tags=["gpu"],
            ),
            node(
                record_training_run,
                inputs="model_config",
                outputs="training_run",
                name="record_training_run",
            ),
            node(
                fit_baseline_model,
                inputs=[
                    "train.model_input",
                    "vali.model_input",
                    "params:train.baseline",
                ],
                outputs="baseline_validation_scores",
                name="fit_baseline_model",
            ),
            node(
                evaluate_models,
                inputs=[
                    "tsa_validation_scores",
                    "baseline_validation_scores",
                    "params:train.evaluation",
                ],
                outputs=[
                    "train_metrics",
                    "roc_curve_plot",
                    "pr_curve_plot",
                    "score_histogram_plot",
                    "roc_log_plot",
                    "queue_plot",
                    "cost_curve_plot",
                ],
                name="evaluate_models",
            ),
            node(
                score_calibration_set,
                inputs=[
                    "model_weights",
                    "model_config",
                    "cali.model_input",
                    "params:train.evaluation",
                ],
                outputs=["score_file", "tag_file"],
                name="score_calibration_set",
            ),
            node(
                build_percentile_map,
                inputs="score_file",
                outputs="percentile_map",
                name="build_percentile_map",
            ),
            node(
                build_reference_profile,
                inputs=["train.raw_chunks", "score_file", "params:raw_schema"],
                outputs="reference_profile",
                name="build_reference_profile",
            ),
        ]
    )
