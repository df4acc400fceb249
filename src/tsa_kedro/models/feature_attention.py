"""Feature attention: the current order's features and the engineered features.

Tokens: the current order's categorical embeddings (n_cat), one token per numerical
feature of the current order (n_num) and per engineered feature (n_eng), each its own
embedding row times the value plus a per-feature bias, and a learned readout token.

Why the bias: the blocks are pre-norm, so attention and feed-forward see ``LN(token)``,
and ``LN(v * row) == LN(row)`` for every ``v > 0`` (min-max scaled values are >= 0).
Without a bias the blocks could not tell a value from any other positive value; with
it, ``LN(v * row + bias)`` moves with ``v``. The biases start random, like the rows,
so the values count from the first step. ``n_layers_feature``
pre-norm blocks of ordinary attention (fused SDPA: no time term, no padding) run over
them; the layer-normed readout is the output.

With ``numeric_embedding: periodic`` the numerical and engineered tokens come from
``PeriodicNumericEmbedding`` instead (no bias needed: the sin/cos features move with
the value).

With ``feature_mlp_hidden > 0`` a second path flattens the tokens (readout excluded),
maps them to that width with a linear layer and a ReLU, and is concatenated to the
readout: the output is then (B, E + feature_mlp_hidden).
"""

from __future__ import annotations

import torch
from torch import nn

from tsa_kedro.models.blocks import PreNormBlock
from tsa_kedro.models.config import TSAConfig
from tsa_kedro.models.embedding import SharedEmbedding
from tsa_kedro.models.numeric_embedding import PeriodicNumericEmbedding


class FeatureAttention(nn.Module):
    """(current order, dense features) -> (B, E [+ feature_mlp_hidden])."""

    def __init__(self, config: TSAConfig) -> None:
        super().__init__()
        E = config.dim_embedding
        self.periodic = None
        if config.numeric_embedding == "periodic":
            self.periodic = PeriodicNumericEmbedding(
                config.n_num_features + config.n_dense_features,
                E,
                config.periodic_frequencies,
                config.periodic_sigma,
            )
        else:
            self.num_bias = nn.Parameter(torch.randn(config.n_num_features, E))
            self.eng_bias = nn.Parameter(torch.randn(config.n_dense_features, E))
        self.readout = nn.Parameter(torch.randn(E) * 0.02)
        self.blocks = nn.ModuleList(
            PreNormBlock(E, config.n_heads, config.dim_feedforward, config.dropout)
            for _ in range(config.n_layers_feature)
        )
        self.norm = nn.LayerNorm(E)
        self.mlp = None
        if config.feature_mlp_hidden:
            n_tokens = (
                config.n_cat_features + config.n_num_features + config.n_dense_features
            )
            self.mlp = nn.Sequential(
                nn.Linear(n_tokens * E, config.feature_mlp_hidden),
                nn.ReLU(),
                nn.Dropout(config.dropout),
            )

    def forward(
        self,
        embedding: SharedEmbedding,
        cat: torch.Tensor,
        num: torch.Tensor,
        eng: torch.Tensor,
    ) -> torch.Tensor:
        """Readout of the feature blocks: ``read(tokens(...))``.

        Args:
            embedding: the shared table.
            cat: (B, n_cat) int indices of the current order.
            num: (B, n_num) numericals of the current order.
            eng: (B, n_dense) engineered features (and history match rates).

        Returns:
            (B, E), or (B, E + feature_mlp_hidden) with the MLP path.
        """
        return self.read(self.tokens(embedding, cat, num, eng))

    def tokens(
        self,
        embedding: SharedEmbedding,
        cat: torch.Tensor,
        num: torch.Tensor,
        eng: torch.Tensor,
    ) -> torch.Tensor:
        """The feature tokens, readout excluded: (B, n_cat + n_num + n_dense, E).

        Categorical tokens first, then the numerical, then the engineered ones (the
        order of ``forward``'s arguments).
        """
        if self.periodic is not None:
            numeric = [self.periodic(torch.cat([num, eng], dim=1))]
        else:
            numeric = [
                torch.addcmul(self.num_bias, num[..., None], embedding.numeric_rows),
                torch.addcmul(self.eng_bias, eng[..., None], embedding.engineered_rows),
            ]  # (B, n_num, E), (B, n_dense, E)
        return torch.cat([embedding.categorical(cat), *numeric], dim=1)

    def read(self, features: torch.Tensor) -> torch.Tensor:
        """Feature tokens (B, T, E) from ``tokens`` -> (B, E [+ feature_mlp_hidden])."""
        B = features.shape[0]
        tokens = torch.cat([features, self.readout.expand(B, 1, -1)], dim=1)
        flat = None if self.mlp is None else self.mlp(features.flatten(1))
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            # The final block only needs the readout token's output.
            tokens = block(tokens, last_query_only=i == last)
        readout = self.norm(tokens[:, -1])  # (B, E)
        if flat is None:
            return readout
        return torch.cat([readout, flat], dim=-1)  # (B, E + feature_mlp_hidden)
