"""Position-wise feed-forward of the attention blocks."""

from __future__ import annotations

import torch
from torch import nn


class FeedForward(nn.Module):
    """Linear -> ReLU -> dropout -> Linear, applied to every token: (..., D) -> (..., D)."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.ReLU(inplace=True),  # on the Linear's fresh output: safe, one pass less
            nn.Dropout(dropout),
            nn.Linear(hidden, dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
