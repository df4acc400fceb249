"""Scoring both order-attention stacks in one pass (``pair_sequences``, paired.py)."""

from __future__ import annotations

import pytest
import torch

from tsa_kedro.models import TwoSeqMoEOrderFeatureAttentionClassifier
from tsa_kedro.models.tsa import PAIR_MAX_ORDERS

from .conftest import make_batch, tiny_config

CID_LENGTHS = [1, 3, 7, 5]
CCID_LENGTHS = [2, 2, 7, 3]  # every order has a card history
MIXED_CCID_LENGTHS = [1, 2, 7, 1]  # orders 0 and 3 have none


def _model(config, seed: int = 0) -> TwoSeqMoEOrderFeatureAttentionClassifier:
    torch.manual_seed(seed)
    return TwoSeqMoEOrderFeatureAttentionClassifier(config).eval()


def _scores(model, batch, paired: bool) -> dict[str, torch.Tensor]:
    model.pair_sequences = paired
    try:
        with torch.inference_mode():
            return model.forward_details(*batch)
    finally:
        model.pair_sequences = True


@pytest.mark.parametrize("skip_padding", [True, False])
def test_paired_scores_equal_the_stacks_one_after_the_other(config, skip_padding):
    model = _model(config)
    model.skip_padding = skip_padding
    for ccid_lengths in (CCID_LENGTHS, [7, 7, 7, 7], [7, 2, 2, 2]):
        batch = make_batch(config, CID_LENGTHS, ccid_lengths)
        with torch.no_grad():
            assert model._pairs(batch[0], batch[2], torch.ones(4, dtype=torch.bool))
        paired = _scores(model, batch, paired=True)
        each = _scores(model, batch, paired=False)
        for key in ("logits", "gate_weights"):
            torch.testing.assert_close(paired[key], each[key], rtol=0, atol=2e-6)


def test_paired_scores_ignore_padded_rows(config):
    model = _model(config)
    batch = make_batch(config, CID_LENGTHS, CCID_LENGTHS)
    reference = _scores(model, batch, paired=True)["logits"]
    changed = list(batch)
    g = torch.Generator().manual_seed(1)
    for position in (1, 3):  # padded rows of both numerical sequences
        num = batch[position].clone()
        pad = num[..., -1] == 0
        noise = torch.rand(num.shape, generator=g) * 1e4
        noise[..., -1] = 0.0
        changed[position] = torch.where(pad[..., None], noise, num)
    assert not torch.equal(changed[1], batch[1])
    out = _scores(model, changed, paired=True)["logits"]
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-6)


def test_pairing_runs_for_scoring_only(config):
    batch = make_batch(config, CID_LENGTHS, CCID_LENGTHS)
    all_ccid = torch.ones(4, dtype=torch.bool)
    model = _model(config)
    model(*batch)  # eval mode with autograd on: separate stacks, nothing cached
    assert model._paired._cached is None
    with torch.no_grad():
        assert model._pairs(batch[0], batch[2], all_ccid)
        model.train()
        assert not model._pairs(batch[0], batch[2], all_ccid)
        model.eval()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not model._pairs(batch[0], batch[2], all_ccid)
        model(*batch)
        # Larger batches: the separate stacks' products are large enough.
        larger = make_batch(
            config, [3] * (PAIR_MAX_ORDERS + 1), [2] * (PAIR_MAX_ORDERS + 1)
        )
        assert not model._pairs(
            larger[0], larger[2], torch.ones(len(larger[0]), dtype=torch.bool)
        )
    assert model._paired._cached is not None


def test_a_batch_with_orders_without_card_history_is_not_paired(config):
    """Pairing would run the ccid stack on every order; skipping the empty ones runs
    fewer. Both give the same scores, and the ccid weight stays exactly 0."""
    model = _model(config)
    batch = make_batch(config, CID_LENGTHS, MIXED_CCID_LENGTHS)
    has_ccid = (batch[3][:, :-1, -1] > 0.5).any(dim=1)
    with torch.no_grad():
        assert not model._pairs(batch[0], batch[2], has_ccid)
        model.skip_empty_ccid = False
        assert model._pairs(batch[0], batch[2], has_ccid)
        paired = model.forward_details(*batch)
        model.skip_empty_ccid = True
        skipped = model.forward_details(*batch)
    torch.testing.assert_close(paired["logits"], skipped["logits"], rtol=0, atol=2e-6)
    assert paired["gate_weights"][[0, 3], 1].eq(0).all()


def test_stacked_weights_follow_parameter_changes():
    config = tiny_config()
    model = _model(config)
    batch = make_batch(config, CID_LENGTHS, CCID_LENGTHS)
    before = _scores(model, batch, paired=True)["logits"]
    with torch.no_grad():  # an optimiser step changes parameters in place
        model.order_ccid.blocks[-1].ff.net[3].bias.add_(0.5)
        model.order_cid.readout.mul_(-1.0)
    after = _scores(model, batch, paired=True)["logits"]
    assert not torch.allclose(after, before)
    torch.testing.assert_close(
        after, _scores(model, batch, paired=False)["logits"], rtol=0, atol=2e-6
    )

    other = _model(config, seed=7)
    for assign in (False, True):  # copied into the parameters, or replacing them
        model.load_state_dict(other.state_dict(), assign=assign)
        torch.testing.assert_close(
            _scores(model, batch, paired=True)["logits"],
            _scores(other, batch, paired=False)["logits"],
            rtol=0,
            atol=2e-6,
        )
        model.load_state_dict(_model(config).state_dict())


def test_a_model_built_under_inference_mode_is_paired_without_a_cache():
    """Its parameters keep no version counter, so in-place changes could not be
    told: the weights are stacked on every call instead."""
    config = tiny_config()
    batch = make_batch(config, CID_LENGTHS, CCID_LENGTHS)
    with torch.inference_mode():
        model = _model(config)
        first = _scores(model, batch, paired=True)["logits"]
        model.order_cid.readout.mul_(-1.0)
        changed = _scores(model, batch, paired=True)["logits"]
        assert model._paired._cached is None
        assert not torch.allclose(first, changed)
        torch.testing.assert_close(
            changed, _scores(model, batch, paired=False)["logits"], rtol=0, atol=2e-6
        )


def test_mixture_of_experts_stacks_run_one_after_the_other():
    config = tiny_config(use_moe=True, n_experts=3, moe_top_k=2)
    model = _model(config)
    assert not model._paired.supported
    batch = make_batch(config, CID_LENGTHS, CCID_LENGTHS)
    with torch.no_grad():
        assert not model._pairs(batch[0], batch[2], torch.ones(4, dtype=torch.bool))
        torch.testing.assert_close(
            model(*batch), _scores(model, batch, paired=False)["logits"]
        )


def test_paired_scores_under_torch_compile():
    """Under ``torch.compile`` the stacked weights are built inside the graph."""
    config = tiny_config()
    model = _model(config)
    batch = make_batch(config, CID_LENGTHS, CCID_LENGTHS)
    expected = _scores(model, batch, paired=False)["logits"]
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.inference_mode():
        out = compiled(*batch)
    torch.testing.assert_close(out, expected, rtol=0, atol=2e-6)
