"""Model inputs for training: validation of tensor bundles, batch gathering, sharding.

A tensor bundle is the ``dict[str, numpy.ndarray]`` of ``docs/source/architecture.md``
("Tensor bundles"), usually memory-mapped. Batches are gathered from it with one
fancy-indexing call per array and batch; there is no per-sample Python loop and no
per-item collate.
"""

from __future__ import annotations

import math
import mmap
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch

SEQUENCE_KEYS = ("X_seq_cat_cid", "X_seq_num_cid", "X_seq_cat_ccid", "X_seq_num_ccid")
FEATURE_KEYS = (*SEQUENCE_KEYS, "X_num")
LABEL_KEY = "Y"
ORDER_ID_KEY = "order_id"
# Trailing columns of every numerical sequence: time delta, then the 1/0 real-row flag.
EXTRA_NUM_COLUMNS = 2
REAL_ROW_COLUMN = -1

Bundle = Mapping[str, np.ndarray]


class InputDataError(ValueError):
    """A model input (tensor bundle) that training cannot use; names the dataset."""


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


def validate_bundle(bundle: Bundle, name: str, *, labels: bool = True) -> BundleWidths:
    """Check the layout of one tensor bundle and return its widths.

    Rejected: a missing array, arrays of a wrong rank or dtype kind, arrays that disagree
    on the number of rows, cid and ccid tensors of different widths, numerical sequences
    without the two trailing time-delta/real-row columns, an empty bundle (no rows) and,
    when ``labels`` is true, labels other than 0 and 1.

    Args:
        bundle: The tensor bundle.
        name: Dataset name used in error messages (for example ``vali.model_input``).
        labels: Whether the bundle must carry a 0/1 ``Y``.

    Returns:
        The bundle's widths.

    Raises:
        InputDataError: On any of the rejected cases above.
    """
    required = FEATURE_KEYS + ((LABEL_KEY,) if labels else ())
    missing = [key for key in required if key not in bundle]
    if missing:
        raise InputDataError(f"{name}: missing arrays {missing}; has {sorted(bundle)}")
    expected_ndim = {key: 3 for key in SEQUENCE_KEYS} | {"X_num": 2, LABEL_KEY: 1}
    for key in required:
        if bundle[key].ndim != expected_ndim[key]:
            raise InputDataError(
                f"{name}: {key} has shape {bundle[key].shape}, expected "
                f"{expected_ndim[key]} dimensions"
            )
    for key in ("X_seq_cat_cid", "X_seq_cat_ccid"):
        if bundle[key].dtype.kind not in "iu":
            raise InputDataError(
                f"{name}: {key} must hold integers, got {bundle[key].dtype}"
            )
    rows = {key: bundle[key].shape[0] for key in required}
    if len(set(rows.values())) != 1:
        raise InputDataError(f"{name}: arrays disagree on the number of rows: {rows}")
    n_samples = rows["X_num"]
    if n_samples == 0:
        raise InputDataError(f"{name}: the split is empty (0 rows)")
    cat_cid, cat_ccid = bundle["X_seq_cat_cid"].shape, bundle["X_seq_cat_ccid"].shape
    num_cid, num_ccid = bundle["X_seq_num_cid"].shape, bundle["X_seq_num_ccid"].shape
    if cat_cid != cat_ccid or num_cid != num_ccid:
        raise InputDataError(
            f"{name}: cid and ccid sequences differ in shape: categorical {cat_cid} vs "
            f"{cat_ccid}, numerical {num_cid} vs {num_ccid}"
        )
    if cat_cid[1] != num_cid[1]:
        raise InputDataError(
            f"{name}: categorical and numerical sequences differ in length: "
            f"{cat_cid[1]} vs {num_cid[1]}"
        )
    if num_cid[2] < EXTRA_NUM_COLUMNS:
        raise InputDataError(
            f"{name}: X_seq_num_cid has {num_cid[2]} columns; it needs at least the "
            "time-delta and real-row columns"
        )
    if labels:
        values = np.unique(np.asarray(bundle[LABEL_KEY]))
        if not set(values.tolist()) <= {0, 1}:
            raise InputDataError(f"{name}: Y must be 0/1, found values {values[:10]}")
    return BundleWidths(
        n_samples=n_samples,
        seq_len=cat_cid[1],
        n_cat_features=cat_cid[2],
        n_num_features=num_cid[2] - EXTRA_NUM_COLUMNS,
        n_eng_features=bundle["X_num"].shape[1],
    )


