"""The tensor contract: what preprocessing writes and merge, training and serving read.

A tensor bundle is a ``dict[str, numpy.ndarray]`` (often memory-mapped, see
``tsa_kedro.datasets.TensorBundleDataset``), one row per order:

- ``X_seq_cat_cid``, ``X_seq_cat_ccid``: int32 ``(N, seq_len, n_cat)``, category
  indices (0 = padding or unknown);
- ``X_seq_num_cid``, ``X_seq_num_ccid``: float32 ``(N, seq_len, n_num + 2)``, scaled
  numericals, then the time delta and the 1/0 real-row flag;
- ``X_num``: float32 ``(N, n_eng)``, scaled engineered features of the current order;
- ``Y``: int8 ``(N,)``, the 0/1 fraud tag (training splits only);
- ``order_id``: unicode ``(N,)``, the order's id.

Sequences hold the history, oldest first, then the current order as the last row,
left-padded with zero rows. Every module that builds, checks, merges or batches
bundles takes its names and layout from here. Only ``gather_batch`` needs torch, and
imports it when called, so preprocessing workers stay free of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tsa_kedro.schema import ID_TYPES, RawSchema

if TYPE_CHECKING:
    import torch

CAT_PREFIX, NUM_PREFIX = "X_seq_cat_", "X_seq_num_"
CAT_KEYS = tuple(f"{CAT_PREFIX}{t}" for t in ID_TYPES)
NUM_KEYS = tuple(f"{NUM_PREFIX}{t}" for t in ID_TYPES)
SEQUENCE_KEYS = tuple(k for t in ID_TYPES for k in (CAT_PREFIX + t, NUM_PREFIX + t))
DENSE_KEY = "X_num"
FEATURE_KEYS = (*SEQUENCE_KEYS, DENSE_KEY)
LABEL_KEY = "Y"
ORDER_ID_KEY = "order_id"
BUNDLE_KEYS = (*FEATURE_KEYS, LABEL_KEY, ORDER_ID_KEY)

CAT_DTYPE = np.dtype(np.int32)
NUM_DTYPE = np.dtype(np.float32)
LABEL_DTYPE = np.dtype(np.int8)
# Trailing columns of every numerical sequence row: time delta, then the real-row flag.
EXTRA_NUM_COLUMNS = 2
DELTA_COLUMN = -2
REAL_ROW_COLUMN = -1

Bundle = Mapping[str, np.ndarray]


class TensorContractError(ValueError):
    """A tensor bundle breaks the contract; the message names the bundle and array."""


def expected_layout(
    schema: RawSchema, seq_len: int
) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """dtype and per-row shape of every array but ``order_id``."""
    n_cat, n_num = len(schema.cat_features), len(schema.num_features)
    layout = {}
    for id_type in ID_TYPES:
        layout[CAT_PREFIX + id_type] = (CAT_DTYPE, (seq_len, n_cat))
        layout[NUM_PREFIX + id_type] = (NUM_DTYPE, (seq_len, n_num + EXTRA_NUM_COLUMNS))
    layout[DENSE_KEY] = (NUM_DTYPE, (len(schema.eng_features),))
    layout[LABEL_KEY] = (LABEL_DTYPE, ())
    return layout


@dataclass(frozen=True)
class BundleWidths:
    """Shape facts of one tensor bundle."""

    n_samples: int
    seq_len: int
    n_cat_features: int
    n_num_features: int  # without the time-delta and real-row columns
    n_eng_features: int

    def model_widths(self) -> dict[str, int]:
        """The widths in the model configuration's field names."""
        return {
            "seq_len": self.seq_len,
            "n_cat_features": self.n_cat_features,
            "n_num_features": self.n_num_features,
            "n_eng_features": self.n_eng_features,
        }


