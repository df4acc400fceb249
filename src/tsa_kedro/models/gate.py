"""Two-sequence gate: how much the cid and the ccid histories count.

A small order-attention block (width ``gate_dim``, one post-norm layer, ordinary attention
without the time term) summarises each sequence's step vectors into its readout token;
an MLP on both summaries gives softmax weights (cid, ccid). The ccid weight is exactly 0
for orders whose card has no history (only the current row is real): its logit is set
to -inf before the softmax.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
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
        key_real = F.pad(real, (0, 1), value=True)  # (B, L+1)
        return self.block(x, key_real, last_query_only=True)[:, 0]  # (B, G)

    def forward(
        self,
        steps_cid: torch.Tensor,
        real_cid: torch.Tensor,
        steps_ccid: torch.Tensor,
        real_ccid: torch.Tensor,
    ) -> torch.Tensor:
        """Both sequences' (B, L, 2E) steps and (B, L) real flags -> (B, 2) weights."""
        summaries = [
            self.summarise(steps_cid, real_cid),  # (B, G)
            self.summarise(steps_ccid, real_ccid),  # (B, G)
        ]
        logits = self.mlp(torch.cat(summaries, dim=-1))  # (B, 2)
        no_ccid_history = ~real_ccid[:, :-1].any(dim=1)  # (B,)
        mask = torch.stack([torch.zeros_like(no_ccid_history), no_ccid_history], -1)
        return logits.masked_fill(mask, float("-inf")).softmax(dim=-1)
