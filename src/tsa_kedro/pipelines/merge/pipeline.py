"""The ``merge`` pipeline: the ``train`` instance of the preprocessing merge template
(production step Preprocessing_Train_Merge)."""

from kedro.pipeline import Pipeline

from tsa_kedro.pipelines.preprocess.pipeline import for_split, merge_template


def create_pipeline(**kwargs) -> Pipeline:
    """``train.tensor_chunks`` -> ``train.model_input``."""
    return for_split(merge_template(), "train")
