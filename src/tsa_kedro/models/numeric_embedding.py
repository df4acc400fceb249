"""Periodic embedding of numerical features: one token per feature, (B, F) -> (B, F, E).

Used with ``TSAConfig.numeric_embedding: periodic`` for every numerical input: the
current order's numericals and the engineered features (feature attention tokens) and
each history step's numericals (order attention, before the feature-axis MLP).

For feature f with value x, ``k`` learned frequencies ``w_f`` give
``c = [sin(2 pi w_f x), cos(2 pi w_f x)]`` (2k numbers); a per-feature linear map
2k -> E and a ReLU make the token. Unlike ``value * row + bias`` (a straight line
through embedding space, one direction per feature), the token can move in many
directions as the value crosses thresholds, which is what count and amount
features need (an order count of 1 against 5 in the last hour). The frequencies
start at ``N(0, sigma^2)``; ``sigma`` sets how fine the first thresholds are on the
[0, 1] scale of the scaled features.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class PeriodicNumericEmbedding(nn.Module):
    """(B, F) float -> (B, F, E) tokens; see the module docstring."""

    def __init__(
        self, n_features: int, dim: int, n_frequencies: int, sigma: float
    ) -> None:
        super().__init__()
        self.frequencies = nn.Parameter(torch.randn(n_features, n_frequencies) * sigma)
        self.weight = nn.Parameter(
            torch.randn(n_features, 2 * n_frequencies, dim)
            / math.sqrt(2 * n_frequencies)
        )
        self.bias = nn.Parameter(torch.zeros(n_features, dim))

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        """values (B, F) -> (B, F, E)."""
        return self.feature_major(values).transpose(0, 1)

    def feature_major(self, values: torch.Tensor) -> torch.Tensor:
        """values (N, F) -> (F, N, E), the layout of ``FeatureReducer``."""
        phase = (2 * math.pi) * values.t()[..., None] * self.frequencies[:, None]
        features = torch.cat([phase.sin(), phase.cos()], dim=-1)  # (F, N, 2k)
        # One batched matmul over features: (F, N, 2k) @ (F, 2k, E) -> (F, N, E).
        return torch.relu(torch.baddbmm(self.bias[:, None], features, self.weight))
