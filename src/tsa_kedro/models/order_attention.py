"""Order attention: one id type's order history -> one vector (the readout token).

Per time step the categorical and numerical feature embeddings are each reduced to one
vector by a feature-axis MLP, concatenated (2E) and layer-normed; a learned readout
token follows the last step; ``n_layers_order`` post-norm blocks of temporal attention
(time factor, padded keys masked) and feed-forward (or mixture of experts) run over the
L + 1 tokens; the readout token's final state is the output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tsa_kedro.models.blocks import PostNormBlock
from tsa_kedro.models.config import TSAConfig
from tsa_kedro.models.embedding import SharedEmbedding
from tsa_kedro.models.feature_reduction import FeatureReducer, aligned
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
    ) -> torch.Tensor:
        """One 2E vector per time step.

        Padded rows are embedded as all-zero features, whatever they hold; they are
        masked keys in every attention block, so their vectors never reach the output.

        Args:
            embedding: the shared table.
            x_cat: (B, L, n_cat) int indices.
            x_num: (B, L, n_num + 2) numericals, time delta, real-row flag.
            real: (B, L) bool real-row flags.

        Returns:
            (B, L, 2E) layer-normed step vectors.
        """
        B, L, n_cat = x_cat.shape
        values = x_num[..., : self.n_num]  # (B, L, n_num)
        if self.time_delta_feature:
            # Seconds since the row, log-scaled to about [0, 1] (log1p(1e7) ~ 16).
            recency = torch.log1p(x_num[..., -2:-1].clamp(min=0.0)) / 16.0
            values = torch.cat([values, recency], dim=-1)  # (B, L, n_step_num)
        idx = torch.where(real[..., None], x_cat, 0).reshape(B * L, n_cat)  # (N, n_cat)
        values = torch.where(real[..., None], values, 0.0).reshape(B * L, -1)

        # Index 0 is the zero row: padding the features to an aligned count with it
        # gives the reducer zero rows to meet its padded weights (feature_reduction.py).
        idx = F.pad(idx, (0, aligned(n_cat) - n_cat))  # (N, aligned(n_cat))
        cat = self.cat_reducer(embedding.categorical_feature_major(idx))  # (N, E)
        if self.periodic is not None:
            num_embeddings = self.periodic.feature_major(values)  # (n_step_num, N, E)
            num = self.num_reducer(num_embeddings)  # (N, E)
        else:
            num = self.reduce_numericals(values, embedding.sequence_numeric_rows)
        steps = self.norm(torch.cat([cat, num], dim=-1))  # (N, 2E)
        return steps.view(B, L, -1)  # (B, L, 2E)

    def reduce_numericals(self, values: torch.Tensor, rows: torch.Tensor):
        """The numerical reducer over the linear embeddings ``values[n, f] * rows[f]``,
        without building them: (N, F) values, (F, E) rows -> (N, E).

        The reducer's first layer is linear in the embeddings, so
        ``sum_f W[o, f] * values[n, f] * rows[f, e] + b[o]`` runs as one product of the
        values with the weights folded into the rows, ``M[(o, e), f] = W[o, f] *
        rows[f, e]``, instead of writing and reading the (F, N, E) embeddings and their
        gradient: with the aligned products, 1.23x the eager training step and 1.18x
        the compiled one on an H200 (docs/source/benchmarks.md). The product comes out
        as (o, e, n); the later layers mix ``o`` only, so they run on that layout and
        the (E, N) result is transposed at the end.
        """
        if not self.num_reducer.layers:  # one numerical: nothing to reduce
            return values * rows  # (N, 1) * (1, E)
        N, n_features = values.shape
        E = rows.shape[1]
        rows_in = aligned(n_features)
        values = F.pad(values, (0, rows_in - n_features))  # (N, F')
        rows = F.pad(rows, (0, 0, 0, rows_in - n_features))  # (F', E)
        (weight, bias), *later = self.num_reducer.padded_layers(rows_in)
        folded = (weight[:, :, None] * rows[None]).transpose(1, 2)  # (o, E, F')
        h = torch.addmm(
            bias.repeat_interleave(E)[:, None],
            folded.reshape(-1, rows_in),
            values.t(),
        )  # (o * E, N)
        if later:
            h = FeatureReducer.run(later, F.leaky_relu(h).view(weight.shape[0], -1))
        return h.view(E, N).t()  # (N, E)

    def forward(
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
        delta = F.pad(delta * real, (0, 1))  # (B, L+1), readout: 0
        key_real = F.pad(real, (0, 1), value=True)  # (B, L+1)
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            # The final block only needs the readout token's output.
            x = block(x, key_real, delta, last_query_only=i == last)
        return x[:, -1]  # (B, 2E)
