"""The full classifier: shapes, padding, the gate, determinism, errors, gradients."""

from __future__ import annotations

import pytest
import torch

from tsa_kedro.models import TSAConfig, TwoSeqMoEOrderFeatureAttentionClassifier
from tsa_kedro.models.feature_reduction import FeatureReducer, aligned, halving_widths
from tsa_kedro.models.order_attention import OrderAttention
from tsa_kedro.models.tsa import history_match_rates

from .conftest import make_batch, tiny_config

CID_LENGTHS = [1, 3, 7, 5]
CCID_LENGTHS = [1, 2, 7, 1]  # rows 0 and 3: no card history


def _model(
    config: TSAConfig, seed: int = 0
) -> TwoSeqMoEOrderFeatureAttentionClassifier:
    torch.manual_seed(seed)
    return TwoSeqMoEOrderFeatureAttentionClassifier(config).eval()


def test_output_shapes(config):
    model = _model(config)
    batch = make_batch(config, CID_LENGTHS, CCID_LENGTHS)
    details = model.forward_details(*batch)
    assert details["logits"].shape == (4, 2)
    assert details["gate_weights"].shape == (4, 2)
    proba = model.predict_proba(*batch)
    assert proba.shape == (4,)
    assert ((proba > 0) & (proba < 1)).all()
    torch.testing.assert_close(proba, details["logits"].softmax(-1)[:, 1])


def test_padded_rows_do_not_change_the_output(config):
    model = _model(config)
    batch = make_batch(config, CID_LENGTHS, CCID_LENGTHS)
    reference = model(*batch)
    g = torch.Generator().manual_seed(1)
    changed = []
    for cat, num in ((batch[0], batch[1]), (batch[2], batch[3])):
        pad = num[..., -1] == 0  # (B, L)
        new_cat = torch.randint(1, config.vocab_size, cat.shape, generator=g)
        new_num = torch.rand(num.shape, generator=g) * 1e4
        new_num[..., -1] = 0.0  # the rows stay padding
        changed += [
            torch.where(pad[..., None], new_cat, cat),
            torch.where(pad[..., None], new_num, num),
        ]
    assert not torch.equal(changed[1], batch[1])
    assert not torch.equal(changed[2], batch[2])
    out = model(*changed, batch[4])
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-6)


def test_real_rows_do_change_the_output(config):
    model = _model(config)
    batch = list(make_batch(config, CID_LENGTHS, CCID_LENGTHS))
    reference = model(*batch)
    batch[1] = batch[1].clone()
    batch[1][2, 3, 0] += 0.5  # a real history row of order 2
    out = model(*batch)
    assert not torch.allclose(out[2], reference[2])
    torch.testing.assert_close(out[[0, 1, 3]], reference[[0, 1, 3]], rtol=0, atol=0)


def test_ccid_weight_is_zero_without_card_history(config):
    model = _model(config)
    batch = make_batch(config, CID_LENGTHS, CCID_LENGTHS)
    weights = model.forward_details(*batch)["gate_weights"]
    assert weights[0, 1].item() == 0.0 and weights[3, 1].item() == 0.0
    assert weights[0, 0].item() == 1.0 and weights[3, 0].item() == 1.0
    assert (weights[[1, 2], 1] > 0).all()


def test_orders_are_scored_independently_of_their_batch(config):
    model = _model(config)
    batch = make_batch(config, CID_LENGTHS, CCID_LENGTHS)
    together = model(*batch)
    alone = torch.cat([model(*(t[i : i + 1] for t in batch)) for i in range(4)])
    torch.testing.assert_close(alone, together, rtol=0, atol=1e-6)


def test_ccid_history_content_matters_only_with_history(config):
    model = _model(config)
    batch = list(make_batch(config, CID_LENGTHS, CCID_LENGTHS))
    reference = model(*batch)
    batch[3] = batch[3].clone()
    batch[3][:, -1, 0] += 0.7  # the current row of every card sequence
    out = model(*batch)
    # Rows without card history ignore the ccid sequence entirely.
    torch.testing.assert_close(out[[0, 3]], reference[[0, 3]], rtol=0, atol=0)
    assert not torch.allclose(out[[1, 2]], reference[[1, 2]])


def test_identical_outputs_for_a_fixed_seed(config):
    batch = make_batch(config, CID_LENGTHS, CCID_LENGTHS)
    config = tiny_config(dropout=0.1)
    outs = []
    for _ in range(2):
        model = _model(config, seed=3).train()
        torch.manual_seed(11)
        outs.append(model(*batch))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    other = _model(config, seed=4).eval()
    assert not torch.allclose(other(*batch), _model(config, seed=3)(*batch))


