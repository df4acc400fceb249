"""Batch scoring of new raw orders with a packaged model (docs/source/scoring.md).

Orders go through the inference handler's own route (``TSAPredictor.predict_frame``:
``normalize_raw_orders``, ``build_tensors``, the model, percentiles, calibration), in
batches of ``score.batch_orders`` orders; a batch never spans two export files. Every
input order gets exactly one output row: orders that preprocessing rejects get null
numbers and the reason in ``error``. With ``score.explain.enabled`` every row also
holds its reason codes as text (``REASON_COLUMNS``; docs/source/scoring.md).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from tsa_kedro.hosts import current_shard
from tsa_kedro.pipelines.score.model_source import ScoringModel, load_scoring_model
from tsa_kedro.serving import payload
from tsa_kedro.serving.payload import PayloadError

logger = logging.getLogger(__name__)

SCORE_COLUMNS = (
    "order_id",
    "score",
    "calibrated_probability",
    "percentile",
    "model_name",
    "model_version",
    "scored_at",
    "error",
)
TEXT_COLUMNS = ("order_id", "model_name", "model_version", "error")
# With score.explain.enabled, after SCORE_COLUMNS (texts of payload.reason_strings).
REASON_COLUMNS = payload.REASON_COLUMNS
REJECTED_PREFIX = "order rejected by preprocessing: "
QUANTILES = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)
EXPORT = "score export (catalog entry score_orders, --params=score_export=...)"


class ScoreInputError(ValueError):
    """The orders to score cannot be scored as a whole; the message names the file."""


def load_model(
    score: Mapping[str, Any], register_mlflow: Mapping[str, Any]
) -> ScoringModel:
    """Load the model that ``score.model`` names (see ``model_source``).

    Args:
        score: The ``score`` parameters (``model``, ``tracking_uri``, ``device``).
        register_mlflow: The registry parameters; their ``tracking_uri`` unless
            ``score.tracking_uri`` is set.

    Raises:
        ModelSourceError: A missing, unreadable or altered model (naming
            ``score.model``).
    """
    tracking_uri = score.get("tracking_uri") or register_mlflow["tracking_uri"]
    model = load_scoring_model(score["model"], tracking_uri, score.get("device"))
    logger.info(
        "scoring with %s version %s (%s)", model.name, model.version, model.location
    )
    return model


def file_batches(frame: pd.DataFrame, size: int) -> list[pd.DataFrame]:
    """One export file's orders in batches of at most ``size`` orders."""
    return [frame.iloc[start : start + size] for start in range(0, len(frame), size)]


def explain_top_k(score: Mapping[str, Any]) -> int | None:
    """``score.explain.top_k`` when ``score.explain.enabled``, else None."""
    explain = score.get("explain") or {}
    return int(explain["top_k"]) if explain.get("enabled") else None


def _typed(
    scored: pd.DataFrame, model: ScoringModel, scored_at: pd.Timestamp
) -> pd.DataFrame:
    """The output columns and their types (text as pandas strings, numbers float64,
    ``scored_at`` UTC milliseconds); the reason columns when ``scored`` has them."""
    out = scored.assign(
        model_name=model.name,
        model_version=model.version,
        scored_at=pd.Series([scored_at] * len(scored), index=scored.index).astype(
            "datetime64[ms, UTC]"
        ),
    )
    explained = [c for c in REASON_COLUMNS if c in scored.columns]
    out = out.loc[:, [*SCORE_COLUMNS, *explained]]
    for column in (*TEXT_COLUMNS, *explained):
        out[column] = out[column].astype("string")
    for column in ("score", "calibrated_probability", "percentile"):
        out[column] = out[column].astype(np.float64)
    return out.reset_index(drop=True)


def _summary(
    table: pd.DataFrame,
    rows_in: int,
    files: dict[str, int],
    batches: int,
    model: ScoringModel,
    scored_at: pd.Timestamp,
) -> dict[str, Any]:
    errors = table["error"].dropna()
    reasons = Counter(
        e.removeprefix(REJECTED_PREFIX) if e.startswith(REJECTED_PREFIX) else e
        for e in errors.tolist()
    )
    scores = table["score"].dropna().to_numpy()
    quantiles = (
        {f"q{int(q * 100):02d}": float(np.quantile(scores, q)) for q in QUANTILES}
        if scores.size
        else {}
    )
    return {
        "model": {
            "name": model.name,
            "version": model.version,
            "source": model.source,
            "location": model.location,
        },
        "scored_at": scored_at.isoformat(),
        "rows_in": rows_in,
        "rows_out": len(table),
        "scored": int(scores.size),
        "rejected": int(errors.size),
        "rejected_by_reason": dict(sorted(reasons.items())),
        "score_mean": float(scores.mean()) if scores.size else None,
        "score_quantiles": quantiles,
        "calibrated_probability_mean": (
            float(table["calibrated_probability"].mean()) if scores.size else None
        ),
        "files": files,
        "batches": batches,
    }


