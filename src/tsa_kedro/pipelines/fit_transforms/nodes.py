"""Nodes of the ``fit_transforms`` pipeline."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pandas as pd

from tsa_kedro.features.transforms import fit_transforms
from tsa_kedro.schema import RawSchema

logger = logging.getLogger(__name__)


def _chunks(
    partitions: Mapping[str, pd.DataFrame | Callable[[], pd.DataFrame]],
) -> Iterator[pd.DataFrame]:
    for partition_id in sorted(partitions):
        source = partitions[partition_id]
        logger.debug("fitting transforms on chunk %s", partition_id)
        yield source() if callable(source) else source


def fit_preprocessing_transforms(
    train_raw_chunks: Mapping[str, pd.DataFrame | Callable[[], pd.DataFrame]],
    raw_schema: dict[str, Any],
    fit_params: dict[str, Any],
) -> tuple[dict[str, dict[str, int]], dict[str, dict], dict[str, Any]]:
    """Fit the transforms on the training chunks, one chunk in memory at a time.

    Args:
        train_raw_chunks: ``train.raw_chunks`` partitions (loaders or DataFrames).
        raw_schema: The ``raw_schema`` parameters.
        fit_params: The ``fit_transforms`` parameters.

    Returns:
        ``cat_to_index``, ``scaling`` and ``default_values`` (JSON-serialisable).
    """
    schema = RawSchema.from_params(raw_schema)
    return fit_transforms(_chunks(train_raw_chunks), schema, fit_params)
