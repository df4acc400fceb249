"""The one embedding table shared by every attention block.

Rows, in order:
    [0, vocab_size)                      categorical values (row 0: padding/unknown, zero)
    [vocab_size, + n_num_features)       one row per numerical sequence feature
    [..., + n_dense_features)            one row per engineered feature / match rate
    [..., + 1)                           the time delta (with ``time_delta_feature``)

A categorical value is embedded as its row; a numerical feature as its row times the
value. With ``numeric_embedding: periodic`` numericals have their own embedding
(``numeric_embedding.py``) and the table holds the categorical rows only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tsa_kedro.models.config import TSAConfig


class SharedEmbedding(nn.Module):
    """Embedding table of width ``dim_embedding`` with the row layout above."""

    def __init__(self, config: TSAConfig) -> None:
        super().__init__()
        self.vocab_size = config.vocab_size
        linear = config.numeric_embedding == "linear"
        self.n_num = config.n_num_features if linear else 0
        self.n_eng = config.n_dense_features if linear else 0
        n_rows = (
            config.vocab_size
            + self.n_num
            + self.n_eng
            + int(config.time_delta_feature and linear)
        )
        self.table = nn.Embedding(n_rows, config.dim_embedding, padding_idx=0)

    @property
    def numeric_rows(self) -> torch.Tensor:
        """(n_num, E) rows of the numerical sequence features."""
        return self.table.weight[self.vocab_size : self.vocab_size + self.n_num]

    @property
    def engineered_rows(self) -> torch.Tensor:
        """(n_dense, E) rows of the engineered features (and match rates)."""
        start = self.vocab_size + self.n_num
        return self.table.weight[start : start + self.n_eng]

    @property
    def sequence_numeric_rows(self) -> torch.Tensor:
        """Rows of a history step's numericals: ``numeric_rows`` plus, when the
        config has ``time_delta_feature``, the time-delta row (last)."""
        start = self.vocab_size + self.n_num + self.n_eng
        if self.table.weight.shape[0] == start:
            return self.numeric_rows
        return torch.cat([self.numeric_rows, self.table.weight[start:]])

    def categorical(self, idx: torch.Tensor) -> torch.Tensor:
        """(..., F) int indices -> (..., F, E)."""
        return F.embedding(idx, self.table.weight, padding_idx=0)

    def categorical_feature_major(self, idx: torch.Tensor) -> torch.Tensor:
        """(N, F) int indices -> (F, N, E), feature axis first.

        The feature-axis MLP then runs as one large matrix product over (F, N * E).
        Under autocast the rows are gathered from the table cast to the autocast
        dtype: the feature-axis MLP would cast the gathered (F, N, E) tensor anyway,
        so the values are the same, but the largest tensor of the step is written
        once, in half the bytes, instead of in float32 and again cast.
        """
        weight = self.table.weight
        if torch.is_autocast_enabled(weight.device.type):
            weight = weight.to(torch.get_autocast_dtype(weight.device.type))
        return F.embedding(idx.t(), weight, padding_idx=0)
