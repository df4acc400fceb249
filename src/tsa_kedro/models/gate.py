"""Two-sequence gate: how much the cid and the ccid histories count.

A small order-attention block (width ``gate_dim``, one post-norm layer, ordinary attention
without the time term, fused SDPA) summarises each sequence's step vectors into its
readout token; an MLP on both summaries gives softmax weights (cid, ccid). The ccid
weight is exactly 0 for orders whose card has no history (only the current row is real):
its logit is set to -inf before the softmax.
"""

from __future__ import annotations

import torch
from torch import nn

from tsa_kedro.models.blocks import PostNormBlock
from tsa_kedro.models.config import TSAConfig


class TwoSequenceGate(nn.Module):
    """Step vectors of both sequences -> (B, 2) weights for (cid, ccid)."""

    def __init__(self, config: TSAConfig) -> None:
        super().__init__()
        G = config.gate_dim
        self.proj = nn.Linear(2 * config.dim_embedding, G)
        self.readout = nn.Parameter(torch.randn(G) * 0.02)
        self.block = PostNormBlock(G, 1, config.gate_feedforward, config.dropout)
        self.mlp = nn.Sequential(nn.Linear(2 * G, G), nn.ReLU(), nn.Linear(G, 2))

    def summarise(self, steps: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """(B, L, 2E) step vectors, (B, L) real flags -> (B, G) readout."""
        B = steps.shape[0]
        x = torch.cat([self.proj(steps), self.readout.expand(B, 1, -1)], dim=1)
        key_real = nn.functional.pad(real, (0, 1), value=True)  # (B, L+1)
        return self.block(x, key_real, last_query_only=True)[:, 0]  # (B, G)

    def weights(
        self,
        summary_cid: torch.Tensor,
        summary_ccid: torch.Tensor,
        has_ccid_history: torch.Tensor,
    ) -> torch.Tensor:
        """(B, G), (B, G), (B,) bool -> (B, 2) softmax weights (cid, ccid)."""
        logits = self.mlp(torch.cat([summary_cid, summary_ccid], dim=-1))  # (B, 2)
        no_history = torch.stack(
            [torch.zeros_like(has_ccid_history), ~has_ccid_history], dim=-1
        )
        return logits.masked_fill(no_history, float("-inf")).softmax(dim=-1)
