"""Test material for the training stage: tiny tensor bundles with a planted temporal
signal, and a small stand-in classifier with the TSA model's ``forward`` signature."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

WIDTHS = {"seq_len": 6, "n_cat_features": 3, "n_num_features": 2, "n_eng_features": 4}
VOCAB_SIZE = 30
HOUR = 3600.0


def make_bundle(
    n_rows: int,
    seed: int,
    *,
    positive_rate: float = 0.3,
    seq_len: int = WIDTHS["seq_len"],
    n_cat: int = WIDTHS["n_cat_features"],
    n_num: int = WIDTHS["n_num_features"],
    n_eng: int = WIDTHS["n_eng_features"],
    vocab_size: int = VOCAB_SIZE,
) -> dict[str, np.ndarray]:
    """A tensor bundle laid out as docs/source/architecture.md says.

    Fraud is planted in the history only: a fraudulent order follows two or more orders
    of the same customer within the last hour, a legitimate one follows orders that are
    at least a day old. Current-order features and X_num are noise.
    """
    rng = np.random.default_rng(seed)
    labels = (rng.random(n_rows) < positive_rate).astype(np.int8)
    history = rng.integers(2, seq_len, size=n_rows)  # rows before the current one
    deltas = rng.uniform(1.5, 30.0, size=(n_rows, seq_len)) * 24 * HOUR
    recent = rng.uniform(60.0, 0.9 * HOUR, size=(n_rows, seq_len))
    recent_rows = np.arange(seq_len)[None, :] >= seq_len - 3  # the two before current
    deltas = np.where(labels[:, None].astype(bool) & recent_rows, recent, deltas)
    deltas = -np.sort(-deltas, axis=1)  # older rows have larger deltas
    deltas[:, -1] = 0.0
    real = np.arange(seq_len)[None, :] >= seq_len - 1 - history[:, None]

    def sequence() -> tuple[np.ndarray, np.ndarray]:
        cats = rng.integers(1, vocab_size, size=(n_rows, seq_len, n_cat)).astype(np.int32)
        nums = rng.random((n_rows, seq_len, n_num)).astype(np.float32)
        nums = np.concatenate(
            [nums, deltas[..., None].astype(np.float32), np.ones((n_rows, seq_len, 1))],
            axis=2,
        ).astype(np.float32)
        cats[~real] = 0
        nums[~real] = 0.0
        return cats, nums

    cat_cid, num_cid = sequence()
    cat_ccid, num_ccid = sequence()
    return {
        "X_seq_cat_cid": cat_cid,
        "X_seq_num_cid": num_cid,
        "X_seq_cat_ccid": cat_ccid,
        "X_seq_num_ccid": num_ccid,
        "X_num": rng.random((n_rows, n_eng)).astype(np.float32),
        "Y": labels,
        "order_id": np.array([f"o{seed}-{i}" for i in range(n_rows)]),
    }


class TinyTSA(nn.Module):
    """Stand-in classifier: per-row embeddings, masked mean over rows, an MLP."""

    def __init__(
        self,
        n_cat_features: int = WIDTHS["n_cat_features"],
        n_num_features: int = WIDTHS["n_num_features"],
        n_eng_features: int = WIDTHS["n_eng_features"],
        vocab_size: int = VOCAB_SIZE,
        dim: int = 8,
    ):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim)
        self.numeric = nn.Linear(n_num_features + 2, dim)
        self.head = nn.Sequential(
            nn.Linear(2 * dim + n_eng_features, 16),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Linear(16, 2),
        )

    def _sequence(self, cat: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        real = num[..., -1:]  # (B, L, 1)
        hours = torch.log1p(num[..., -2:-1] / HOUR)
        features = torch.cat([num[..., :-2], hours, real], dim=-1)
        rows = self.embedding(cat).mean(dim=2) + self.numeric(features)  # (B, L, D)
        return (rows * real).sum(dim=1) / real.sum(dim=1).clamp(min=1.0)

    def forward(self, x_seq_cat_cid, x_seq_num_cid, x_seq_cat_ccid, x_seq_num_ccid, x_num):
        cid = self._sequence(x_seq_cat_cid, x_seq_num_cid)
        ccid = self._sequence(x_seq_cat_ccid, x_seq_num_ccid)
        return self.head(torch.cat([cid, ccid, x_num], dim=-1))
