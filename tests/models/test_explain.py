"""Reason codes: faithfulness on planted patterns, completeness, the answer's form."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tsa_kedro.models import TwoSeqMoEOrderFeatureAttentionClassifier
from tsa_kedro.models.explain import Explainer, check_top_k, feature_names

from .conftest import make_batch, tiny_config

# label 1 iff the current order's categorical 0 is PLANTED_VALUE, or one past cid
# order has PLANTED_PAST_VALUE in categorical 1 (never both in one order)
PLANTED_FEATURE, PLANTED_VALUE = 0, 7
PAST_FEATURE, PLANTED_PAST_VALUE = 1, 11


def _names(config) -> list[str]:
    return feature_names(
        [f"cat{i}" for i in range(config.n_cat_features)],
        [f"num{i}" for i in range(config.n_num_features)],
        [f"eng{i}" for i in range(config.n_eng_features)],
        config.history_match_features,
    )


def _sequence(config, n: int, g: torch.Generator):
    L = config.seq_len
    cat = torch.randint(
        1, config.vocab_size, (n, L, config.n_cat_features), generator=g
    )
    for feature, value in (
        (PLANTED_FEATURE, PLANTED_VALUE),
        (PAST_FEATURE, PLANTED_PAST_VALUE),
    ):
        column = cat[..., feature]
        cat[..., feature] = torch.where(column == value, value + 1, column)
    num = torch.rand(n, L, config.n_num_features + 2, generator=g)
    lengths = torch.randint(2, L + 1, (n,), generator=g)
    back = (L - 1 - torch.arange(L)).float()
    real = back[None] < lengths[:, None]
    num[..., -2] = (back[None] + torch.rand(n, L, generator=g)) * 86_400.0
    num[:, -1, -2] = 0.0
    num[..., -1] = real.float()
    return cat * real[..., None], num * real[..., None], lengths


def planted_data(config, n: int, seed: int):
    """Model inputs, labels, the kind of each order (0 negative, 1 planted current
    feature, 2 planted past order) and the planted past order's sequence row."""
    g = torch.Generator().manual_seed(seed)
    L, n_num = config.seq_len, config.n_num_features
    kind = torch.randint(0, 3, (n,), generator=g)
    cat_cid, num_cid, lengths = _sequence(config, n, g)
    cat_ccid, num_ccid, _ = _sequence(config, n, g)
    current = kind == 1
    cat_cid[current, -1, PLANTED_FEATURE] = PLANTED_VALUE
    # the current order is the last row of both sequences
    cat_ccid[:, -1] = cat_cid[:, -1]
    num_ccid[:, -1, :n_num] = num_cid[:, -1, :n_num]
    row = torch.full((n,), -1)
    for i in torch.nonzero(kind == 2).flatten().tolist():
        back = int(torch.randint(1, int(lengths[i]), (1,), generator=g))
        row[i] = L - 1 - back
        cat_cid[i, row[i], PAST_FEATURE] = PLANTED_PAST_VALUE
    x_num = torch.rand(n, config.n_eng_features, generator=g)
    inputs = (cat_cid.int(), num_cid, cat_ccid.int(), num_ccid, x_num)
    return inputs, (kind > 0).long(), kind, row


@pytest.fixture(scope="module")
def planted_model():
    config = tiny_config(feature_mlp_hidden=8)
    torch.manual_seed(0)
    model = TwoSeqMoEOrderFeatureAttentionClassifier(config)
    inputs, labels, _, _ = planted_data(config, 1200, seed=1)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(5):
        model.train()
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(2))
        for first in range(0, len(labels), 64):
            rows = order[first : first + 64]
            logits = model(*(x[rows] for x in inputs))
            loss = F.cross_entropy(logits, labels[rows])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model.eval()


@pytest.mark.parametrize("steps", [8, 32])  # the serving default, and finer
def test_planted_feature_and_past_order_rank_first(planted_model, steps):
    config = planted_model.config
    inputs, labels, kind, row = planted_data(config, 150, seed=3)
    accuracy = ((planted_model.predict_proba(*inputs) > 0.5).long() == labels).float()
    assert accuracy.mean() > 0.9, "the model must have learnt the planted patterns"

    explainer = Explainer(planted_model, _names(config), n_steps=steps)
    attributions = explainer.attribute(*inputs)
    reasons = explainer.reasons(attributions, top_k=3)

    feature_first = [
        bool(reasons[i]["features"])
        and reasons[i]["features"][0]["name"] == f"cat{PLANTED_FEATURE}"
        for i in torch.nonzero(kind == 1).flatten().tolist()
    ]
    past_first = [
        bool(reasons[i]["cid_orders"])
        and reasons[i]["cid_orders"][0]["position"] == config.seq_len - 1 - int(row[i])
        for i in torch.nonzero(kind == 2).flatten().tolist()
    ]
    assert len(feature_first) > 20 and len(past_first) > 20
    assert np.mean(feature_first) >= 0.8
    assert np.mean(past_first) >= 0.8