def bundle_widths(bundle: Bundle, name: str, *, labels: bool = True) -> BundleWidths:
    """Check the layout of a model input and return its widths.

    Rejected: a missing array, arrays of a wrong rank or dtype kind, arrays that disagree
    on the number of rows, cid and ccid tensors of different widths, numerical sequences
    without the two trailing time-delta/real-row columns, an empty bundle (no rows) and,
    when ``labels`` is true, labels other than 0 and 1.

    Args:
        bundle: The tensor bundle.
        name: Dataset name used in error messages (for example ``vali.model_input``).
        labels: Whether the bundle must carry a 0/1 ``Y``.

    Raises:
        TensorContractError: On any of the rejected cases above.
    """
    required = FEATURE_KEYS + ((LABEL_KEY,) if labels else ())
    missing = [key for key in required if key not in bundle]
    if missing:
        raise TensorContractError(
            f"{name}: missing arrays {missing}; has {sorted(bundle)}"
        )
    expected_ndim = {key: 3 for key in SEQUENCE_KEYS} | {DENSE_KEY: 2, LABEL_KEY: 1}
    for key in required:
        if bundle[key].ndim != expected_ndim[key]:
            raise TensorContractError(
                f"{name}: {key} has shape {bundle[key].shape}, expected "
                f"{expected_ndim[key]} dimensions"
            )
    for key in CAT_KEYS:
        if bundle[key].dtype.kind not in "iu":
            raise TensorContractError(
                f"{name}: {key} must hold integers, got {bundle[key].dtype}"
            )
    rows = {key: bundle[key].shape[0] for key in required}
    if len(set(rows.values())) != 1:
        raise TensorContractError(
            f"{name}: arrays disagree on the number of rows: {rows}"
        )
    n_samples = rows[DENSE_KEY]
    if n_samples == 0:
        raise TensorContractError(f"{name}: the split is empty (0 rows)")
    cat_cid, cat_ccid = (bundle[k].shape for k in CAT_KEYS)
    num_cid, num_ccid = (bundle[k].shape for k in NUM_KEYS)
    if cat_cid != cat_ccid or num_cid != num_ccid:
        raise TensorContractError(
            f"{name}: cid and ccid sequences differ in shape: categorical {cat_cid} vs "
            f"{cat_ccid}, numerical {num_cid} vs {num_ccid}"
        )
    if cat_cid[1] != num_cid[1]:
        raise TensorContractError(
            f"{name}: categorical and numerical sequences differ in length: "
            f"{cat_cid[1]} vs {num_cid[1]}"
        )
    if num_cid[2] < EXTRA_NUM_COLUMNS:
        raise TensorContractError(
            f"{name}: {NUM_KEYS[0]} has {num_cid[2]} columns; it needs at least the "
            "time-delta and real-row columns"
        )
    if labels:
        values = np.unique(np.asarray(bundle[LABEL_KEY]))
        if not set(values.tolist()) <= {0, 1}:
            raise TensorContractError(
                f"{name}: Y must be 0/1, found values {values[:10]}"
            )
    return BundleWidths(
        n_samples=n_samples,
        seq_len=cat_cid[1],
        n_cat_features=cat_cid[2],
        n_num_features=num_cid[2] - EXTRA_NUM_COLUMNS,
        n_eng_features=bundle[DENSE_KEY].shape[1],
    )


