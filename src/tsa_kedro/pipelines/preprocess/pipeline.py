"""One preprocessing pipeline written once, instantiated per split.

``build_template`` (raw chunks -> tensor chunks + report) and ``merge_template``
(tensor chunks -> model input) are namespaced with ``train``, ``vali`` and ``cali``.
The fitted transforms and the ``raw_schema``/``preprocess`` parameters are shared;
each split reads its own ``preprocess.downsample.<split>`` block. The train merge is
the separate ``merge`` pipeline (production step Preprocessing_Train_Merge); vali and
cali merge inside their own preprocessing instance, as their production steps did.
"""

from kedro.pipeline import Pipeline, node, pipeline

from tsa_kedro.pipelines.preprocess.nodes import (
    build_tensor_chunks,
    merge_tensor_chunks,
    report_preprocessing,
)

SPLITS = ("train", "vali", "cali")
FITTED_TRANSFORMS = {"cat_to_index", "scaling", "default_values"}
TAGS = ["preprocessing"]


def build_template() -> Pipeline:
    """Raw chunks to tensor chunks and the split's report (un-namespaced)."""
    return pipeline(
        [
            node(
                build_tensor_chunks,
                inputs={
                    "raw_chunks": "raw_chunks",
                    "cat_to_index": "cat_to_index",
                    "scaling": "scaling",
                    "default_values": "default_values",
                    "raw_schema": "params:raw_schema",
                    "preprocess": "params:preprocess",
                    "downsample": "params:downsample",
                },
                outputs="tensor_chunks",
                name="build_tensor_chunks",
                tags=[*TAGS, "highmem"],
            ),
            node(
                report_preprocessing,
                inputs="tensor_chunks",
                outputs="preprocess_report",
                name="report_preprocessing",
                tags=TAGS,
            ),
        ]
    )


def merge_template() -> Pipeline:
    """Tensor chunks to the validated, merged model input (un-namespaced)."""
    return pipeline(
        [
            node(
                merge_tensor_chunks,
                inputs=[
                    "tensor_chunks",
                    "cat_to_index",
                    "params:raw_schema",
                    "params:preprocess",
                ],
                outputs="model_input",
                name="merge_tensor_chunks",
                tags=[*TAGS, "highmem"],
            )
        ]
    )


def for_split(template: Pipeline, split: str) -> Pipeline:
    """Namespace ``template`` with ``split``; transforms and parameters stay shared."""
    params_map = {p: p for p in ("params:raw_schema", "params:preprocess")}
    if "params:downsample" in template.inputs():
        params_map["params:downsample"] = f"params:preprocess.downsample.{split}"
    return pipeline(
        template,
        namespace=split,
        inputs=FITTED_TRANSFORMS & template.inputs(),
        parameters=params_map,
    )


def create_split_pipelines() -> dict[str, Pipeline]:
    """``preprocess_train`` (chunks only), ``preprocess_vali``, ``preprocess_cali``."""
    return {
        "preprocess_train": for_split(build_template(), "train"),
        **{
            f"preprocess_{split}": for_split(build_template() + merge_template(), split)
            for split in SPLITS[1:]
        },
    }


def create_pipeline(**kwargs) -> Pipeline:
    """All three splits' preprocessing."""
    return sum(create_split_pipelines().values(), Pipeline([]))
