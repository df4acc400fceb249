"""A run that reads the team's raw export stops at once, in one line, when there is none.

``kedro run`` (``__default__``) starts from the export that the catalog's ``raw_orders``
names. On a fresh checkout there is none; instead of a loader's traceback deep in the
ingest stage, the run stops before any node (and before any tracking run opens) with
one line saying where to put an export, or to run the synthetic ``demo`` pipeline.
``kedro run --pipeline=score`` likewise stops in one line when its ``score_orders``
holds no file to score, before the model is loaded.
"""

from __future__ import annotations

from typing import Any

import click
from kedro.framework.hooks import hook_impl

RAW_ORDERS = "raw_orders"
SCORE_ORDERS = "score_orders"


class MissingRawExportError(click.ClickException):
    """The pipeline reads ``raw_orders`` (or ``score_orders``) and the catalog finds
    no export there."""


def missing_export_message(location: str) -> str:
    """The one line a run without an export prints."""
    return (
        f"No raw order export at {location}: put your export's files there (or point "
        f"the catalog entry {RAW_ORDERS!r} at it, docs/source/real_data.md), or run "
        "`kedro run --pipeline=demo` to train on built-in synthetic orders."
    )


def missing_score_export_message(location: str) -> str:
    """The one line a score run without orders to score prints."""
    return (
        f"No orders to score at {location}: put the export's files there or name "
        "them with `kedro run --pipeline=score --params=score_export=<folder, file or "
        "s3://...>` (docs/source/scoring.md)."
    )


EXPORTS = {
    RAW_ORDERS: missing_export_message,
    SCORE_ORDERS: missing_score_export_message,
}


def _location(catalog: Any, name: str) -> str:
    dataset = catalog._get_dataset(name)  # noqa: SLF001 - kedro 0.19 API
    description = dataset._describe()  # noqa: SLF001
    return str(description.get("path") or description.get("filepath") or name)


class RawExportCheckHook:
    """Stops a run whose pipeline reads ``raw_orders`` or ``score_orders`` when
    nothing is there."""

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, pipeline: Any, catalog: Any) -> None:
        for name, message in EXPORTS.items():
            if name not in pipeline.inputs() or name not in catalog.list():
                continue
            if not catalog.exists(name):
                raise MissingRawExportError(message(_location(catalog, name)))
