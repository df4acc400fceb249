"""A run that reads the team's raw export stops at once, in one line, when there is none.

``kedro run`` (``__default__``) starts from the export that the catalog's ``raw_orders``
names. On a fresh checkout there is none; instead of a loader's traceback deep in the
ingest stage, the run stops before any node (and before any tracking run opens) with
one line saying where to put an export, or to run the synthetic ``demo`` pipeline.
"""

from __future__ import annotations

from typing import Any

import click
from kedro.framework.hooks import hook_impl

RAW_ORDERS = "raw_orders"


class MissingRawExportError(click.ClickException):
    """The pipeline reads ``raw_orders`` and the catalog finds no export there."""


def missing_export_message(location: str) -> str:
    """The one line a run without an export prints."""
    return (
        f"No raw order export at {location}: put your export's files there (or point "
        f"the catalog entry {RAW_ORDERS!r} at it, docs/source/real_data.md), or run "
        "`kedro run --pipeline=demo` to train on built-in synthetic orders."
    )


def _location(catalog: Any) -> str:
    dataset = catalog._get_dataset(RAW_ORDERS)  # noqa: SLF001 - kedro 0.19 API
    description = dataset._describe()  # noqa: SLF001
    return str(description.get("path") or description.get("filepath") or RAW_ORDERS)


class RawExportCheckHook:
    """Stops a run whose pipeline reads ``raw_orders`` when nothing is there."""

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, pipeline: Any, catalog: Any) -> None:
        if RAW_ORDERS not in pipeline.inputs() or RAW_ORDERS not in catalog.list():
            return
        if not catalog.exists(RAW_ORDERS):
            raise MissingRawExportError(missing_export_message(_location(catalog)))
