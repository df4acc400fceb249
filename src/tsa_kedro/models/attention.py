"""Multi-head self-attention, optionally with the TSA time factor.

Attention probabilities are not dropped out (the blocks drop out their residual
branches and feed-forward hidden layer instead), so the fused kernel also serves
training; with dropout on the probabilities PyTorch's CPU kernels fall back to the
unfused path.

Temporal attention multiplies every scaled dot-product score by
``exp((delta_i - delta_j) / time_scale)`` (delta: seconds between the current order and
row i, 0 for the readout token) before the softmax. That factor is a product of a
query-only and a key-only term, ``exp(delta_i / s) * exp(-delta_j / s)``, so

    (q_i . k_j / sqrt(d)) * exp(delta_i / s) * exp(-delta_j / s)
        = (q_i exp(delta_i / s)) . (k_j exp(-delta_j / s)) / sqrt(d),

i.e. the time term is exactly a rescaling of each query and each key. We therefore run
PyTorch's fused ``scaled_dot_product_attention`` on the rescaled queries and keys instead
of materialising the score matrix; the explicit form (scores, multiply, mask, softmax)
is kept in ``explicit_temporal_attention`` as the reference the tests compare against.
The rescaling and the attention itself run in float32, also under autocast, so the time
factor keeps float32 precision.

The rescaled form overflows exactly where the explicit one does: the current order
(delta 0) is always a key, so the explicit factor reaches ``exp(max delta / s)``.
Deltas are capped by preprocessing (1e7 s in production, 10 x ``time_scale``), far from
the float32 limit (``delta / s`` of about 88).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MultiHeadSelfAttention(nn.Module):
    """Self-attention with a fused QKV projection.

    Args:
        dim: model width D.
        n_heads: heads H (D divisible by H).
        time_scale: seconds; ``None`` for ordinary attention without the time factor.
    """

    def __init__(self, dim: int, n_heads: int, time_scale: float | None = None) -> None:
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"dim ({dim}) must be divisible by n_heads ({n_heads})")
        self.n_heads = n_heads
        self.time_scale = time_scale
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self,
        x: torch.Tensor,
        key_real: torch.Tensor | None = None,
        delta: torch.Tensor | None = None,
        last_query_only: bool = False,
    ) -> torch.Tensor:
        """Attend over the T tokens of ``x``.

        Args:
            x: (B, T, D) tokens.
            key_real: (B, T) bool, False for padded keys; ``None``: every key is real.
            delta: (B, T) seconds, needed when the module has a ``time_scale``.
            last_query_only: compute the output of the last token only (the readout
                token in the final block), keys and values still from every token.

        Returns:
            (B, T, D), or (B, 1, D) with ``last_query_only``.
        """
        B, T, D = x.shape
        H = self.n_heads
        # one view and one permute instead of a split and three of each
        q, k, v = self.qkv(x).view(B, T, 3, H, D // H).permute(2, 0, 3, 1, 4).unbind()
        if last_query_only:
            q = q[:, :, -1:]  # (B, H, 1, Dh)
        Tq = q.shape[2]  # q: (B, H, Tq, Dh); k, v: (B, H, T, Dh)
        mask = None if key_real is None else key_real[:, None, None, :]  # (B,1,1,T)
        if self.time_scale is None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            if delta is None:
                raise ValueError("temporal attention needs the time deltas `delta`")
            if torch.is_autocast_enabled(x.device.type):
                with torch.autocast(device_type=x.device.type, enabled=False):
                    out = self._temporal(q, k, v, mask, delta).to(x.dtype)
            else:
                out = self._temporal(q, k, v, mask, delta)
        out = out.transpose(1, 2).reshape(B, Tq, D)  # (B, Tq, D)
        return self.proj(out)

    def _temporal(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: torch.Tensor | None,
        delta: torch.Tensor,
    ) -> torch.Tensor:
        """Fused attention on the time-rescaled queries and keys, in float32."""
        q_factor, k_factor = time_factors(delta, self.time_scale)
        return temporal_attention(
            q, k, v, mask, q_factor[:, :, -q.shape[2] :], k_factor
        )


def time_factors(
    delta: torch.Tensor, time_scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) seconds -> query and key factors ``exp(±delta / time_scale)``, each
    (B, 1, T, 1) float32: their product for query i and key j is the time factor."""
    scaled = delta.float() / time_scale
    return torch.exp(scaled)[:, None, :, None], torch.exp(-scaled)[:, None, :, None]


def temporal_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    q_factor: torch.Tensor,
    k_factor: torch.Tensor,
) -> torch.Tensor:
    """Fused SDPA on queries and keys rescaled by ``time_factors``, in float32.

    q: (B, H, Tq, Dh) with q_factor (B, 1, Tq, 1); k, v: (B, H, T, Dh) with k_factor
    (B, 1, T, 1); mask: (B, 1, 1, T) bool or None.
    """
    return F.scaled_dot_product_attention(
        q.float() * q_factor, k.float() * k_factor, v.float(), attn_mask=mask
    )


def explicit_temporal_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    key_real: torch.Tensor,
    delta_q: torch.Tensor,
    delta_k: torch.Tensor,
    time_scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The time-factor attention written out step by step (reference form).

    Args:
        q: (B, H, Tq, Dh); k, v: (B, H, T, Dh).
        key_real: (B, T) bool.
        delta_q: (B, Tq) and delta_k: (B, T) seconds.
        time_scale: seconds.

    Returns:
        output (B, H, Tq, Dh) and attention weights (B, H, Tq, T).
    """
    scores = q.float() @ k.float().transpose(-2, -1) / q.shape[-1] ** 0.5
    factor = torch.exp(
        (delta_q.float()[:, :, None] - delta_k.float()[:, None, :]) / time_scale
    )  # (B, Tq, T)
    scores = scores * factor[:, None]
    scores = scores.masked_fill(~key_real[:, None, None, :], float("-inf"))
    weights = scores.softmax(dim=-1)
    return weights @ v.float(), weights
