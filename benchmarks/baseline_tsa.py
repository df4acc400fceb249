"""A straightforward implementation of the TSA classifier, the benchmarks' baseline.

Same architecture and the same parameter names as
``tsa_kedro.models.TwoSeqMoEOrderFeatureAttentionClassifier`` (so one state dict loads
into both and the outputs can be compared), written the plain way: explicit attention
(score matrix, time factor, mask, softmax) everywhere, feature embeddings materialised
as (B, L, F, E) and reduced by ``nn.Linear`` over the feature axis, every token computed
through every block, both sequence stacks run for every order. No mixture of experts.
"""

from __future__ import annotations

import torch
from torch import nn

from tsa_kedro.models.config import TSAConfig
from tsa_kedro.models.feature_reduction import halving_widths

# The options the plain implementation does not have, at their plain values.
PLAIN_OPTIONS = {
    "time_delta_feature": False,
    "numeric_embedding": "linear",
    "history_match_features": False,
    "feature_mlp_hidden": 0,
}


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, dim),
        )

    def forward(self, x):
        return self.net(x)


class PlainAttention(nn.Module):
    def __init__(self, dim: int, time_scale: float | None) -> None:
        super().__init__()
        self.time_scale = time_scale
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, key_real=None, delta=None):
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # (B, T, D) each
        scores = q @ k.transpose(1, 2) / q.shape[-1] ** 0.5  # (B, T, T)
        if self.time_scale is not None:
            scores = scores * torch.exp(
                (delta[:, :, None] - delta[:, None, :]) / self.time_scale
            )
        if key_real is not None:
            scores = scores.masked_fill(~key_real[:, None, :], float("-inf"))
        return self.proj(scores.softmax(dim=-1) @ v)


class PlainPostNormBlock(nn.Module):
    def __init__(self, dim, hidden, dropout, time_scale=None) -> None:
        super().__init__()
        self.attn = PlainAttention(dim, time_scale)
        self.norm1 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, hidden, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, key_real=None, delta=None):
        x = self.norm1(x + self.drop(self.attn(x, key_real, delta)))
        return self.norm2(x + self.drop(self.ff(x)))


class PlainPreNormBlock(nn.Module):
    def __init__(self, dim, hidden, dropout) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = PlainAttention(dim, None)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, hidden, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        x = x + self.drop(self.attn(self.norm1(x)))
        return x + self.drop(self.ff(self.norm2(x)))


class PlainReducer(nn.Module):
    def __init__(self, n_features: int) -> None:
        super().__init__()
        widths = halving_widths(n_features)
        self.layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )

    def forward(self, emb):  # (..., F, E) -> (..., E)
        h = emb.transpose(-1, -2)  # (..., E, F)
        for i, layer in enumerate(self.layers):
            h = layer(nn.functional.leaky_relu(h) if i else h)
        return h[..., 0]


class PlainTable(nn.Module):
    def __init__(self, config: TSAConfig) -> None:
        super().__init__()
        n_rows = config.vocab_size + config.n_num_features + config.n_eng_features
        self.table = nn.Embedding(n_rows, config.dim_embedding, padding_idx=0)


class PlainOrderAttention(nn.Module):
    def __init__(self, config: TSAConfig) -> None:
        super().__init__()
        dim = 2 * config.dim_embedding
        self.cat_reducer = PlainReducer(config.n_cat_features)
        self.num_reducer = PlainReducer(config.n_num_features)
        self.norm = nn.LayerNorm(dim)
        self.readout = nn.Parameter(torch.randn(dim) * 0.02)
        self.blocks = nn.ModuleList(
            PlainPostNormBlock(
                dim, config.dim_feedforward, config.dropout, config.time_scale
            )
            for _ in range(config.n_layers_order)
        )

    def embed_steps(self, table, num_rows, x_cat, x_num):
        n_num = num_rows.shape[0]
        cat = self.cat_reducer(table(x_cat))  # (B, L, E)
        num = self.num_reducer(x_num[..., :n_num, None] * num_rows)  # (B, L, E)
        return self.norm(torch.cat([cat, num], dim=-1))  # (B, L, 2E)

    def encode(self, steps, delta, real):
        B = steps.shape[0]
        x = torch.cat([steps, self.readout.expand(B, 1, -1)], dim=1)
        delta = nn.functional.pad(delta, (0, 1))
        key_real = nn.functional.pad(real, (0, 1), value=True)
        for block in self.blocks:
            x = block(x, key_real, delta)
        return x[:, -1]


