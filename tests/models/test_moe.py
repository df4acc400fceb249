"""Mixture-of-experts feed-forward: top-2 routing and the model's MoE path."""

from __future__ import annotations

import torch

from tsa_kedro.models import TwoSeqMoEOrderFeatureAttentionClassifier
from tsa_kedro.models.moe import MoEFeedForward

from .conftest import make_batch, tiny_config


def test_each_token_is_the_weighted_sum_of_its_top2_experts():
    torch.manual_seed(0)
    moe = MoEFeedForward(dim=6, hidden=12, dropout=0.0, n_experts=4, top_k=2).eval()
    x = torch.randn(3, 5, 6)
    out = moe(x)
    tokens = x.reshape(-1, 6)
    logits = moe.router(tokens)
    for n, token in enumerate(tokens):
        top = logits[n].topk(2)
        weights = top.values.softmax(-1)
        expected = sum(
            w * moe.experts[e](token) for w, e in zip(weights, top.indices, strict=True)
        )
        torch.testing.assert_close(out.reshape(-1, 6)[n], expected)
    # Routing really is sparse: the other experts would give a different answer.
    dense = sum(expert(tokens) for expert in moe.experts) / 4
    assert not torch.allclose(out.reshape(-1, 6), dense)
    probs = logits.softmax(-1)
    top1 = probs.argmax(-1)
    balance = sum((top1 == e).float().mean() * probs[:, e].mean() for e in range(4))
    torch.testing.assert_close(moe.aux_loss, 4 * balance)


def test_moe_model_trains():
    config = tiny_config(use_moe=True, n_experts=3, moe_top_k=2)
    torch.manual_seed(0)
    model = TwoSeqMoEOrderFeatureAttentionClassifier(config).train()
    n_moe = sum(isinstance(m, MoEFeedForward) for m in model.modules())
    assert n_moe == 2 * config.n_layers_order
    batch = make_batch(config, [1, 3, 7, 5], [1, 2, 7, 1])
    logits = model(*batch)
    assert logits.shape == (4, 2)
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 0, 1]))
    (loss + 0.01 * model.moe_aux_loss()).backward()
    router = model.order_cid.blocks[0].ff.router.weight
    assert router.grad is not None and router.grad.abs().sum() > 0
