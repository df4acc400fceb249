"""Batch gathering from memory-mapped tensor bundles at production widths.

Compares the training loop's gathering (one fancy-indexing call per array and batch,
``tsa_kedro.features.contract.gather_batch``) with the straightforward alternative: a
``torch.utils.data.Dataset`` returning one row at a time, batched by ``DataLoader``'s
default collate. Both read the same memory-mapped ``.npy`` files with the same shuffled
batches of 640 rows; the figure is rows per second and the ratio between the two.

Run: ``python -m benchmarks.batch_gather [--rows 4000] [--batches 20]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from tsa_kedro.features.contract import FEATURE_KEYS, gather_batch
from tsa_kedro.training.data import ShardedBatchSampler

SEQ_LEN, N_CAT, N_NUM, N_ENG = 51, 109, 67, 297
BATCH = 640


def write_bundle(folder: Path, rows: int) -> dict[str, np.ndarray]:
    """Random production-width arrays saved as ``.npy`` and mapped back read-only."""
    rng = np.random.default_rng(0)
    shapes = {
        "X_seq_cat_cid": ((rows, SEQ_LEN, N_CAT), np.int32),
        "X_seq_num_cid": ((rows, SEQ_LEN, N_NUM + 2), np.float32),
        "X_seq_cat_ccid": ((rows, SEQ_LEN, N_CAT), np.int32),
        "X_seq_num_ccid": ((rows, SEQ_LEN, N_NUM + 2), np.float32),
        "X_num": ((rows, N_ENG), np.float32),
        "Y": ((rows,), np.int8),
    }
    for key, (shape, dtype) in shapes.items():
        if np.issubdtype(dtype, np.integer):
            values = rng.integers(0, 100, size=shape, dtype=dtype)
        else:
            values = rng.random(shape, dtype=np.float32)
        np.save(folder / f"{key}.npy", values)
    return {key: np.load(folder / f"{key}.npy", mmap_mode="r") for key in shapes}


class RowDataset(Dataset):
    """One row per ``__getitem__``: what a per-sample pipeline does."""

    def __init__(self, bundle: dict[str, np.ndarray]):
        self.bundle = bundle

    def __len__(self) -> int:
        return self.bundle["Y"].shape[0]

    def __getitem__(self, row: int) -> dict[str, torch.Tensor]:
        item = {
            key: torch.from_numpy(np.array(self.bundle[key][row]))
            for key in FEATURE_KEYS
        }
        item["Y"] = torch.tensor(int(self.bundle["Y"][row]))
        return item


def time_fancy(bundle: dict[str, np.ndarray], batches: list[np.ndarray]) -> float:
    """Rows per second with one indexing call per array and batch."""
    started = time.perf_counter()
    for indices in batches:
        gather_batch(bundle, indices)
    return sum(b.size for b in batches) / (time.perf_counter() - started)


def time_per_row(bundle: dict[str, np.ndarray], batches: list[np.ndarray]) -> float:
    """Rows per second with per-row ``__getitem__`` and the default collate."""
    loader = DataLoader(RowDataset(bundle), batch_sampler=batches, num_workers=0)
    started = time.perf_counter()
    for _ in loader:
        pass
    return sum(b.size for b in batches) / (time.perf_counter() - started)


def main() -> None:
    """Measure both ways twice (the first pass warms the page cache) and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory(prefix="tsa-bench-") as tmp:
        bundle = write_bundle(Path(tmp), args.rows)
        sampler = ShardedBatchSampler(args.rows, BATCH, seed=0)
        batches = list(sampler)[: args.batches]
        time_fancy(bundle, batches)
        fancy = time_fancy(bundle, batches)
        per_row = time_per_row(bundle, batches)
    print(f"rows {args.rows}, batch {BATCH}, production widths")
    print(f"one indexing call per array and batch: {fancy:10.0f} rows/s")
    print(f"per-row Dataset + default collate:     {per_row:10.0f} rows/s")
    print(f"ratio: {fancy / per_row:.1f}x")


if __name__ == "__main__":
    main()
