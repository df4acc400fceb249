"""Vectorised conversion of raw orders into the model's tensors.

``build_tensors`` turns a DataFrame of normalised raw orders (the ``<split>.raw_chunks``
contract, docs/source/architecture.md) into the tensor bundle the model reads. The same
function serves training preprocessing (many orders, labels required) and the inference
handler (one order, no label), so both produce identical tensors.

How it stays vectorised: every history column is split in bulk by Arrow
(``split_pattern``), which yields one flat array of tokens plus per-order offsets; the
tokens are encoded with one Arrow call per column (``index_in`` against the feature's
vocabulary, or a ``cast`` to float64 after a null-token mask found from the token
lengths). All history columns of an order hold as many values as its history
timestamps (rows that do not are dropped as ragged), so the encoded tokens of every
column of an id type are staged in the timestamps' layout, one contiguous row per
feature. The tokens to keep (the last ``seq_len - 1`` of each history) and their
destination rows in the preallocated output are computed once per id type from the
history lengths, and one gather per staged array moves them into place. There is no
Python loop over orders, only over columns.

Requests take a second route to the same tensors (``columns_together=True``, what
the inference handler passes): there per-column calls rather than tokens are the cost
(a production request has hundreds of columns of a few tokens each), so all text
columns are converted to Arrow in one call and each kind of history column
(categorical, numerical) of an id type is split in one call, the numerical tokens
parsed and scaled in one call (``history._stage_together``), and the categorical tokens
of all features (history and current order) looked up in one call against one hash
index of every feature's vocabulary (``encoding.CombinedLookup``, built on first use
and kept). Chunks go column by column, releasing each column's text once staged, which
bounds a worker's memory.

Per order and id type (``cid``, ``ccid``) the sequence is the history (oldest first)
followed by the current order, truncated to the last ``seq_len`` rows and left-padded
with zeros. Numerical rows carry two extra trailing columns: the time delta
``t_current - t_k`` in seconds, capped at ``delta_cap_seconds``, and a 1/0 real-row flag.

Rejected rows (dropped and counted in ``stats["dropped"]``, first matching reason wins):

- ``unlabelled``: null or -1 label (only when labels are required);
- ``ragged_history_<id_type>``: a history column holds a different number of values
  than the history's timestamps (or values where the history is empty);
- ``missing_history_timestamp_<id_type>``: a history timestamp is a null token;
- ``negative_delta_<id_type>``: a history order is later than the current order.

Rejected inputs (``ValueError``/``KeyError`` naming the column): a missing column, a
label outside {0, 1, -1, null}, a null current-order timestamp, a numerical value or
history token that does not parse as a number. These modules import neither Kedro nor R.

The modules, in the order the work happens:

- ``tsa_kedro.features.encoding``: the fitted transforms as lookup arrays
  (``prepare_transforms`` and ``PreparedTransforms``, re-exported here), the categorical
  lookups, imputing and scaling;
- ``tsa_kedro.features.columns``: raw columns as Arrow text and numbers, history columns
  split into tokens;
- ``tsa_kedro.features.history``: the histories checked, encoded, staged and gathered
  into the sequences;
- this module: the tensor parameters, which rows are dropped and why, the current
  order, the bundle and its stats.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from tsa_kedro.features.columns import RawColumns, numeric_matrix
from tsa_kedro.features.contract import (
    CAT_PREFIX,
    DENSE_KEY,
    EXTRA_NUM_COLUMNS,
    LABEL_KEY,
    NUM_PREFIX,
    ORDER_ID_KEY,
)
from tsa_kedro.features.encoding import (
    CategoryCounts,
    PreparedTransforms,
    impute_scale,
    lookup_positions,
    prepare_transforms,
)
from tsa_kedro.features.history import History, scan_history, sequences
from tsa_kedro.schema import ID_TYPES, RawSchema

__all__ = [
    "DELTA_BIN_EDGES",
    "DROP_REASONS",
    "PreparedTransforms",
    "TensorParams",
    "build_tensors",
    "prepare_transforms",
]

DROP_REASONS = (
    "unlabelled",
    *(f"ragged_history_{t}" for t in ID_TYPES),
    *(f"missing_history_timestamp_{t}" for t in ID_TYPES),
    *(f"negative_delta_{t}" for t in ID_TYPES),
)
# Bins of the time-delta summary: a minute, an hour, a day, a week, 30 days, a year.
DELTA_BIN_EDGES = (0.0, 60.0, 3600.0, 86400.0, 604800.0, 2592000.0, 31536000.0)


@dataclass(frozen=True)
class TensorParams:
    """Shape parameters of the tensors (from the ``preprocess`` parameters).

    Attributes:
        seq_len: Rows per sequence, the current order included.
        delta_cap_seconds: Time deltas above this are set to it.
        scaled_clip: Scaled numericals (0..1 over the training range) are clipped to
            ``[-scaled_clip, 1 + scaled_clip]``: a value far outside what training
            saw (an amount of 1e308) cannot push the network anywhere it never was.
            Clipped values are counted per feature (``stats["clipped"]``).
    """

    seq_len: int
    delta_cap_seconds: float = 1e7
    scaled_clip: float = 3.0

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> TensorParams:
        """Read ``seq_len``, ``delta_cap_seconds`` and ``scaled_clip``; other keys
        are ignored."""
        seq_len = params.get("seq_len")
        if not isinstance(seq_len, int) or isinstance(seq_len, bool) or seq_len < 1:
            raise ValueError(
                f"preprocess.seq_len must be an integer >= 1, got {seq_len!r}"
            )
        cap = float(params.get("delta_cap_seconds", 1e7))
        if not cap > 0:
            raise ValueError(f"preprocess.delta_cap_seconds must be > 0, got {cap!r}")
        clip = params.get("scaled_clip", 3.0)
        if isinstance(clip, bool) or not isinstance(clip, int | float) or not clip > 0:
            raise ValueError(
                f"preprocess.scaled_clip must be a number > 0, got {clip!r}"
            )
        return cls(seq_len=seq_len, delta_cap_seconds=cap, scaled_clip=float(clip))


def _labels(raw: RawColumns, column: str) -> np.ndarray:
    """Labels as int8 with -1 for unlabelled; other values are rejected."""
    values = raw.numbers(column)
    unlabelled = np.isnan(values) | (values == -1)
    bad = ~unlabelled & (values != 0) & (values != 1)
    if bad.any():
        examples = sorted(set(values[bad].tolist()))[:5]
        raise ValueError(
            f"label column {column!r} must hold 0, 1, -1 or null; found {examples}"
        )
    return np.where(unlabelled, -1, values).astype(np.int8)


def _select_rows(
    raw: RawColumns,
    schema: RawSchema,
    transforms: PreparedTransforms,
    now: np.ndarray,
    params: TensorParams,
    labels: bool,
) -> tuple[np.ndarray, np.ndarray | None, dict[str, History], dict[str, int]]:
    """Apply the label filter and the history checks, first reason wins.

    Returns:
        Kept row positions, labels (-1 = unlabelled; None without labels), the
        scanned histories and the drop counts by reason.
    """
    dropped = dict.fromkeys(DROP_REASONS, 0)
    keep = np.ones(len(raw), dtype=bool)

    def drop(reason: str, mask: np.ndarray) -> None:
        newly = keep & mask
        dropped[reason] += int(np.count_nonzero(newly))
        keep[newly] = False

    y = None
    if labels:
        y = _labels(raw, schema.label)
        drop("unlabelled", y < 0)
    history = {
        t: scan_history(raw, schema, transforms, t, now, params.delta_cap_seconds)
        for t in ID_TYPES
    }
    for check, reason in (
        ("ragged", "ragged_history"),
        ("missing_time", "missing_history_timestamp"),
        ("negative", "negative_delta"),
    ):
        for id_type in ID_TYPES:
            drop(f"{reason}_{id_type}", getattr(history[id_type], check))
    return np.flatnonzero(keep), y, history, dropped


def _current_categoricals(
    raw: RawColumns,
    schema: RawSchema,
    transforms: PreparedTransforms,
    rows: np.ndarray,
    counts: CategoryCounts,
) -> np.ndarray:
    """The kept rows' categorical codes, ``[rows, n_cat]`` int32; counts statuses."""
    features = schema.cat_features
    if raw.together:  # all features in one lookup
        taken = pa.array(rows, type=pa.int64())
        texts = [raw.text(feature) for feature in features]
        if rows.size < len(raw):
            texts = [text.take(taken) for text in texts]
        feature = [transforms.combined.features[f] for f in features]
        codes, status = transforms.combined.encode(
            pa.concat_arrays(texts), np.repeat(feature, rows.size)
        )
        counts.add_all(status.reshape(len(features), rows.size))
        return np.ascontiguousarray(codes.reshape(len(features), rows.size).T)
    current = np.empty((rows.size, len(features)), dtype=np.int32)
    for i, feature in enumerate(features):
        encoder = transforms.categorical[feature]
        position = lookup_positions(raw.text(feature), encoder)[rows]
        current[:, i] = encoder.codes[position]
        counts.add(feature, encoder.status[position])
    return current


