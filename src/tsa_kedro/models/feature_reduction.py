"""MLP over the feature axis: reduces F feature embeddings of a time step to one.

Layer widths halve, F -> F // 2 -> ... -> 1 (109 -> 54 -> 27 -> 13 -> 6 -> 3 -> 1), with
a LeakyReLU between layers, as in the production model; each layer mixes features,
never embedding dimensions.

The input is feature-major, (F, N, E) for N time steps: viewed as (F, N * E), every
layer is then one matrix product ``W @ h`` over all steps and embedding dimensions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def halving_widths(n_features: int) -> list[int]:
    """[F, F // 2, ..., 1]."""
    widths = [n_features]
    while widths[-1] > 1:
        widths.append(widths[-1] // 2)
    return widths


class FeatureReducer(nn.Module):
    """(F, N, E) feature embeddings -> (N, E).

    Args:
        n_features: F, the number of features reduced to one.
    """

    def __init__(self, n_features: int) -> None:
        super().__init__()
        widths = halving_widths(n_features)
        self.layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(F, N, E) -> (N, E)."""
        n_features, N, E = embeddings.shape
        h = embeddings.reshape(n_features, N * E)  # (F, N*E)
        for i, layer in enumerate(self.layers):
            if i > 0:
                h = F.leaky_relu(h)
            h = torch.addmm(layer.bias[:, None], layer.weight, h)  # (F', N*E)
        return h.view(N, E)  # F' == 1 after the last layer
