"""Nodes of the ingest stage: one download per split from ``raw_orders``.

The stage is one node function, ``download``, instantiated per split
(``download_train``, ``download_vali``, ``download_cali``). Each instance reads the raw export partition by partition, keeps the orders of its split's
date window, validates and normalises them (``tsa_kedro.features.raw_orders``), sorts
them by time and cuts them into chunks of ``ingest.chunk_size`` rows named
``part-00000``, ``part-00001``, ... A node that fails returns nothing, so no split is
ever written half; the chunk dataset swaps folders only after every chunk is written.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from tsa_kedro.features.raw_orders import (
    DEFAULT_RAGGED_TOLERANCE,
    RawDataError,
    check_columns,
    check_ragged_histories,
    history_lengths,
    normalize_raw_orders,
    parse_timestamps,
    ragged_rows,
)
from tsa_kedro.pipelines.ingest.windows import IngestConfigError, Window, split_windows
from tsa_kedro.schema import ID_TYPES, RawSchema

logger = logging.getLogger(__name__)

RawPartitions = Mapping[str, Callable[[], pd.DataFrame]]


def download(
    raw_orders: RawPartitions,
    raw_schema: Mapping[str, Any],
    ingest: Mapping[str, Any],
    window: Mapping[str, Any],
) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """One split's download (the node ``download_<split>``).

    Args:
        raw_orders: Raw export partitions (partition id to loader).
        raw_schema: The ``raw_schema`` parameters.
        ingest: The ``ingest`` parameters (all windows, chunk size, ragged tolerance).
        window: This split's ``ingest.windows.<split>`` block.

    Returns:
        The split's chunks and its ingest report (``download_split``).
    """
    split_windows(ingest)  # every window checked against the others first
    # windows that pass those checks are distinct: the block names its split
    split = next(name for name, block in ingest["windows"].items() if block == window)
    return download_split(split, raw_orders, raw_schema, ingest)


def download_split(
    split: str,
    raw_orders: RawPartitions,
    raw_schema: Mapping[str, Any],
    ingest: Mapping[str, Any],
) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """Orders of one split's window, validated, normalised, sorted and chunked.

    Args:
        split: ``train``, ``vali`` or ``cali``.
        raw_orders: Raw export partitions (partition id to loader).
        raw_schema: The ``raw_schema`` parameters.
        ingest: The ``ingest`` parameters.

    Returns:
        ``{part-NNNNN: chunk}`` and the report (rows, labels, dates, chunks, counts).

    Raises:
        IngestConfigError: A window, ``ingest.chunk_size`` or
            ``ingest.ragged_tolerance`` is invalid.
        RawDataError: A partition violates the raw contract, the window holds no
            orders, an order id occurs twice in the split, or more than
            ``ingest.ragged_tolerance`` of the split's rows have ragged histories.
    """
    window = split_windows(ingest)[split]
    chunk_size = _chunk_size(ingest)
    tolerance = _tolerance(ingest)
    schema = RawSchema.from_params(raw_schema)

    pieces, used, rows_read = [], [], 0
    canonicalised: Counter = Counter({f: 0 for f in schema.numeric_cat_features})
    for partition_id in sorted(raw_orders):
        frame = raw_orders[partition_id]()
        source = f"raw_orders partition {partition_id!r}"
        check_columns(frame, schema, source)
        ts = parse_timestamps(frame, schema, source)
        rows_read += len(frame)
        inside = np.flatnonzero((ts >= window.start_epoch) & (ts < window.stop_epoch))
        if len(inside):
            piece = frame.iloc[inside].reset_index(drop=True)
            # The ragged share is judged on the whole split below, not per slice.
            pieces.append(
                normalize_raw_orders(
                    piece,
                    schema,
                    source,
                    ragged_tolerance=1.0,
                    canonicalised=canonicalised,
                )
            )
            used.append(partition_id)
        del frame
    if not pieces:
        raise RawDataError(
            f"raw_orders: none of {rows_read} orders in {len(raw_orders)} partitions "
            f"falls in parameter ingest.windows.{split} ({window.start}..{window.end})"
        )
    orders = pd.concat(pieces, ignore_index=True)
    orders = orders.sort_values(
        [schema.timestamp, schema.order_id], kind="stable", ignore_index=True
    )
    _check_unique_ids(orders, schema, split)
    lengths = {
        column: history_lengths(orders[column], schema.separator)
        for id_type in ID_TYPES
        for column in schema.history_columns(id_type)
    }
    source = f"raw_orders split {split} (partitions {used})"
    check_ragged_histories(orders, schema, source, tolerance, lengths)

    chunks = {
        f"part-{number:05d}": orders.iloc[start : start + chunk_size].reset_index(
            drop=True
        )
        for number, start in enumerate(range(0, len(orders), chunk_size))
    }
    report = _report(
        split=split,
        window=window,
        orders=orders,
        schema=schema,
        chunks=chunks,
        partitions=used,
        rows_read=rows_read,
        chunk_size=chunk_size,
        lengths=lengths,
        canonicalised=canonicalised,
    )
    logger.info(
        "Ingested %s: %d orders (%d labelled, positive rate %.4f) in %d chunks",
        split,
        report["rows"],
        report["labelled_rows"],
        report["positive_rate"] or 0.0,
        report["chunk_count"],
    )
    return chunks, report


def _report(
    *,
    split: str,
    window: Window,
    orders: pd.DataFrame,
    schema: RawSchema,
    chunks: Mapping[str, pd.DataFrame],
    partitions: list[str],
    rows_read: int,
    chunk_size: int,
    lengths: Mapping[str, np.ndarray],
    canonicalised: Mapping[str, int],
) -> dict[str, Any]:
    labels = orders[schema.label]
    labelled = int(labels.notna().sum())
    positives = int((labels == 1).sum())
    ts = orders[schema.timestamp]
    return {
        "split": split,
        "window": {"start": window.start.isoformat(), "end": window.end.isoformat()},
        "date_range": {"first_order": _iso(ts.min()), "last_order": _iso(ts.max())},
        "rows": len(orders),
        "labelled_rows": labelled,
        "unlabelled_rows": len(orders) - labelled,
        "positive_rows": positives,
        "positive_rate": positives / labelled if labelled else None,
        "ragged_history_rows": {
            id_type: int(
                ragged_rows(orders, schema, id_type, lengths)
                .to_numpy()
                .any(axis=1)
                .sum()
            )
            for id_type in ID_TYPES
        },
        "rows_read": rows_read,
        "rows_outside_window": rows_read - len(orders),
        "source_partitions": partitions,
        "chunk_size": chunk_size,
        "chunk_count": len(chunks),
        "chunks": {name: len(chunk) for name, chunk in chunks.items()},
        # values (current-order cells and history tokens) of each numeric-code
        # categorical rewritten to their one spelling (``3.0`` -> ``3``)
        "numeric_codes_canonicalised": dict(canonicalised),
    }


def _check_unique_ids(orders: pd.DataFrame, schema: RawSchema, split: str) -> None:
    duplicated = orders[schema.order_id].duplicated(keep=False).to_numpy()
    if duplicated.any():
        examples = orders[schema.order_id].to_numpy()[duplicated][:5].tolist()
        raise RawDataError(
            f"raw_orders: column {schema.order_id}: {int(duplicated.sum())} rows of "
            f"split {split} share an order id, e.g. {examples}"
        )


def _chunk_size(ingest: Mapping[str, Any]) -> int:
    value = ingest.get("chunk_size")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise IngestConfigError(
            f"parameter ingest.chunk_size must be a positive integer, got {value!r}"
        )
    return value


def _tolerance(ingest: Mapping[str, Any]) -> float:
    value = ingest.get("ragged_tolerance", DEFAULT_RAGGED_TOLERANCE)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 <= value <= 1
    ):
        raise IngestConfigError(
            f"parameter ingest.ragged_tolerance must be a number in [0, 1], got {value!r}"
        )
    return float(value)


def _iso(epoch: int) -> str:
    return dt.datetime.fromtimestamp(int(epoch), tz=dt.UTC).isoformat()