def test_backward_reaches_every_parameter(config):
    model = _model(config).train()
    batch = make_batch(config, CID_LENGTHS, [2, 2, 7, 3])
    loss = torch.nn.functional.cross_entropy(model(*batch), torch.tensor([0, 1, 0, 1]))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    assert torch.count_nonzero(model.embedding.table.weight.grad[0]) == 0  # padding row


def test_int16_indices_are_accepted(config):
    model = _model(config)
    batch = list(make_batch(config, CID_LENGTHS, CCID_LENGTHS))
    reference = model(*batch)
    batch[0], batch[2] = batch[0].to(torch.int16), batch[2].to(torch.int16)
    torch.testing.assert_close(model(*batch), reference)


@pytest.mark.parametrize(
    ("position", "shape", "name"),
    [
        (0, (4, 7, 6), "x_seq_cat_cid"),
        (1, (4, 7, 4), "x_seq_num_cid"),
        (3, (4, 6, 5), "x_seq_num_ccid"),
        (4, (4, 5), "x_num"),
    ],
)
def test_wrong_widths_name_the_input(config, position, shape, name):
    model = _model(config)
    batch = list(make_batch(config, CID_LENGTHS, CCID_LENGTHS))
    batch[position] = torch.zeros(shape, dtype=batch[position].dtype)
    with pytest.raises(ValueError, match=name):
        model(*batch)


def test_float_categoricals_are_rejected(config):
    model = _model(config)
    batch = list(make_batch(config, CID_LENGTHS, CCID_LENGTHS))
    batch[2] = batch[2].float()
    with pytest.raises(ValueError, match="x_seq_cat_ccid"):
        model(*batch)


def test_from_config_dict_round_trip(config):
    model = TwoSeqMoEOrderFeatureAttentionClassifier.from_config(config.to_dict())
    assert model.config == config


def test_feature_reducer_halves_the_features_with_leaky_relu_between_layers():
    torch.manual_seed(0)
    reducer = FeatureReducer(5)  # 5 -> 2 -> 1
    embeddings = torch.randn(5, 6, 4)  # (F, N, E)
    first, second = reducer.layers
    h = torch.einsum("of,fne->one", first.weight, embeddings)
    h = h + first.bias[:, None, None]
    assert (h < 0).any()  # the activation's negative side matters here
    expected = (
        torch.einsum(
            "of,fne->one", second.weight, torch.nn.functional.leaky_relu(h, 0.01)
        )
        + second.bias[:, None, None]
    )
    torch.testing.assert_close(reducer(embeddings), expected[0])


def test_zero_feature_rows_past_the_features_leave_the_reduction_unchanged():
    """The callers pad the feature axis to an aligned count with zero rows."""
    torch.manual_seed(0)
    reducer = FeatureReducer(13)
    embeddings = torch.randn(13, 6, 4)
    padded = torch.cat([embeddings, torch.zeros(aligned(13) - 13, 6, 4)])
    assert padded.shape[0] == 16
    torch.testing.assert_close(reducer(padded), reducer(embeddings))


@pytest.mark.parametrize("n_features", [1, 2, 5, 9, 67])
def test_numericals_reduce_as_over_their_built_embeddings(n_features):
    """``reduce_numericals`` folds the first layer's weights into the rows; the
    result and the gradients equal the reducer over the (F, N, E) embeddings
    ``values[n, f] * rows[f]`` built explicitly."""
    config = tiny_config(n_num_features=n_features)
    torch.manual_seed(0)
    order = OrderAttention(config)
    values = torch.randn(10, n_features)
    rows = torch.randn(n_features, 8, requires_grad=True)
    built = values.t()[:, :, None] * rows[:, None, :]  # (F, N, E)
    expected = order.num_reducer(built)
    folded = order.reduce_numericals(values, rows)
    torch.testing.assert_close(folded, expected, rtol=1e-5, atol=1e-6)
    grads = torch.autograd.grad(
        expected.square().sum(), [rows, *order.num_reducer.parameters()]
    )
    again = torch.autograd.grad(
        folded.square().sum(), [rows, *order.num_reducer.parameters()]
    )
    for a, b in zip(grads, again, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_halving_widths():
    assert halving_widths(109) == [109, 54, 27, 13, 6, 3, 1]
    assert halving_widths(67) == [67, 33, 16, 8, 4, 2, 1]
    assert halving_widths(1) == [1]


def test_runs_under_bf16_autocast(config):
    """The mixed-precision path (bf16 autocast, as on GPUs) runs and stays close."""
    model = _model(config)
    batch = make_batch(config, CID_LENGTHS, CCID_LENGTHS)
    reference = model(*batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(*batch)
        out.float().sum().backward()
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), reference, rtol=0.1, atol=0.1)