def _clip_scaled(
    bundle: dict[str, np.ndarray], schema: RawSchema, clip: float
) -> dict[str, int]:
    """Clip the scaled numericals of ``bundle`` to ``[-clip, 1 + clip]`` in place
    (sequence features of both id types, then the engineered ones); how many values
    each feature had outside that range."""
    low, high = -clip, 1.0 + clip
    n_num = len(schema.num_features)
    clipped = dict.fromkeys((*schema.num_features, *schema.eng_features), 0)
    blocks = [
        (bundle[NUM_PREFIX + t][..., :n_num], schema.num_features) for t in ID_TYPES
    ]
    blocks.append((bundle[DENSE_KEY], schema.eng_features))
    for values, features in blocks:
        outside = (values < low) | (values > high)
        if outside.any():
            per_feature = outside.reshape(-1, len(features)).sum(axis=0)
            for feature, count in zip(features, per_feature.tolist(), strict=True):
                clipped[feature] += count
            np.clip(values, low, high, out=values)
    return clipped


def _delta_summary(deltas: np.ndarray, cap: float) -> dict[str, Any]:
    """Mergeable summary of the real history rows' uncapped time deltas."""
    edges = np.asarray((*DELTA_BIN_EDGES, np.inf))
    histogram, _ = np.histogram(deltas, bins=edges)
    return {
        "count": int(deltas.size),
        "sum": float(deltas.sum()),
        "min": float(deltas.min()) if deltas.size else None,
        "max": float(deltas.max()) if deltas.size else None,
        "capped": int(np.count_nonzero(deltas > cap)),
        "bin_edges_seconds": list(DELTA_BIN_EDGES),
        "histogram": histogram.tolist(),
    }


