"""Nodes of the ``preprocess`` and ``merge`` pipelines (thin wrappers of features)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from tsa_kedro.features.chunks import (
    ChunkContext,
    ChunkProcessor,
    Downsampling,
    worker_count,
)
from tsa_kedro.features.merge import chunk_stats, merge_bundles, summarise_chunks
from tsa_kedro.features.tensors import DROP_REASONS, TensorParams
from tsa_kedro.features.transforms import vocabulary_size
from tsa_kedro.hosts import current_shard
from tsa_kedro.schema import RawSchema

logger = logging.getLogger(__name__)

Bundle = Mapping[str, np.ndarray]


class HostShareError(ValueError):
    """This host of a multi-host build step has no raw chunk to build."""


def build_tensor_chunks(
    *,
    raw_chunks: Mapping[str, pd.DataFrame | Callable[[], pd.DataFrame]],
    cat_to_index: dict[str, dict[str, int]],
    scaling: dict[str, Any],
    default_values: dict[str, Any],
    raw_schema: dict[str, Any],
    preprocess: dict[str, Any],
    downsample: dict[str, Any],
) -> dict[str, Callable[[], dict[str, np.ndarray]]]:
    """Convert every raw chunk into a tensor chunk in a pool of worker processes.

    The result is saved lazily: ``TensorChunksDataset`` tells the engine where each
    chunk goes, the workers (processes, or Ray tasks with ``preprocess.engine: ray``)
    write each chunk's arrays there under a staging name, and the dataset commits one
    chunk after the other while the workers run ahead by at most one chunk each (Ray:
    as many chunks as the cluster has task slots), so memory stays bounded by the
    chunk size whatever the split size.

    On one of several hosts of a SageMaker step (``tsa_kedro.hosts``: SageMaker's
    host list), only this host's chunks are built: those at sorted positions ``k``
    with ``k % hosts == rank``. The dataset then commits the split once every host
    has staged its chunks (``TensorChunksDataset``).

    Args:
        raw_chunks: ``<split>.raw_chunks`` partitions (loaders or DataFrames).
        cat_to_index: Fitted vocabulary.
        scaling: Fitted min-max parameters.
        default_values: Fitted default values.
        raw_schema: The ``raw_schema`` parameters.
        preprocess: The ``preprocess`` parameters (``seq_len``, ``delta_cap_seconds``,
            ``workers``, ``start_method``, ``engine``, ``ray``).
        downsample: This split's ``preprocess.downsample.<split>`` parameters.

    Returns:
        ``{chunk_id: callable returning the chunk's bundle}``, same ids as the input
        (this host's ids on a multi-host step; the chunk's ``StagedBundle`` once a
        ``TensorChunksDataset`` saves them).

    Raises:
        HostShareError: This host's share is empty (more hosts than raw chunks).
        ShardConfigError: An unusable host list (``tsa_kedro.hosts.current_shard``).
    """
    shard = current_shard()
    if shard.sharded:
        mine = shard.select(raw_chunks)
        if not mine:
            raise HostShareError(
                f"host {shard.host} ({shard.rank + 1} of {shard.count}) has no raw "
                f"chunk to build: the split has {len(raw_chunks)} chunks; set "
                f"instance_count of the build_tensor_chunks steps (aws.resources in "
                f"conf/sagemaker/sagemaker.yml) to at most {max(len(raw_chunks), 1)}"
            )
        raw_chunks = {chunk_id: raw_chunks[chunk_id] for chunk_id in mine}
        logger.info(
            "host %s (%d of %d) builds %d of the split's chunks",
            shard.host,
            shard.rank + 1,
            shard.count,
            len(mine),
        )
    context = ChunkContext(
        schema_params=dict(raw_schema),
        cat_to_index=cat_to_index,
        scaling=scaling,
        default_values=default_values,
        tensor_params=TensorParams.from_params(preprocess),
        downsampling=Downsampling.from_params(downsample),
    )
    if preprocess.get("engine", "local") == "ray":
        from tsa_kedro.pipelines.preprocess.ray_engine import (  # noqa: PLC0415
            RayChunkProcessor,  # imports Ray: only for this engine
        )

        return RayChunkProcessor(
            raw_chunks, context, preprocess.get("ray") or {}
        ).lazy_results()
    workers = worker_count(preprocess.get("workers"))
    processor = ChunkProcessor(
        raw_chunks,
        context,
        workers=workers,
        start_method=preprocess.get("start_method", "spawn"),
    )
    logger.info(
        "preprocessing %d chunks with %d worker(s)", len(processor.chunk_ids), workers
    )
    return processor.lazy_results()


class DropShareError(ValueError):
    """Preprocessing dropped a larger share of a split's rows than allowed."""


def drop_limits(preprocess: Mapping[str, Any]) -> dict[str, float]:
    """``preprocess.max_drop_share`` by drop reason (``DROP_REASONS``).

    Rejected (``ValueError`` naming the parameter): a reason that is not one of
    ``unlabelled``, ``ragged_history``, ``missing_history_timestamp``,
    ``negative_delta``, and a share outside [0, 1].
    """
    configured = dict(preprocess.get("max_drop_share") or {})
    families = {
        reason.removesuffix("_cid").removesuffix("_ccid") for reason in DROP_REASONS
    }
    unknown = sorted(set(configured) - families)
    if unknown:
        raise ValueError(
            f"parameter preprocess.max_drop_share names unknown reasons {unknown}; "
            f"known: {sorted(families)}"
        )
    limits = {}
    for reason in DROP_REASONS:
        family = reason.removesuffix("_cid").removesuffix("_ccid")
        share = configured.get(family, 1.0)
        if (
            isinstance(share, bool)
            or not isinstance(share, int | float)
            or not (0 <= share <= 1)
        ):
            raise ValueError(
                f"parameter preprocess.max_drop_share.{family} must be a share in "
                f"[0, 1], got {share!r}"
            )
        limits[reason] = float(share)
    return limits


def check_drop_shares(report: Mapping[str, Any], limits: Mapping[str, float]) -> None:
    """Raise ``DropShareError`` naming every reason that dropped more than its share."""
    rows_in = report["rows_in"]
    if not rows_in:
        return
    over = [
        f"{reason}: {count} of {rows_in} rows ({count / rows_in:.2%}) > "
        f"{limits[reason]:.2%} (preprocess.max_drop_share."
        f"{reason.removesuffix('_cid').removesuffix('_ccid')})"
        for reason, count in report["dropped"].items()
        if reason in limits and count / rows_in > limits[reason]
    ]
    if over:
        raise DropShareError(
            "preprocessing dropped too many rows of this split: " + "; ".join(over)
        )


def _summary(tensor_chunks: Mapping[str, Bundle | Callable[[], Bundle]]) -> dict:
    """The split report from the statistics stored in the tensor chunks."""
    stats = []
    for chunk_id in sorted(tensor_chunks):
        source = tensor_chunks[chunk_id]
        stats.append(chunk_stats(source() if callable(source) else source))
    return summarise_chunks(stats)


def report_preprocessing(
    tensor_chunks: Mapping[str, Bundle | Callable[[], Bundle]],
) -> dict[str, Any]:
    """Aggregate the statistics stored in the tensor chunks into the split report.

    The report is written whatever it shows; the merge refuses a split whose drops
    exceed ``preprocess.max_drop_share``.

    Args:
        tensor_chunks: ``<split>.tensor_chunks`` partitions.

    Returns:
        The JSON report (see ``summarise_chunks``).
    """
    report = _summary(tensor_chunks)
    logger.info(
        "preprocessing kept %d of %d rows; dropped %s",
        report["rows_out"],
        report["rows_in"],
        {k: v for k, v in report["dropped"].items() if v},
    )
    return report


def merge_tensor_chunks(
    tensor_chunks: Mapping[str, Bundle | Callable[[], Bundle]],
    cat_to_index: dict[str, dict[str, int]],
    raw_schema: dict[str, Any],
    preprocess: dict[str, Any],
) -> dict[str, np.ndarray]:
    """Check the split's drops, validate the tensor chunks and merge them into one
    bundle.

    Args:
        tensor_chunks: ``<split>.tensor_chunks`` partitions.
        cat_to_index: Fitted vocabulary (bounds of the category indices).
        raw_schema: The ``raw_schema`` parameters (feature widths).
        preprocess: The ``preprocess`` parameters (``seq_len``, ``max_drop_share``).

    Returns:
        The merged bundle (``<split>.model_input``).

    Raises:
        DropShareError: A drop reason removed more of the split's rows than
            ``preprocess.max_drop_share`` allows (the report says how many); nothing
            is merged, so no model trains on what is left.
    """
    schema = RawSchema.from_params(raw_schema)
    seq_len = TensorParams.from_params(preprocess).seq_len
    check_drop_shares(_summary(tensor_chunks), drop_limits(preprocess))
    merged = merge_bundles(
        tensor_chunks, schema, seq_len, vocabulary_size(cat_to_index)
    )
    logger.info("merged %d chunks into %d rows", len(tensor_chunks), len(merged["Y"]))
    return merged