@pytest.mark.parametrize("numeric_embedding", ["linear", "periodic"])
def test_feature_attention_reads_the_size_of_positive_values(numeric_embedding):
    """Pre-norm blocks see LN(token); LN(v * row) is the same for every v > 0, so
    the per-feature bias is what lets a current-order value count (linear); the
    periodic tokens move with the value by construction."""
    config = tiny_config(numeric_embedding=numeric_embedding)
    model = _model(config)
    batch = make_batch(config, CID_LENGTHS, CCID_LENGTHS)
    current_num = batch[1][:, -1, : config.n_num_features].clamp(min=0.1)
    cat = batch[0][:, -1]
    eng = batch[4].clamp(min=0.1)
    with torch.no_grad():
        base = model.feature_attention(model.embedding, cat, current_num, eng)
        doubled_num = model.feature_attention(
            model.embedding, cat, 2 * current_num, eng
        )
        doubled_eng = model.feature_attention(
            model.embedding, cat, current_num, 2 * eng
        )
    assert (base - doubled_num).abs().max() > 1e-3
    assert (base - doubled_eng).abs().max() > 1e-3


@pytest.mark.parametrize("delta_feature", [False, True])
def test_time_delta_feature_makes_recency_visible(delta_feature):
    """With a time scale so large that the time factor is ~1, moving a history row
    from one minute to one day ago changes the output only through the feature."""
    config = tiny_config(time_delta_feature=delta_feature, time_scale=1e15)
    model = _model(config)
    batch = make_batch(config, [3, 3], [1, 1])
    recent = [t.clone() for t in batch]
    past = [t.clone() for t in batch]
    recent[1][:, -2, -2] = 60.0
    past[1][:, -2, -2] = 86_400.0
    with torch.no_grad():
        gap = (model(*recent) - model(*past)).abs().max()
    if delta_feature:
        assert gap > 1e-4
    else:
        assert gap < 1e-5


def test_time_delta_feature_adds_one_embedding_row():
    plain = _model(tiny_config())
    with_delta = _model(tiny_config(time_delta_feature=True))
    rows = plain.embedding.table.weight.shape[0]
    assert with_delta.embedding.table.weight.shape[0] == rows + 1
    assert with_delta.embedding.sequence_numeric_rows.shape[0] == (
        plain.config.n_num_features + 1
    )


def test_categorical_dropout_blanks_indices_in_training_only():
    """In training, each index is replaced by 0 (unknown) at the configured rate, and the
    model's output equals the output for the blanked inputs; in eval mode nothing
    changes."""
    config = tiny_config(categorical_dropout=0.4)
    model = _model(config)
    batch = make_batch(config, [7] * 64, [7] * 64)
    reference = model(*batch)
    plain = _model(tiny_config(), seed=0)
    torch.testing.assert_close(reference, plain(*batch), rtol=0, atol=0)

    torch.manual_seed(5)
    dropped = model._drop_categories(batch[0])
    blanked = (dropped == 0) & (batch[0] != 0)
    assert 0.35 < blanked.float().mean().item() < 0.45
    assert torch.equal(dropped[~blanked], batch[0][~blanked])

    model.train()
    torch.manual_seed(5)
    cid = model._drop_categories(batch[0])
    ccid = model._drop_categories(batch[2])
    expected = plain(cid, batch[1], ccid, *batch[3:])
    torch.manual_seed(5)
    torch.testing.assert_close(model(*batch), expected, rtol=0, atol=1e-6)
    assert not torch.allclose(expected, reference, atol=1e-4)


def test_periodic_embedding_leaves_only_categorical_rows_and_matches_its_formula():
    periodic = _model(
        tiny_config(
            numeric_embedding="periodic",
            periodic_frequencies=3,
            time_delta_feature=True,
        )
    )
    assert periodic.embedding.table.weight.shape[0] == periodic.config.vocab_size
    assert periodic.order_cid.periodic.frequencies.shape == (
        periodic.config.n_num_features + 1,
        3,
    )
    layer = periodic.feature_attention.periodic
    values = torch.rand(4, layer.frequencies.shape[0])
    with torch.no_grad():
        tokens = layer(values)
    f, b = 2, 1
    phase = 2 * torch.pi * values[b, f] * layer.frequencies[f]
    c = torch.cat([phase.sin(), phase.cos()])
    expected = torch.relu(c @ layer.weight[f] + layer.bias[f])
    torch.testing.assert_close(tokens[b, f], expected.detach(), rtol=1e-5, atol=1e-6)


