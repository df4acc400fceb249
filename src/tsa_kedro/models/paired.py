"""Both order-attention stacks in one pass, for scoring.

The cid and ccid stacks have the same architecture and their own weights. For scoring
(eval mode, autograd off, no autocast) the parameters of their temporal blocks are
stacked along a leading axis of 2, so each linear layer of both stacks is one batched
product (``baddbmm``), each attention one fused call over both sequences, each layer
norm one call; the gate summarises both sequences in one call too. At one order per request the blocks are bound by operator dispatch (52 tokens of
width 128), so halving the calls about halves their time; ``benchmarks/inference.py``
measures it.

Same maths as the stacks one after the other; the results differ by float rounding
only (the layer norms' affine step is a separate ``addcmul``). The stacked weights are
cached and rebuilt when any parameter changes: in place (an optimiser step,
``load_state_dict``) or by a move (``.to()``). Under ``torch.compile`` they are stacked
inside the graph, where ``freezing`` folds them into constants.

Supported stacks: temporal attention in every block and plain feed-forwards, i.e. not
``use_moe`` (a mixture of experts routes each stack's tokens on its own).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tsa_kedro.models.attention import temporal_attention, time_factors
from tsa_kedro.models.feedforward import FeedForward
from tsa_kedro.models.order_attention import OrderAttention


@dataclass(frozen=True)
class _Layer:
    """One post-norm block of both stacks: weights (2, in, out), biases (2, 1, out)."""

    qkv_weight: torch.Tensor
    qkv_bias: torch.Tensor
    proj_weight: torch.Tensor
    proj_bias: torch.Tensor
    norm1_weight: torch.Tensor
    norm1_bias: torch.Tensor
    ff_in_weight: torch.Tensor
    ff_in_bias: torch.Tensor
    ff_out_weight: torch.Tensor
    ff_out_bias: torch.Tensor
    norm2_weight: torch.Tensor
    norm2_bias: torch.Tensor


@dataclass(frozen=True)
class _Weights:
    """Everything stacked: (2, ...) tensors, first stack at index 0."""

    readout: torch.Tensor  # (2, D)
    blocks: list[_Layer]


def _linear(layers: tuple[torch.nn.Linear, torch.nn.Linear]) -> list[torch.Tensor]:
    """Two ``nn.Linear`` -> stacked (2, in, out) weight and (2, 1, out) bias."""
    return [
        torch.stack([layer.weight.t() for layer in layers]),
        torch.stack([layer.bias[None] for layer in layers]),
    ]


def _norm(norms: tuple[torch.nn.LayerNorm, torch.nn.LayerNorm]) -> list[torch.Tensor]:
    """Two ``nn.LayerNorm`` -> stacked (2, 1, D) weight and bias."""
    return [
        torch.stack([norm.weight[None] for norm in norms]),
        torch.stack([norm.bias[None] for norm in norms]),
    ]


class PairedOrderStacks:
    """The temporal blocks of two ``OrderAttention`` stacks, run as one.

    Holds references to the stacks, no parameters of its own (the state dict does not
    change). ``supported`` says whether the stacks qualify.
    """

    def __init__(self, first: OrderAttention, second: OrderAttention) -> None:
        self.stacks = (first, second)
        blocks = [block for stack in self.stacks for block in stack.blocks]
        self.supported = len(first.blocks) == len(second.blocks) and all(
            isinstance(block.ff, FeedForward) and block.attn.time_scale is not None
            for block in blocks
        )
        if self.supported:
            self.time_scale = first.blocks[0].attn.time_scale
            self.n_heads = first.blocks[0].attn.n_heads
            self.eps = first.blocks[0].norm1.eps
            self.supported = all(
                block.attn.time_scale == self.time_scale
                and block.attn.n_heads == self.n_heads
                and block.norm1.eps == block.norm2.eps == self.eps
                for block in blocks
            )
        # The modules whose parameters are stacked; their parameters are read anew
        # each call (``load_state_dict(assign=True)`` replaces them).
        self._sources = [
            module
            for stack in self.stacks
            for block in stack.blocks
            for module in (block.attn.qkv, block.attn.proj, block.norm1, block.norm2)
        ] + list(self.stacks)
        if self.supported:
            self._sources += [
                layer
                for stack in self.stacks
                for block in stack.blocks
                for layer in (block.ff.net[0], block.ff.net[3])
            ]
        # (key, weights), replaced as one object, so a reader never pairs a new key
        # with old weights.
        self._cached: tuple[tuple, _Weights] | None = None

    def weights(self) -> _Weights:
        """The stacked parameters; cached, except for parameters created under
        inference mode (they keep no version counter to tell an in-place change)."""
        if torch.compiler.is_compiling():
            return self._stack()
        try:
            key = tuple(
                (p.data_ptr(), p._version)
                for module in self._sources
                for p in module._parameters.values()
            )
        except RuntimeError:  # "Inference tensors do not track version counter"
            return self._stack()
        cached = self._cached
        if cached is None or cached[0] != key:
            # Plain tensors even when called under inference mode.
            with torch.inference_mode(False), torch.no_grad():
                cached = self._cached = (key, self._stack())
        return cached[1]

    def _stack(self) -> _Weights:
        first, second = self.stacks
        layers = []
        for a, b in zip(first.blocks, second.blocks, strict=True):
            layers.append(
                _Layer(
                    *_linear((a.attn.qkv, b.attn.qkv)),
                    *_linear((a.attn.proj, b.attn.proj)),
                    *_norm((a.norm1, b.norm1)),
                    *_linear((a.ff.net[0], b.ff.net[0])),
                    *_linear((a.ff.net[3], b.ff.net[3])),
                    *_norm((a.norm2, b.norm2)),
                )
            )
        return _Weights(
            readout=torch.stack([first.readout, second.readout]),
            blocks=layers,
        )

    def encode(
        self, steps: torch.Tensor, delta: torch.Tensor, real: torch.Tensor
    ) -> torch.Tensor:
        """Both stacks' ``OrderAttention.encode`` at once.

        Args:
            steps: (2, B, L, D) step vectors of the first and the second stack.
            delta: (2, B, L) seconds between the current order and each row.
            real: (2, B, L) bool real-row flags.

        Returns:
            (2, B, D) readouts.
        """
        weights = self.weights()
        readout, layers = weights.readout, weights.blocks
        S, B, L, D = steps.shape
        T, H = L + 1, self.n_heads
        x = torch.cat([steps, readout[:, None, None].expand(S, B, 1, D)], dim=2)
        delta = F.pad(delta * real, (0, 1)).reshape(S * B, T)  # readout: 0
        mask = F.pad(real, (0, 1), value=True).reshape(S * B, 1, 1, T)
        # The time factors, the same in every block: computed once.
        q_factor, k_factor = time_factors(delta, self.time_scale)  # (S*B, 1, T, 1)
        x = x.reshape(S, B * T, D)
        last = len(layers) - 1
        for i, layer in enumerate(layers):
            qkv = torch.baddbmm(layer.qkv_bias, x, layer.qkv_weight)  # (S, B*T, 3D)
            q, k, v = qkv.view(S * B, T, 3, H, D // H).permute(2, 0, 3, 1, 4).unbind()
            residual, factor = x, q_factor
            if i == last:  # only the readout token's output is needed
                q, factor = q[:, :, -1:], q_factor[:, :, -1:]
                residual = x.view(S, B, T, D)[:, :, -1]  # (S, B, D)
            out = temporal_attention(q, k, v, mask, factor, k_factor)  # (S*B,H,Tq,Dh)
            out = out.transpose(1, 2).reshape(S, -1, D)  # (S, B*Tq, D)
            out = torch.baddbmm(layer.proj_bias, out, layer.proj_weight)
            x = torch.addcmul(
                layer.norm1_bias,
                F.layer_norm(residual + out, (D,), eps=self.eps),
                layer.norm1_weight,
            )
            hidden = torch.baddbmm(layer.ff_in_bias, x, layer.ff_in_weight).relu_()
            out = torch.baddbmm(layer.ff_out_bias, hidden, layer.ff_out_weight)
            x = torch.addcmul(
                layer.norm2_bias,
                F.layer_norm(x + out, (D,), eps=self.eps),
                layer.norm2_weight,
            )
        return x  # (S, B, D)