def score_batch(
    model: ScoringModel,
    batch: pd.DataFrame,
    key: str,
    scored_at: pd.Timestamp,
    explain_top_k: int | None = None,
) -> pd.DataFrame:
    """Score one batch of the export file ``key``: the output columns, one row per
    order (both engines score through here); with ``explain_top_k`` also the
    ``REASON_COLUMNS``.

    Raises:
        ScoreInputError: Order ids repeat within the batch, contract columns are
            missing or values unparsable (naming the file and column).
    """
    source = f"{EXPORT} file {key}"
    try:
        scored = model.predictor.predict_frame(
            batch, source=source, explain_top_k=explain_top_k
        )
    except (PayloadError, ValueError, KeyError) as error:
        raise ScoreInputError(f"cannot score {source}: {error}") from error
    return _typed(scored, model, scored_at)


def log_batch(name: str, key: str, scored: pd.DataFrame) -> None:
    logger.info(
        "scored %s: %d orders of %s (%d rejected)",
        name,
        len(scored),
        key,
        int(scored["error"].notna().sum()),
    )


def _score_locally(
    orders: Mapping[str, Callable[[], pd.DataFrame]],
    model: ScoringModel,
    batch_orders: int,
    scored_at: pd.Timestamp,
    top_k: int | None,
) -> tuple[dict[str, pd.DataFrame], dict[str, int]]:
    """Every file in key order, batch by batch, in this process."""
    partitions: dict[str, pd.DataFrame] = {}
    files: dict[str, int] = {}
    for key in sorted(orders):
        frame = orders[key]()
        files[key] = len(frame)
        for batch in file_batches(frame, batch_orders):
            name = f"batch-{len(partitions):05d}"
            partitions[name] = score_batch(model, batch, key, scored_at, top_k)
            log_batch(name, key, partitions[name])
    return partitions, files


def score_orders(
    orders: Mapping[str, Callable[[], pd.DataFrame]],
    model: ScoringModel,
    score: Mapping[str, Any],
) -> tuple[dict[str, pd.DataFrame], pd.DataFrame, dict[str, Any]]:
    """Score every order of the export, batch by batch, with the engine that
    ``score.engine`` names.

    ``local`` scores the files in this process; ``ray`` scores them on Ray Data
    actors (``ray_engine``), embedded or on a cluster. Both produce the same batches,
    partition names and rows.

    On one of several hosts (``shard``: SageMaker's host list), only this host's
    files are scored, its partitions are named ``<host>-batch-00000``, ... and the
    summary records the host; the order id check covers this host's files.

    Args:
        orders: The export's files (``RawExportDataset``: key to loader).
        model: The loaded model (``load_model``).
        score: The ``score`` parameters (``batch_orders``, ``engine``, ``ray``,
            ``explain``).

    Returns:
        ``(scored_orders, scores_table, score_summary)``: one frame per batch
        (``batch-00000``, ...), all rows in one frame, and the summary (rows in,
        scored, rejected by reason, score quantiles, model, files, engine; with
        ``ray``, the Ray nodes that scored batches).

    Raises:
        ScoreInputError: The export (or this host's share of its files) holds no
            orders; order ids repeat (within a file or across files); a file lacks
            contract columns or holds unparsable values (naming the file and
            column).
        ShardConfigError: an unusable host list (``tsa_kedro.hosts.current_shard``).
        ValueError: ``score.engine`` is neither ``local`` nor ``ray``.
        RuntimeError: The output rows differ from the input rows (never expected).
    """
    batch_orders = int(score["batch_orders"])
    engine = score.get("engine", "local")
    scored_at = pd.Timestamp(datetime.now(UTC)).floor("ms")
    nodes: dict[str, int] | None = None
    shard = current_shard()
    mine = {key: orders[key] for key in shard.select(orders)}
    if engine == "local":
        partitions, files = _score_locally(
            mine, model, batch_orders, scored_at, explain_top_k(score)
        )
    elif engine == "ray":
        from tsa_kedro.pipelines.score.ray_engine import score_on_ray  # noqa: PLC0415

        partitions, files, nodes = score_on_ray(
            mine, model, score, batch_orders, scored_at
        )
    else:
        raise ValueError(f"parameter score.engine: {engine!r} is not local or ray")
    if shard.sharded:  # host-named partitions: the hosts share one folder
        partitions = {
            shard.partition_name(i): frame
            for i, frame in enumerate(partitions.values())
        }
    rows_in = sum(files.values())
    if rows_in == 0:
        where = (
            f"host {shard.host} ({shard.rank + 1} of {shard.count}): "
            if shard.sharded
            else ""
        )
        raise ScoreInputError(
            f"{where}the {EXPORT} holds no orders (files: {files}; export files: "
            f"{len(orders)})"
        )
    table = pd.concat(partitions.values(), ignore_index=True)
    if len(table) != rows_in:
        raise RuntimeError(
            f"scoring returned {len(table)} rows for {rows_in} input orders"
        )
    repeated = table["order_id"][table["order_id"].duplicated()].unique().tolist()
    if repeated:
        raise ScoreInputError(
            f"order ids repeat across the files of the {EXPORT}: {repeated[:5]}"
        )
    summary = _summary(table, rows_in, files, len(partitions), model, scored_at)
    summary["engine"] = engine
    if nodes is not None:
        summary["ray_nodes"] = nodes
    if shard.sharded:
        summary["host"] = {"name": shard.host, "rank": shard.rank, "of": shard.count}
    logger.info(
        "scored %d orders with %s version %s (%s engine): %d rejected",
        rows_in,
        model.name,
        model.version,
        engine,
        summary["rejected"],
    )
    return partitions, table, summary
