"""Project pipelines: every folder under ``pipelines/`` is one stage."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

from tsa_kedro.pipelines.preprocess import create_split_pipelines


def register_pipelines() -> dict[str, Pipeline]:
    """Register each stage by its folder name, ``__default__`` (all stages), and each
    split's preprocessing alone as ``preprocess_train``, ``preprocess_vali`` and
    ``preprocess_cali`` (the production step names).

    Returns:
        A mapping from pipeline names to ``Pipeline`` objects.
    """
    pipelines = find_pipelines(raise_errors=True)
    pipelines["__default__"] = sum(pipelines.values(), Pipeline([]))
    pipelines.update(create_split_pipelines())
    return pipelines