def test_feature_mlp_path_widens_the_feature_output_and_reads_every_token():
    config = tiny_config(feature_mlp_hidden=6)
    model = _model(config)
    batch = make_batch(config, CID_LENGTHS, CCID_LENGTHS)
    cat, num, eng = batch[0][:, -1], batch[1][:, -1, : config.n_num_features], batch[4]
    with torch.no_grad():
        out = model.feature_attention(model.embedding, cat, num, eng)
        assert out.shape == (4, config.dim_embedding + 6)
        changed = eng.clone()
        changed[:, -1] += 0.5
        moved = model.feature_attention(model.embedding, cat, num, changed)
    assert (
        out[:, config.dim_embedding :] - moved[:, config.dim_embedding :]
    ).abs().max() > 0
    assert model.classifier[0].in_features == 3 * config.dim_embedding + 6


def test_history_match_rates_count_equal_real_history_rows():
    # One order, 4 rows (3 history + current), 2 categorical features.
    cat = torch.tensor([[[9, 9], [5, 2], [5, 3], [5, 0]]])
    real = torch.tensor([[0.0, 1.0, 1.0, 1.0]])  # first row is padding
    rates = history_match_rates(cat, real)
    # Feature 0: current 5, history 5 and 5 -> 1.0; feature 1: current unknown -> 0.
    torch.testing.assert_close(rates, torch.tensor([[1.0, 0.0]]))
    cat[0, 2, 0] = 7
    torch.testing.assert_close(
        history_match_rates(cat, real), torch.tensor([[0.5, 0.0]])
    )
    # Padded rows never count, even when their content matches.
    cat[0, 0, 0] = 5
    torch.testing.assert_close(
        history_match_rates(cat, real), torch.tensor([[0.5, 0.0]])
    )
    # No history: all zeros.
    alone = torch.tensor([[0.0, 0.0, 0.0, 1.0]])
    assert history_match_rates(cat, alone).abs().sum() == 0


def test_history_match_features_widen_the_dense_inputs():
    plain = _model(tiny_config(numeric_embedding="periodic"))
    config = tiny_config(numeric_embedding="periodic", history_match_features=True)
    model = _model(config)
    extra = 2 * config.n_cat_features
    assert config.n_dense_features == config.n_eng_features + extra
    assert (
        model.feature_attention.periodic.frequencies.shape[0]
        == plain.feature_attention.periodic.frequencies.shape[0] + extra
    )
    batch = make_batch(config, [4, 6], [3, 1])
    batch[0][:, :, 0] = 3  # every cid row shares the first categorical
    with torch.no_grad():
        tokens = model.embed_inputs(*batch)["feature_tokens"]
    expected = torch.cat(
        [
            batch[4],
            history_match_rates(batch[0], batch[1][..., -1]),
            history_match_rates(batch[2], batch[3][..., -1]),
        ],
        dim=1,
    )
    n_num = config.n_num_features
    with torch.no_grad():
        expected_tokens = model.feature_attention.tokens(
            model.embedding, batch[0][:, -1], batch[1][:, -1, :n_num], expected
        )
    torch.testing.assert_close(tokens, expected_tokens)
    assert (expected[:, config.n_eng_features] == 1.0).all()


def test_feature_major_rows_are_gathered_in_the_autocast_dtype(config):
    """Under autocast the (F, N, E) rows come out in bf16, equal to the float32 rows
    rounded as the feature-axis MLP would round them, and the float32 table still
    gets its gradient; without autocast nothing changes."""
    model = _model(config)
    embedding = model.embedding
    idx = torch.randint(0, config.vocab_size, (12, config.n_cat_features))
    rows = embedding.categorical_feature_major(idx)
    assert rows.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rounded = embedding.categorical_feature_major(idx)
    assert rounded.dtype == torch.bfloat16
    torch.testing.assert_close(rounded, rows.bfloat16(), rtol=0, atol=0)
    rounded.float().sum().backward()
    grad = embedding.table.weight.grad
    assert grad is not None and grad.dtype == torch.float32
    counts = torch.bincount(idx.flatten(), minlength=grad.shape[0]).float()
    counts[0] = 0  # the padding row gets no gradient
    torch.testing.assert_close(grad, counts[:, None].expand_as(grad))
