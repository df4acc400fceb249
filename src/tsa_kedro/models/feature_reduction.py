"""MLP over the feature axis: reduces F feature embeddings of a time step to one.

Layer widths halve, F -> F // 2 -> ... -> 1 (109 -> 54 -> 27 -> 13 -> 6 -> 3 -> 1), with
ReLU between layers; each layer mixes features, never embedding dimensions. Activations
are kept feature-major, (F, N, E) viewed as (F, N * E), so every layer is one large
matrix product instead of N small ones.
"""

from __future__ import annotations

import torch
from torch import nn


def halving_widths(n_features: int) -> list[int]:
    """[F, F // 2, ..., 1]."""
    widths = [n_features]
    while widths[-1] > 1:
        widths.append(widths[-1] // 2)
    return widths


class FeatureReducer(nn.Module):
    """(F, N, E) feature embeddings -> (N, E)."""

    def __init__(self, n_features: int) -> None:
        super().__init__()
        widths = halving_widths(n_features)
        self.layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )

    def _mix(self, h: torch.Tensor, start: int) -> torch.Tensor:
        """Apply layers[start:] to (F_start, N, E), ReLU before each layer."""
        F_, N, E = h.shape
        h = h.reshape(F_, N * E)
        for layer in self.layers[start:]:
            # In place on the previous matmul's fresh output (not needed by autograd).
            h = torch.addmm(layer.bias[:, None], layer.weight, h.relu_())  # (F', N*E)
        return h.view(N, E)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(F, N, E) -> (N, E)."""
        if not self.layers:
            return embeddings[0]
        first = self.layers[0]
        F_, N, E = embeddings.shape
        h = torch.addmm(
            first.bias[:, None], first.weight, embeddings.reshape(F_, N * E)
        )
        return self._mix(h.view(-1, N, E), start=1)

    def forward_scaled_rows(
        self, values: torch.Tensor, rows: torch.Tensor
    ) -> torch.Tensor:
        """Numerical features: embedding of feature f is ``values[:, f] * rows[f]``.

        Same result as ``forward(values.t()[:, :, None] * rows[:, None, :])``, but the
        first layer is folded into the rows, ``W[o, f] * rows[f, e]``, so the (F, N, E)
        embeddings are never built.

        Args:
            values: (N, F) feature values.
            rows: (F, E) embedding rows.

        Returns:
            (N, E).
        """
        if not self.layers:
            return values @ rows  # F == 1
        first = self.layers[0]
        folded = first.weight[:, :, None] * rows[None]  # (F', F, E)
        h = torch.baddbmm(
            first.bias[:, None, None],
            values.unsqueeze(0).expand(len(folded), -1, -1),  # (F', N, F), no copy
            folded,
        )  # (F', N, E)
        return self._mix(h, start=1)
