"""Test material for the training stage: tiny tensor bundles with a planted temporal
signal, and a small stand-in classifier with the TSA model's ``forward`` signature."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

WIDTHS = {"seq_len": 6, "n_cat_features": 3, "n_num_features": 2, "n_eng_features": 4}
VOCAB_SIZE = 30
DAY = 86400.0


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

    Fraud is planted in the history only: a fraudulent order's customer has one or two
    previous orders whose first categorical feature is the marker category 1 (say, a
    compromised terminal); no other order ever has it. The current order's features
    and ``X_num`` are noise, so a model of the current order alone cannot find it.
    """
    rng = np.random.default_rng(seed)
    labels = (rng.random(n_rows) < positive_rate).astype(np.int8)
    history = rng.integers(2, seq_len, size=n_rows)  # real rows before the current one
    positions = np.arange(seq_len)[None, :]
    real = positions >= seq_len - 1 - history[:, None]
    deltas = np.sort(rng.uniform(60.0, 1e6, size=(n_rows, seq_len)), axis=1)[:, ::-1]
    deltas[:, -1] = 0.0

    def sequence() -> tuple[np.ndarray, np.ndarray]:
        cats = rng.integers(2, vocab_size, size=(n_rows, seq_len, n_cat)).astype(
            np.int32
        )
        nums = rng.random((n_rows, seq_len, n_num)).astype(np.float32)
        extra = np.stack([deltas, np.ones_like(deltas)], axis=2)
        nums = np.concatenate([nums, extra.astype(np.float32)], axis=2)
        cats[~real] = 0
        nums[~real] = 0.0
        return cats, nums

    cat_cid, num_cid = sequence()
    cat_ccid, num_ccid = sequence()
    for row in np.flatnonzero(labels):
        first = seq_len - 1 - history[row]
        marked = rng.choice(np.arange(first, seq_len - 1), size=2)
        cat_cid[row, marked, 0] = 1
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
    """Stand-in classifier: per-row embeddings, max over real rows, an MLP."""

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
        days = num[..., -2:-1] / DAY
        features = torch.cat([num[..., :-2], days, real], dim=-1)
        rows = self.embedding(cat).sum(dim=2) + self.numeric(features)  # (B, L, D)
        return (rows * real).amax(dim=1)  # (B, D)

    def forward(
        self, x_seq_cat_cid, x_seq_num_cid, x_seq_cat_ccid, x_seq_num_ccid, x_num
    ):
        cid = self._sequence(x_seq_cat_cid, x_seq_num_cid)
        ccid = self._sequence(x_seq_cat_ccid, x_seq_num_ccid)
        return self.head(torch.cat([cid, ccid, x_num], dim=-1))