def build_tensors(
    raw: pd.DataFrame,
    schema: RawSchema,
    transforms: PreparedTransforms,
    params: TensorParams,
    labels: bool = True,
    columns_together: bool = False,
    consume: bool = False,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Turn normalised raw orders into the model's tensor bundle.

    Args:
        raw: Normalised raw orders (one row per order).
        schema: The raw contract.
        transforms: ``prepare_transforms`` of the fitted JSON transforms.
        params: Sequence length and time-delta cap.
        labels: Whether labels are required: unlabelled rows are dropped and ``Y`` is
            part of the bundle. Inference passes False (no label column needed).
        columns_together: The request route (the inference handler): all text
            columns converted in one call, each kind of history column of an id type
            split and parsed in one call, every categorical token looked up in one
            call. Otherwise column by column (chunks: each column's text released
            once staged, which bounds a worker's memory). The same tensors either way.
        consume: Take the history columns out of ``raw`` and free each once it is
            staged (the caller hands the frame over and gets it back without them):
            a worker's raw text then shrinks while its tensors grow.

    Returns:
        ``(bundle, stats)``: the arrays of docs/source/architecture.md (``Y`` only with
        labels) and counts: ``rows_in``, ``rows_out``, ``dropped`` by reason,
        ``clipped`` scaled numericals by feature,
        ``positives``, per-feature ``unseen``/``present`` categorical counts, and the
        time-delta summary.

    Raises:
        KeyError: A column of the schema is absent.
        ValueError: A label, timestamp or numerical value is invalid (see module doc).
    """
    taken = [c for t in ID_TYPES for c in schema.history_columns(t)] if consume else []
    raw = RawColumns(raw, columns_together, taken)
    now = raw.numbers(schema.timestamp)
    if np.isnan(now).any():
        raise ValueError(f"timestamp column {schema.timestamp!r} holds null values")
    rows, y, history, dropped = _select_rows(
        raw, schema, transforms, now, params, labels
    )
    counts = CategoryCounts(schema)

    # the current order is the last row of both sequences
    current_cat = _current_categoricals(raw, schema, transforms, rows, counts)
    current_num = impute_scale(
        numeric_matrix(raw, schema.num_features, rows),
        transforms.seq_min,
        transforms.seq_span,
        transforms.seq_default,
        transforms.seq_log,
    )
    n_cat, n_num = current_cat.shape[1], current_num.shape[1]
    seq_len = params.seq_len
    last = np.arange(rows.size) * seq_len + seq_len - 1  # the current order's cells

    bundle: dict[str, np.ndarray] = {}
    deltas = []
    for id_type in ID_TYPES:
        cat, num, delta = sequences(
            history.pop(id_type), counts=counts, rows=rows, seq_len=seq_len
        )
        cat[last] = current_cat
        num[last, :n_num] = current_num
        num[last, n_num + 1] = 1.0  # the current order's delta stays 0
        bundle[CAT_PREFIX + id_type] = cat.reshape(rows.size, seq_len, n_cat)
        bundle[NUM_PREFIX + id_type] = num.reshape(
            rows.size, seq_len, n_num + EXTRA_NUM_COLUMNS
        )
        del cat, num
        deltas.append(delta)

    bundle[DENSE_KEY] = impute_scale(
        numeric_matrix(raw, schema.eng_features, rows),
        transforms.dense_min,
        transforms.dense_span,
        transforms.dense_default,
        transforms.dense_log,
    ).astype(np.float32)
    if y is not None:
        bundle[LABEL_KEY] = y[rows]
    order_ids = raw.frame[schema.order_id].to_numpy()[rows]
    bundle[ORDER_ID_KEY] = np.asarray(order_ids.astype(str), dtype=np.str_)

    stats = {
        "rows_in": len(raw),
        "rows_out": int(rows.size),
        "dropped": dropped,
        "clipped": _clip_scaled(bundle, schema, params.scaled_clip),
        "positives": (
            int(np.count_nonzero(bundle[LABEL_KEY] == 1)) if y is not None else None
        ),
        "unseen": counts.counts(),
        "delta": _delta_summary(np.concatenate(deltas), params.delta_cap_seconds),
    }
    return bundle, stats