def check_widths(widths: BundleWidths, expected: Mapping[str, int], name: str) -> None:
    """Reject a bundle whose widths differ from the model configuration's.

    Raises:
        InputDataError: Naming the dataset and every width that disagrees.
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
        raise InputDataError(
            f"{name}: widths disagree with the model config ({details})"
        )


def check_vocabulary(
    bundle: Bundle, name: str, vocab_size: int, chunk_rows: int = 8192
) -> None:
    """Reject category indices outside ``[0, vocab_size)``; reads the bundle in chunks.

    Raises:
        InputDataError: Naming the dataset, the array and the offending index.
    """
    for key in ("X_seq_cat_cid", "X_seq_cat_ccid"):
        array = bundle[key]
        for start in range(0, array.shape[0], chunk_rows):
            chunk = np.asarray(array[start : start + chunk_rows])
            low, high = int(chunk.min()), int(chunk.max())
            if low < 0 or high >= vocab_size:
                bad = low if low < 0 else high
                raise InputDataError(
                    f"{name}: {key} holds category index {bad}, outside the vocabulary "
                    f"[0, {vocab_size}) of cat_to_index / the model config"
                )


def labels_of(bundle: Bundle, name: str) -> np.ndarray:
    """The 0/1 labels as int64, after checking that both classes are present.

    Raises:
        InputDataError: If only one class occurs (ROC AUC would be undefined).
    """
    labels = np.asarray(bundle[LABEL_KEY]).astype(np.int64)
    positives = int(labels.sum())
    if positives in (0, labels.size):
        raise InputDataError(
            f"{name}: all {labels.size} labels are {labels[0]}; both classes are needed "
            "(ROC AUC is undefined for a single class)"
        )
    return labels


def gather_batch(bundle: Bundle, indices: np.ndarray) -> dict[str, torch.Tensor]:
    """Gather one batch of model inputs with one indexing call per array.

    Args:
        bundle: The tensor bundle (arrays may be memory-mapped).
        indices: Row indices; sorted indices read memory-mapped files sequentially.

    Returns:
        CPU tensors keyed like the bundle: categorical int32 or int64 as stored (other
        integer types become int64), numerical float32, and ``Y`` as int64 when present.
    """
    batch = {}
    for key in FEATURE_KEYS:
        values = bundle[key][indices]
        if key.startswith("X_seq_cat"):
            if values.dtype not in (np.int32, np.int64):
                values = values.astype(np.int64)
            batch[key] = torch.from_numpy(values)
        else:
            batch[key] = torch.from_numpy(values.astype(np.float32, copy=False))
    if LABEL_KEY in bundle:
        batch[LABEL_KEY] = torch.from_numpy(bundle[LABEL_KEY][indices].astype(np.int64))
    return batch


def model_arguments(batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """The model's positional inputs, in the order of its ``forward``."""
    return (
        batch["X_seq_cat_cid"],
        batch["X_seq_num_cid"],
        batch["X_seq_cat_ccid"],
        batch["X_seq_num_ccid"],
        batch["X_num"],
    )


class ShardedBatchSampler:
    """Batches of row indices for one rank of ``world_size``.

    Every epoch the rows are shuffled with a generator seeded by ``(seed, epoch)``, so
    every rank draws the same permutation without communicating; the permutation is
    padded by wrapping around to a multiple of ``world_size`` and rank ``r`` takes every
    ``world_size``-th row starting at ``r``. Every rank therefore sees the same number of
    rows and batches, which DDP needs (a rank with one batch less would hang the others).
    Indices within a batch are sorted so memory-mapped reads go forward.
    """

    def __init__(
        self,
        n_samples: int,
        batch_size: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of size {world_size}")
        self.n_samples = n_samples
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    @property
    def rows_per_rank(self) -> int:
        """Rows each rank sees per epoch (after padding)."""
        return -(-self.n_samples // self.world_size)

    def __len__(self) -> int:
        return math.ceil(self.rows_per_rank / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch`` (call before iterating)."""
        self.epoch = epoch

    def rank_indices(self) -> np.ndarray:
        """This rank's rows for the current epoch, in visiting order."""
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch])
            order = rng.permutation(self.n_samples)
        else:
            order = np.arange(self.n_samples)
        padded = np.resize(order, self.rows_per_rank * self.world_size)
        return padded[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[np.ndarray]:
        indices = self.rank_indices()
        for start in range(0, indices.size, self.batch_size):
            yield np.sort(indices[start : start + self.batch_size])

    def state_dict(self) -> dict[str, int | bool]:
        """Everything needed to draw the same batches again."""
        return {
            "n_samples": self.n_samples,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "epoch": self.epoch,
        }

    def load_state_dict(self, state: Mapping[str, int | bool]) -> None:
        """Restore the epoch; the rest must match this sampler (checked)."""
        mine = self.state_dict()
        differing = {
            key: (state[key], mine[key])
            for key in mine
            if key != "epoch" and key in state and state[key] != mine[key]
        }
        if differing:
            raise ValueError(f"sampler state does not match this run: {differing}")
        self.epoch = int(state["epoch"])


def shard_range(n_samples: int, rank: int, world_size: int) -> tuple[int, int]:
    """Contiguous ``[start, stop)`` rows of rank ``rank`` for evaluation (no padding)."""
    bounds = np.linspace(0, n_samples, world_size + 1).astype(np.int64)
    return int(bounds[rank]), int(bounds[rank + 1])


@dataclass(frozen=True)
class MappedArray:
    """A picklable reference to a memory-mapped array (file, dtype, shape, offset)."""

    filename: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    fortran_order: bool

    def open(self) -> np.memmap:
        """Map the file again, read-only."""
        return np.memmap(
            self.filename,
            dtype=np.dtype(self.dtype),
            mode="r",
            offset=self.offset,
            shape=self.shape,
            order="F" if self.fortran_order else "C",
        )


def detach_bundle(bundle: Bundle) -> dict[str, np.ndarray | MappedArray]:
    """Replace memory-mapped arrays by references, so that sending the bundle to a
    worker process does not copy the data (pickling a memmap copies its contents)."""
    detached: dict[str, np.ndarray | MappedArray] = {}
    for key, array in bundle.items():
        # Only a map of a whole file (its base is the mmap itself) has a valid offset.
        if isinstance(array, np.memmap) and isinstance(array.base, mmap.mmap):
            detached[key] = MappedArray(
                filename=str(array.filename),
                dtype=array.dtype.str,
                shape=tuple(array.shape),
                offset=int(array.offset),
                fortran_order=not array.flags.c_contiguous,
            )
        else:
            detached[key] = array
    return detached


def attach_bundle(
    bundle: Mapping[str, np.ndarray | MappedArray],
) -> dict[str, np.ndarray]:
    """Inverse of :func:`detach_bundle`."""
    return {
        key: value.open() if isinstance(value, MappedArray) else value
        for key, value in bundle.items()
    }
