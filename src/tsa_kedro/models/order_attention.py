"""Order attention: one id type's order history -> one vector (the readout token).

Per time step the categorical and numerical feature embeddings are each reduced to one
vector by a feature-axis MLP, concatenated (2E) and layer-normed; a learned readout token
follows the last step; ``n_layers_order`` post-norm blocks of temporal attention (time
factor, padded keys masked) and feed-forward (or mixture of experts) run over the
L + 1 tokens; the readout token's final state is the output.
"""

from __future__ import annotations

import torch
from torch import nn

from tsa_kedro.models.blocks import PostNormBlock
from tsa_kedro.models.config import TSAConfig
from tsa_kedro.models.embedding import SharedEmbedding
from tsa_kedro.models.feature_reduction import FeatureReducer
from tsa_kedro.models.numeric_embedding import PeriodicNumericEmbedding


class OrderAttention(nn.Module):
    """Temporal self-attention over one id type's sequence of orders."""

    def __init__(self, config: TSAConfig) -> None:
        super().__init__()
        dim = 2 * config.dim_embedding
        self.n_num = config.n_num_features
        self.time_delta_feature = config.time_delta_feature
        self.cat_reducer = FeatureReducer(config.n_cat_features)
        n_step_num = config.n_num_features + int(config.time_delta_feature)
        self.num_reducer = FeatureReducer(n_step_num)
        self.periodic = None
        if config.numeric_embedding == "periodic":
            self.periodic = PeriodicNumericEmbedding(
                n_step_num,
                config.dim_embedding,
                config.periodic_frequencies,
                config.periodic_sigma,
            )
        self.norm = nn.LayerNorm(dim)
        self.readout = nn.Parameter(torch.randn(dim) * 0.02)
        self.blocks = nn.ModuleList(
            PostNormBlock(
                dim,
                config.n_heads,
                config.dim_feedforward,
                config.dropout,
                time_scale=config.time_scale,
                n_experts=config.n_experts if config.use_moe else 0,
                top_k=config.moe_top_k,
            )
            for _ in range(config.n_layers_order)
        )

    def embed_steps(
        self,
        embedding: SharedEmbedding,
        x_cat: torch.Tensor,
        x_num: torch.Tensor,
        real: torch.Tensor,
        real_rows_only: bool = True,
    ) -> torch.Tensor:
        """One 2E vector per time step.

        Padded rows never see their content: with ``real_rows_only`` only real rows
        are embedded and padded rows get zero vectors (less work when histories are
        short); otherwise padded rows are embedded as all-zero features. Padded keys
        are masked in every attention block, so both give the same output.

        Args:
            embedding: the shared table.
            x_cat: (B, L, n_cat) int indices.
            x_num: (B, L, n_num + 2) numericals, delta, real flag.
            real: (B, L) bool real-row flags.
            real_rows_only: embed real rows only (needs data-dependent shapes).

        Returns:
            (B, L, 2E) step vectors, layer-normed on real rows.
        """
        B, L, n_cat = x_cat.shape
        idx = x_cat.reshape(B * L, n_cat)  # (N, n_cat)
        values = x_num[..., : self.n_num]  # (B, L, n_num)
        if self.time_delta_feature:
            # Seconds since the row, log-scaled to about [0, 1] (log1p(1e7) ~ 16).
            recency = torch.log1p(x_num[..., -2:-1].clamp(min=0.0)) / 16.0
            values = torch.cat([values, recency], dim=-1)  # (B, L, n_num + 1)
        values = values.reshape(B * L, -1)  # (N, n_num [+ 1])
        if real_rows_only:
            rows = real.reshape(-1).nonzero().squeeze(1)  # (N_real,)
            if rows.numel() == B * L:  # every row real (one order, padding cut)
                return self._embed_rows(embedding, idx, values).view(B, L, -1)
            vectors = self._embed_rows(embedding, idx[rows], values[rows])
            steps = vectors.new_zeros(B * L, vectors.shape[1])
            steps = steps.index_copy(0, rows, vectors)
        else:
            flat_real = real.reshape(-1, 1)  # (N, 1)
            steps = self._embed_rows(embedding, idx * flat_real, values * flat_real)
        return steps.view(B, L, -1)  # (B, L, 2E)

    def _embed_rows(
        self, embedding: SharedEmbedding, idx: torch.Tensor, values: torch.Tensor
    ) -> torch.Tensor:
        """(N, n_cat) indices, (N, n_num [+ 1]) values -> (N, 2E) layer-normed vectors."""
        cat = self.cat_reducer(embedding.categorical_feature_major(idx))  # (N, E)
        if self.periodic is not None:
            num = self.num_reducer(self.periodic.feature_major(values))  # (N, E)
        else:
            num = self.num_reducer.forward_scaled_rows(
                values, embedding.sequence_numeric_rows
            )
        return self.norm(torch.cat([cat, num], dim=-1))  # (N, 2E)

    def encode(
        self, steps: torch.Tensor, delta: torch.Tensor, real: torch.Tensor
    ) -> torch.Tensor:
        """Readout of the temporal blocks.

        Args:
            steps: (B, L, 2E) from ``embed_steps``.
            delta: (B, L) seconds between the current order and each row.
            real: (B, L) bool real-row flags.

        Returns:
            (B, 2E).
        """
        B = steps.shape[0]
        x = torch.cat([steps, self.readout.expand(B, 1, -1)], dim=1)  # (B, L+1, 2E)
        delta = nn.functional.pad(delta * real, (0, 1))  # (B, L+1), readout: 0
        key_real = nn.functional.pad(real, (0, 1), value=True)  # (B, L+1)
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            # The final block only needs the readout token's output.
            x = block(x, key_real, delta, last_query_only=i == last)
        return x[:, -1]  # (B, 2E)
