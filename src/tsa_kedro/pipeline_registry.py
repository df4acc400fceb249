"""Project pipelines: every folder under ``pipelines/`` is one stage."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

from tsa_kedro.pipelines.preprocess import create_split_pipelines

SYNTHETIC = "synthetic"
# Stages after the model, run on their own: not part of __default__ or demo.
AFTER_THE_MODEL = ("score", "monitor")


def register_pipelines() -> dict[str, Pipeline]:
    """Register each stage by its folder name and the pipelines made of them.

    - ``__default__``: ingest through register, reading the raw export that the
      catalog's ``raw_orders`` names (a team's own data; no synthetic step);
    - ``demo``: the synthetic generator, then ``__default__`` (what ``make run`` runs);
    - ``preprocess_train``, ``preprocess_vali``, ``preprocess_cali``: each split's
      preprocessing alone (the production step names);
    - ``score``: batch scoring of new orders with a packaged or registered model
      (``kedro run --pipeline=score``), only on its own;
    - ``monitor``: drift of the scored orders against the model's reference profile
      (``kedro run --pipeline=monitor``, after ``score``), only on its own.

    Returns:
        A mapping from pipeline names to ``Pipeline`` objects.
    """
    pipelines = find_pipelines(raise_errors=True)
    from_export = sum(
        (
            p
            for name, p in pipelines.items()
            if name != SYNTHETIC and name not in AFTER_THE_MODEL
        ),
        Pipeline([]),
    )
    pipelines["__default__"] = from_export
    pipelines["demo"] = pipelines[SYNTHETIC] + from_export
    pipelines.update(create_split_pipelines())
    return pipelines
