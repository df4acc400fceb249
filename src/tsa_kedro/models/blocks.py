"""Transformer blocks: post-norm (order attention, gate) and pre-norm (feature attention)."""

from __future__ import annotations

import torch
from torch import nn

from tsa_kedro.models.attention import MultiHeadSelfAttention
from tsa_kedro.models.feedforward import FeedForward
from tsa_kedro.models.moe import MoEFeedForward


class PostNormBlock(nn.Module):
    """x = LN(x + drop(attn(x))); x = LN(x + drop(ff(x))).

    Args:
        dim: token width D.
        n_heads: attention heads.
        hidden: feed-forward hidden width.
        dropout: dropout on the feed-forward hidden layer and both residual branches.
        time_scale: temporal attention with this time scale; ``None``: ordinary.
        n_experts: > 0 replaces the feed-forward by a top-``top_k`` mixture of experts.
        top_k: experts per token when ``n_experts`` > 0.
    """

    def __init__(
        self,
        dim: int,
        n_heads: int,
        hidden: int,
        dropout: float,
        *,
        time_scale: float | None = None,
        n_experts: int = 0,
        top_k: int = 2,
    ) -> None:
        super().__init__()
        self.attn = MultiHeadSelfAttention(dim, n_heads, time_scale)
        self.norm1 = nn.LayerNorm(dim)
        self.ff = (
            MoEFeedForward(dim, hidden, dropout, n_experts, top_k)
            if n_experts
            else FeedForward(dim, hidden, dropout)
        )
        self.norm2 = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        key_real: torch.Tensor | None = None,
        delta: torch.Tensor | None = None,
        last_query_only: bool = False,
    ) -> torch.Tensor:
        """(B, T, D) -> (B, T, D), or (B, 1, D) for the last token only."""
        residual = x[:, -1:] if last_query_only else x
        x = self.norm1(
            residual + self.drop(self.attn(x, key_real, delta, last_query_only))
        )
        return self.norm2(x + self.drop(self.ff(x)))


class PreNormBlock(nn.Module):
    """x = x + drop(attn(LN(x))); x = x + drop(ff(LN(x))), ordinary attention."""

    def __init__(self, dim: int, n_heads: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadSelfAttention(dim, n_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, hidden, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, last_query_only: bool = False) -> torch.Tensor:
        """(B, T, D) -> (B, T, D), or (B, 1, D) for the last token only."""
        residual = x[:, -1:] if last_query_only else x
        x = residual + self.drop(
            self.attn(self.norm1(x), last_query_only=last_query_only)
        )
        return x + self.drop(self.ff(self.norm2(x)))
