"""Merging of tensor chunks, and aggregation of their statistics.

Every chunk is checked against the tensor contract (``features.contract.check_chunk``:
keys, dtypes, shapes, finite values, categories inside the vocabulary, 0/1 labels)
before anything is merged; a failure names the chunk and the array.
This module imports neither Kedro nor R.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from tsa_kedro.features.chunks import STATS_KEY
from tsa_kedro.features.contract import (
    BUNDLE_KEYS,
    ORDER_ID_KEY,
    check_chunk,
    expected_layout,
)
from tsa_kedro.features.tensors import DELTA_BIN_EDGES
from tsa_kedro.schema import RawSchema

Bundle = Mapping[str, np.ndarray]


def merge_bundles(
    chunks: Mapping[str, Bundle | Callable[[], Bundle]],
    schema: RawSchema,
    seq_len: int,
    vocab_size: int,
) -> dict[str, np.ndarray]:
    """Validate every chunk, then concatenate them in chunk-id order.

    Chunks are read twice (once to validate and size, once to copy), so only the
    merged output is ever fully in memory; memory-mapped chunks stay on disk.

    Raises:
        TensorContractError: When a chunk breaks the contract.
        ValueError: When there are no chunks.
    """
    if not chunks:
        raise ValueError("no tensor chunks to merge")

    def load(chunk_id: str) -> Bundle:
        source = chunks[chunk_id]
        return source() if callable(source) else source

    order = sorted(chunks)
    rows, id_width = {}, 1
    for chunk_id in order:
        bundle = load(chunk_id)
        rows[chunk_id] = check_chunk(chunk_id, bundle, schema, seq_len, vocab_size)
        id_width = max(id_width, bundle[ORDER_ID_KEY].dtype.itemsize // 4)
    total = sum(rows.values())
    layout = expected_layout(schema, seq_len)
    merged = {
        key: np.empty((total, *row_shape), dtype=dtype)
        for key, (dtype, row_shape) in layout.items()
    }
    merged[ORDER_ID_KEY] = np.empty(total, dtype=f"<U{id_width}")
    start = 0
    for chunk_id in order:
        bundle = load(chunk_id)
        stop = start + rows[chunk_id]
        for key, target in merged.items():
            target[start:stop] = bundle[key]
        start = stop
    return {key: merged[key] for key in BUNDLE_KEYS}


def _merge_delta(parts: list[dict[str, Any]]) -> dict[str, Any]:
    count = sum(p["count"] for p in parts)
    minima = [p["min"] for p in parts if p["min"] is not None]
    maxima = [p["max"] for p in parts if p["max"] is not None]
    histogram = np.sum([p["histogram"] for p in parts], axis=0).astype(int).tolist()
    return {
        "count": count,
        "mean_seconds": sum(p["sum"] for p in parts) / count if count else None,
        "min_seconds": min(minima) if minima else None,
        "max_seconds": max(maxima) if maxima else None,
        "capped": sum(p["capped"] for p in parts),
        "bin_edges_seconds": list(DELTA_BIN_EDGES),
        "histogram": histogram,
    }


def chunk_stats(bundle: Bundle) -> dict[str, Any]:
    """The statistics record stored in a chunk by ``process_chunk``."""
    if STATS_KEY not in bundle:
        raise KeyError(f"tensor chunk has no {STATS_KEY!r} array")
    return json.loads(str(bundle[STATS_KEY][()]))


def summarise_chunks(stats: list[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate per-chunk statistics into one split report.

    Returns:
        ``rows_in``, ``rows_out``, ``dropped`` by reason, positive rates before and
        after downsampling, per-feature unseen-category rates, scaled numericals
        clipped per feature (``preprocess.scaled_clip``), the time-delta summary
        of real history rows and per-chunk row counts.
    """
    if not stats:
        raise ValueError("no chunk statistics to summarise")
    reasons: dict[str, int] = {}
    for part in stats:
        for reason, count in part["dropped"].items():
            reasons[reason] = reasons.get(reason, 0) + count
    rows_in = sum(p["rows_in"] for p in stats)
    rows_out = sum(p["rows_out"] for p in stats)
    labelled = stats[0]["positives"] is not None
    report: dict[str, Any] = {
        "rows_in": rows_in,
        "rows_out": rows_out,
        "dropped": reasons,
        "downsampled_negatives": sum(p["downsampled_negatives"] for p in stats),
    }
    if labelled:
        before_pos = sum(p["positives"] for p in stats)
        before_neg = sum(p["negatives"] for p in stats)
        after_pos = sum(p["positives_out"] for p in stats)
        report["positive_rate_before_downsampling"] = (
            before_pos / (before_pos + before_neg) if before_pos + before_neg else None
        )
        report["positive_rate_after_downsampling"] = (
            after_pos / rows_out if rows_out else None
        )
        report["positives_out"] = after_pos
    unseen = {}
    for feature in stats[0]["unseen"]:
        u = sum(p["unseen"][feature]["unseen"] for p in stats)
        present = sum(p["unseen"][feature]["present"] for p in stats)
        unseen[feature] = {
            "unseen": u,
            "present": present,
            "rate": u / present if present else 0.0,
        }
    report["unseen_categories"] = unseen
    clipped: dict[str, int] = {}
    for part in stats:  # chunks written before clipping existed hold no counts
        for feature, count in part.get("clipped", {}).items():
            clipped[feature] = clipped.get(feature, 0) + count
    report["clipped_numerics"] = clipped
    report["time_delta"] = _merge_delta([p["delta"] for p in stats])
    report["chunks"] = {
        p["chunk"]: {
            "rows_in": p["rows_in"],
            "rows_out": p["rows_out"],
            "seconds": round(p["seconds"], 3),
        }
        for p in stats
    }
    return report