def test_past_order_position_and_time(planted_model):
    config = planted_model.config
    inputs, _, kind, row = planted_data(config, 40, seed=4)
    explainer = Explainer(planted_model, _names(config), n_steps=16)
    i = int(torch.nonzero(kind == 2)[0])
    (answer,) = explainer.reasons(
        explainer.attribute(*(x[i : i + 1] for x in inputs)), top_k=1
    )
    (top,) = answer["cid_orders"]
    assert top["position"] == config.seq_len - 1 - int(row[i])
    assert top["seconds_before"] == pytest.approx(float(inputs[1][i, row[i], -2]))


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {
            "time_delta_feature": True,
            "numeric_embedding": "periodic",
            "feature_mlp_hidden": 8,
            "history_match_features": True,
        },
    ],
    ids=["plain", "small_preset_options"],
)
@pytest.mark.parametrize("output", ["probability", "log_odds"])
def test_attributions_add_up_to_the_score_difference(overrides, output):
    config = tiny_config(**overrides)
    torch.manual_seed(0)
    model = TwoSeqMoEOrderFeatureAttentionClassifier(config).eval()
    batch = make_batch(config, [1, 3, 7, 5], [1, 2, 7, 1])
    attributions = Explainer(
        model, _names(config), n_steps=32, output=output
    ).attribute(*batch)

    logits = model(*batch).detach()
    if output == "probability":
        expected = model.predict_proba(*batch).double().numpy()
    else:
        expected = (logits[:, 1] - logits[:, 0]).double().numpy()
    np.testing.assert_allclose(attributions.score, expected, rtol=1e-5, atol=1e-6)
    difference = attributions.score - attributions.baseline_score
    total = attributions.total()
    # Captum's delta is exactly the completeness gap ...
    np.testing.assert_allclose(
        total - difference, attributions.convergence_delta, atol=1e-5
    )
    # ... and small: a hundredth of a probability, a twentieth of a log-odds unit
    limit = 0.01 if output == "probability" else 0.05
    assert np.abs(attributions.convergence_delta).max() < limit
    # padded rows get nothing
    assert (attributions.cid[~attributions.real_cid] == 0).all()
    assert (attributions.ccid[~attributions.real_ccid] == 0).all()


def test_more_steps_shrink_the_delta(planted_model):
    config = planted_model.config
    inputs, _, _, _ = planted_data(config, 30, seed=5)
    deltas = [
        np.abs(
            Explainer(planted_model, _names(config), n_steps=steps)
            .attribute(*inputs)
            .convergence_delta
        ).mean()
        for steps in (8, 64)
    ]
    assert deltas[1] < deltas[0]


def test_reasons_list_only_positive_attributions_largest_first():
    config = tiny_config()
    torch.manual_seed(0)
    model = TwoSeqMoEOrderFeatureAttentionClassifier(config).eval()
    explainer = Explainer(model, _names(config), n_steps=8)
    batch = make_batch(config, [1, 3, 7, 5], [1, 2, 7, 1])
    attributions = explainer.attribute(*batch)
    for k in (1, 4):
        for b, answer in enumerate(explainer.reasons(attributions, top_k=k)):
            for key in ("features", "cid_orders", "ccid_orders"):
                values = [entry["attribution"] for entry in answer[key]]
                assert len(values) <= k
                assert all(v > 0 for v in values)
                assert values == sorted(values, reverse=True)
            n_positive = int((attributions.features[b] > 0).sum())
            assert len(answer["features"]) == min(k, n_positive)
            positions = [entry["position"] for entry in answer["cid_orders"]]
            n_past = int(attributions.real_cid[b].sum()) - 1
            assert all(1 <= p <= n_past for p in positions)


def test_rejected_arguments():
    config = tiny_config()
    model = TwoSeqMoEOrderFeatureAttentionClassifier(config)
    with pytest.raises(ValueError, match="feature names: 3 given"):
        Explainer(model, ["a", "b", "c"])
    with pytest.raises(ValueError, match="n_steps"):
        Explainer(model, _names(config), n_steps=1)
    with pytest.raises(ValueError, match="output"):
        Explainer(model, _names(config), output="logit")
    for bad in (0, 51, True, 2.0, "3"):
        with pytest.raises(ValueError, match="top_k"):
            check_top_k(bad, "top_k")
    assert check_top_k(np.int64(5), "top_k") == 5