def check_chunk(
    chunk_id: str, bundle: Bundle, schema: RawSchema, seq_len: int, vocab_size: int
) -> int:
    """Check one preprocessing chunk exactly against the contract; its row count.

    Stricter than ``bundle_widths``: every key present, exact dtypes and shapes for
    ``schema`` and ``seq_len``, no NaN or infinity, categories inside the vocabulary,
    labels in {0, 1}, ``order_id`` unicode.

    Raises:
        TensorContractError: Naming the chunk and the array at fault.
    """

    def fail(key: str, problem: str) -> TensorContractError:
        return TensorContractError(
            f"tensor chunk {chunk_id!r}, array {key!r}: {problem}"
        )

    missing = [key for key in BUNDLE_KEYS if key not in bundle]
    if missing:
        raise fail(missing[0], f"missing (bundle holds {sorted(bundle)})")
    rows = len(bundle[LABEL_KEY])
    for key, (dtype, row_shape) in expected_layout(schema, seq_len).items():
        array = bundle[key]
        if array.dtype != dtype:
            raise fail(key, f"dtype {array.dtype}, expected {dtype}")
        if array.shape != (rows, *row_shape):
            raise fail(key, f"shape {array.shape}, expected {(rows, *row_shape)}")
        if dtype.kind == "f" and not np.isfinite(array).all():
            raise fail(key, "holds NaN or infinite values")
    check_vocabulary(bundle, f"tensor chunk {chunk_id!r}", vocab_size)
    labels = bundle[LABEL_KEY]
    if labels.size and not np.isin(labels, (0, 1)).all():
        raise fail(
            LABEL_KEY, f"labels outside {{0, 1}}: {sorted(set(labels.tolist()))[:5]}"
        )
    order_id = bundle[ORDER_ID_KEY]
    if order_id.dtype.kind != "U" or order_id.shape != (rows,):
        raise fail(
            ORDER_ID_KEY,
            f"dtype {order_id.dtype} shape {order_id.shape}, expected unicode [{rows}]",
        )
    return rows


def check_widths(widths: BundleWidths, expected: Mapping[str, int], name: str) -> None:
    """Reject a bundle whose widths differ from the model configuration's.

    Raises:
        TensorContractError: Naming the dataset and every width that disagrees.
    """
    found = widths.model_widths()
    wrong = {
        key: (found[key], expected[key])
        for key in found
        if key in expected and expected[key] != found[key]
    }
    if wrong:
        details = ", ".join(
            f"{k}: data {d} vs config {c}" for k, (d, c) in wrong.items()
        )
        raise TensorContractError(
            f"{name}: widths disagree with the model config ({details})"
        )


def check_vocabulary(
    bundle: Bundle, name: str, vocab_size: int, chunk_rows: int = 8192
) -> None:
    """Reject category indices outside ``[0, vocab_size)``; reads the bundle in chunks.

    Raises:
        TensorContractError: Naming the dataset, the array and the offending index.
    """
    for key in CAT_KEYS:
        array = bundle[key]
        for start in range(0, array.shape[0], chunk_rows):
            chunk = np.asarray(array[start : start + chunk_rows])
            if not chunk.size:
                continue
            low, high = int(chunk.min()), int(chunk.max())
            if low < 0 or high >= vocab_size:
                bad = low if low < 0 else high
                raise TensorContractError(
                    f"{name}, array {key!r}: category index {bad} is outside the "
                    f"vocabulary [0, {vocab_size}) of cat_to_index / the model config"
                )


def batch_dtype(key: str, stored: np.dtype) -> np.dtype:
    """The dtype ``gather_batch`` gives array ``key`` stored as ``stored``:
    categorical int32 or int64 as stored (other integer types become int64),
    numerical float32, and the labels int64."""
    if key == LABEL_KEY:
        return np.dtype(np.int64)
    if key in CAT_KEYS:
        return stored if stored in (np.int32, np.int64) else np.dtype(np.int64)
    return np.dtype(np.float32)


def gather_batch(bundle: Bundle, indices: np.ndarray) -> dict[str, torch.Tensor]:
    """Gather one batch of model inputs with one indexing call per array.

    Args:
        bundle: The tensor bundle (arrays may be memory-mapped).
        indices: Row indices; sorted indices read memory-mapped files sequentially.

    Returns:
        CPU tensors keyed like the bundle, in the dtypes of ``batch_dtype``.
    """
    import torch  # noqa: PLC0415 (preprocessing imports this module without torch)

    keys = (*FEATURE_KEYS, LABEL_KEY) if LABEL_KEY in bundle else FEATURE_KEYS
    batch = {}
    for key in keys:
        values = bundle[key][indices]
        batch[key] = torch.from_numpy(
            values.astype(batch_dtype(key, values.dtype), copy=False)
        )
    return batch


def model_arguments(batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """The model's positional inputs, in the order of its ``forward``."""
    return tuple(batch[key] for key in FEATURE_KEYS)