class PlainGate(nn.Module):
    def __init__(self, config: TSAConfig) -> None:
        super().__init__()
        G = config.gate_dim
        self.proj = nn.Linear(2 * config.dim_embedding, G)
        self.readout = nn.Parameter(torch.randn(G) * 0.02)
        self.block = PlainPostNormBlock(G, config.gate_feedforward, config.dropout)
        self.mlp = nn.Sequential(nn.Linear(2 * G, G), nn.ReLU(), nn.Linear(G, 2))

    def summarise(self, steps, real):
        B = steps.shape[0]
        x = torch.cat([self.proj(steps), self.readout.expand(B, 1, -1)], dim=1)
        return self.block(x, nn.functional.pad(real, (0, 1), value=True))[:, -1]


class PlainFeatureAttention(nn.Module):
    def __init__(self, config: TSAConfig) -> None:
        super().__init__()
        E = config.dim_embedding
        self.num_bias = nn.Parameter(torch.zeros(config.n_num_features, E))
        self.eng_bias = nn.Parameter(torch.zeros(config.n_eng_features, E))
        self.readout = nn.Parameter(torch.randn(E) * 0.02)
        self.blocks = nn.ModuleList(
            PlainPreNormBlock(E, config.dim_feedforward, config.dropout)
            for _ in range(config.n_layers_feature)
        )
        self.norm = nn.LayerNorm(E)


class BaselineTSA(nn.Module):
    """Plain two-sequence TSA classifier; ``forward`` as the real model's."""

    def __init__(self, config: TSAConfig) -> None:
        super().__init__()
        if config.use_moe:
            raise ValueError("the baseline has no mixture-of-experts path")
        options = {k: getattr(config, k) for k in PLAIN_OPTIONS}
        if options != PLAIN_OPTIONS:
            raise ValueError(
                f"the baseline implements the plain architecture only: {PLAIN_OPTIONS}"
            )
        self.config = config
        E = config.dim_embedding
        self.embedding = PlainTable(config)
        self.order_cid = PlainOrderAttention(config)
        self.order_ccid = PlainOrderAttention(config)
        self.gate = PlainGate(config)
        self.sequence_norm = nn.LayerNorm(2 * E)
        self.feature_attention = PlainFeatureAttention(config)
        self.classifier = nn.Sequential(
            nn.Linear(3 * E, config.classifier_hidden),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.classifier_hidden, 2),
        )

    def forward(
        self, x_seq_cat_cid, x_seq_num_cid, x_seq_cat_ccid, x_seq_num_ccid, x_num
    ):
        c = self.config
        table = self.embedding.table
        num_rows = table.weight[c.vocab_size : c.vocab_size + c.n_num_features]
        eng_rows = table.weight[c.vocab_size + c.n_num_features :]

        outs, summaries = [], []
        for order, x_cat, x_seq_num in (
            (self.order_cid, x_seq_cat_cid, x_seq_num_cid),
            (self.order_ccid, x_seq_cat_ccid, x_seq_num_ccid),
        ):
            real = x_seq_num[..., -1] > 0.5
            steps = order.embed_steps(table, num_rows, x_cat, x_seq_num)
            outs.append(order.encode(steps, x_seq_num[..., -2], real))
            summaries.append(self.gate.summarise(steps, real))

        has_ccid_history = (x_seq_num_ccid[:, :-1, -1] > 0.5).any(dim=1)
        gate_logits = self.gate.mlp(torch.cat(summaries, dim=-1))
        gate_logits[:, 1] = gate_logits[:, 1].masked_fill(
            ~has_ccid_history, float("-inf")
        )
        weights = gate_logits.softmax(dim=-1)
        sequence = self.sequence_norm(
            weights[:, :1] * outs[0] + weights[:, 1:] * outs[1]
        )

        fa = self.feature_attention
        B = x_num.shape[0]
        tokens = torch.cat(
            [
                table(x_seq_cat_cid[:, -1]),
                x_seq_num_cid[:, -1, : c.n_num_features, None] * num_rows + fa.num_bias,
                x_num[..., None] * eng_rows + fa.eng_bias,
                fa.readout.expand(B, 1, -1),
            ],
            dim=1,
        )
        for block in fa.blocks:
            tokens = block(tokens)
        features = fa.norm(tokens[:, -1])
        return self.classifier(torch.cat([sequence, features], dim=-1))
