"""Sparse mixture-of-experts feed-forward with top-k gating (top-2 by default).

A linear router scores every token against every expert; each token goes to its
``top_k`` best experts, whose outputs are summed with the softmax of the chosen routing
logits as weights. Tokens are dispatched per expert by index (no dense all-expert pass).
After each forward ``aux_loss`` holds the Switch-Transformer load-balancing term
(n_experts * sum_e fraction_of_tokens_e * mean_router_probability_e; 1.0 when balanced),
which a training loop may add to its loss with a small weight.
"""

from __future__ import annotations

import torch
from torch import nn

from tsa_kedro.models.feedforward import FeedForward


class MoEFeedForward(nn.Module):
    """(..., D) -> (..., D) through the top-k of ``n_experts`` feed-forward experts."""

    def __init__(
        self, dim: int, hidden: int, dropout: float, n_experts: int, top_k: int
    ) -> None:
        super().__init__()
        if not 1 <= top_k <= n_experts:
            raise ValueError(f"top_k ({top_k}) must be in [1, n_experts={n_experts}]")
        self.top_k = top_k
        self.router = nn.Linear(dim, n_experts, bias=False)
        self.experts = nn.ModuleList(
            FeedForward(dim, hidden, dropout) for _ in range(n_experts)
        )
        self.aux_loss = torch.zeros(())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        tokens = x.reshape(-1, shape[-1])  # (N, D)
        logits = self.router(tokens)  # (N, X)
        top_logits, top_experts = logits.topk(self.top_k, dim=-1)  # (N, k)
        top_weights = top_logits.softmax(dim=-1)  # (N, k)
        out = torch.zeros_like(tokens)
        for e, expert in enumerate(self.experts):
            token_idx, slot = (top_experts == e).nonzero(as_tuple=True)
            if token_idx.numel():
                weighted = (
                    expert(tokens[token_idx]) * top_weights[token_idx, slot, None]
                )
                out = out.index_add(0, token_idx, weighted)
        probs = logits.softmax(dim=-1)  # (N, X)
        n_experts = probs.shape[-1]
        fraction = torch.bincount(top_experts[:, 0], minlength=n_experts).to(probs)
        self.aux_loss = n_experts * (fraction / len(tokens) * probs.mean(0)).sum()
        return out.view(shape)
