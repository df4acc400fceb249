"""Temporal attention: the fused form equals the explicit time-factor computation."""

from __future__ import annotations

import math

import pytest
import torch

from tsa_kedro.models.attention import (
    MultiHeadSelfAttention,
    explicit_temporal_attention,
)


def _inputs(B=3, T=6, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, D, generator=g)
    delta = torch.rand(B, T, generator=g) * 5e6
    delta[:, -1] = 0.0  # readout token
    key_real = torch.ones(B, T, dtype=torch.bool)
    key_real[0, :2] = False
    key_real[1, :4] = False
    return x, delta, key_real


@pytest.mark.parametrize("n_heads", [1, 2])
@pytest.mark.parametrize("last_query_only", [False, True])
def test_module_matches_explicit_computation(n_heads, last_query_only):
    torch.manual_seed(0)  # the weights, independent of the tests run before
    x, delta, key_real = _inputs()
    B, T, D = x.shape
    attn = MultiHeadSelfAttention(D, n_heads, time_scale=1e6).eval()
    out = attn(x, key_real, delta, last_query_only=last_query_only)

    q, k, v = attn.qkv(x).split(D, dim=-1)
    Tq = 1 if last_query_only else T
    q = q[:, T - Tq :]

    def heads(t):
        return t.reshape(B, t.shape[1], n_heads, D // n_heads).transpose(1, 2)

    ref, _ = explicit_temporal_attention(
        heads(q),
        heads(k),
        heads(v),
        key_real=key_real,
        delta_q=delta[:, T - Tq :],
        delta_k=delta,
        time_scale=1e6,
    )
    ref = attn.proj(ref.transpose(1, 2).reshape(B, Tq, D))
    # float32: the fused and the explicit form round the rescaled scores differently
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_time_factor_changes_attention_as_specified():
    """One query, two keys: weights follow softmax(score * exp((dq - dk) / s))."""
    q = torch.tensor([[[[1.0, 0.0]]]])  # (1, 1, 1, 2)
    k = torch.tensor([[[[1.0, 0.0], [2.0, 0.0]]]])  # scores 1/sqrt2, 2/sqrt2
    v = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    key_real = torch.ones(1, 2, dtype=torch.bool)
    s = 1e6
    dq = torch.tensor([[1e6]])
    dk = torch.tensor([[3e6, 1e6]])
    _, weights = explicit_temporal_attention(
        q, k, v, key_real=key_real, delta_q=dq, delta_k=dk, time_scale=s
    )
    z0 = (1 / math.sqrt(2)) * math.exp((1e6 - 3e6) / s)
    z1 = (2 / math.sqrt(2)) * math.exp(0.0)
    expected_w0 = math.exp(z0) / (math.exp(z0) + math.exp(z1))
    assert weights[0, 0, 0, 0].item() == pytest.approx(expected_w0, rel=1e-6)

    # Without time differences the weights are the plain softmax: a different result.
    _, plain = explicit_temporal_attention(
        q,
        k,
        v,
        key_real=key_real,
        delta_q=dk[:, 1:],
        delta_k=dk * 0 + 1e6,
        time_scale=s,
    )
    plain_w0 = math.exp(1 / math.sqrt(2)) / (
        math.exp(1 / math.sqrt(2)) + math.exp(2 / math.sqrt(2))
    )
    assert plain[0, 0, 0, 0].item() == pytest.approx(plain_w0, rel=1e-6)
    assert abs(expected_w0 - plain_w0) > 0.01


def test_deltas_change_the_module_output():
    x, delta, key_real = _inputs()
    attn = MultiHeadSelfAttention(8, 1, time_scale=1e6).eval()
    moved = delta.clone()
    moved[:, 2] += 3e6
    assert not torch.allclose(attn(x, key_real, delta), attn(x, key_real, moved))


def test_padded_keys_get_zero_weight():
    x, delta, key_real = _inputs()
    attn = MultiHeadSelfAttention(8, 1, time_scale=1e6).eval()
    changed = x.clone()
    changed[0, :2] = 1e3  # padded keys of row 0
    out, out_changed = attn(x, key_real, delta), attn(changed, key_real, delta)
    torch.testing.assert_close(out[0, 2:], out_changed[0, 2:], rtol=0, atol=1e-6)


def test_time_factor_stays_float32_under_autocast():
    x, delta, key_real = _inputs()
    attn = MultiHeadSelfAttention(8, 1, time_scale=1e6).eval()
    reference = attn(x, key_real, delta)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attn(x, key_real, delta)
    # Only the bf16 projections differ; the attention itself ran in float32.
    torch.testing.assert_close(out.float(), reference, rtol=0.05, atol=0.05)


def test_temporal_attention_needs_deltas():
    x, _, key_real = _inputs()
    attn = MultiHeadSelfAttention(8, 1, time_scale=1e6)
    with pytest.raises(ValueError, match="delta"):
        attn(x, key_real)
