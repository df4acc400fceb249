"""The gradient-boosted trees baseline: its features and its fit."""

from __future__ import annotations

import numpy as np
import pytest

from tests.training.standin import WIDTHS, make_bundle
from tsa_kedro.training.baseline import (
    BaselineSettings,
    baseline_features,
    baseline_scores,
    fit_baseline,
)
from tsa_kedro.training.metrics import roc_auc


def test_features_of_a_hand_made_order():
    bundle = make_bundle(3, seed=0)
    num = bundle["X_seq_num_cid"]
    num[0] = 0.0
    num[0, -3:, -1] = 1.0  # two previous orders and the current one
    num[0, -3, :2] = [0.2, 0.4]
    num[0, -2, :2] = [0.6, 0.8]
    num[0, -1, :2] = [0.9, 0.1]
    bundle["X_seq_num_ccid"][1] = 0.0
    bundle["X_seq_num_ccid"][1, -1, -1] = 1.0  # no ccid history
    features = baseline_features(bundle)
    n_cat, n_num, n_eng = (
        WIDTHS[k] for k in ("n_cat_features", "n_num_features", "n_eng_features")
    )
    assert features.shape == (3, n_cat + n_num + n_eng + 2 * (1 + 2 * n_num))
    np.testing.assert_array_equal(
        features[:, :n_cat], bundle["X_seq_cat_cid"][:, -1, :]
    )
    np.testing.assert_allclose(features[0, n_cat : n_cat + n_num], [0.9, 0.1])
    np.testing.assert_allclose(
        features[:, n_cat + n_num : n_cat + n_num + n_eng], bundle["X_num"]
    )
    cid = features[0, n_cat + n_num + n_eng :][: 1 + 2 * n_num]
    np.testing.assert_allclose(cid, [2, 0.4, 0.6, 0.6, 0.8], rtol=1e-6)
    ccid = features[1, -(1 + 2 * n_num) :]
    assert ccid[0] == 0 and np.isnan(ccid[1:]).all()


def test_features_are_the_same_in_chunks(monkeypatch):
    bundle = make_bundle(50, seed=2)
    whole = baseline_features(bundle)
    monkeypatch.setattr("tsa_kedro.training.baseline.CHUNK_ROWS", 7)
    np.testing.assert_array_equal(baseline_features(bundle), whole)


def test_fit_on_a_current_order_signal():
    train, vali = make_bundle(400, seed=0), make_bundle(200, seed=1)
    for bundle in (train, vali):  # plant fraud in the current order's X_num
        bundle["X_num"][:, 0] = bundle["Y"] + 0.3 * bundle["X_num"][:, 0]
    settings = BaselineSettings(max_iter=30, max_train_rows=300, random_state=1)
    model = fit_baseline(train, train["Y"].astype(int), settings)
    scores = baseline_scores(model, vali)
    assert scores.shape == (200,) and scores.dtype == np.float32
    assert roc_auc(vali["Y"], scores) > 0.95


def test_unknown_baseline_parameter_is_named():
    with pytest.raises(ValueError, match="max_depthh"):
        BaselineSettings.from_dict({"max_depthh": 3})


def test_match_rates_are_appended_on_request():
    bundle = make_bundle(30, seed=3)
    plain = baseline_features(bundle)
    with_match = baseline_features(bundle, match_rates=True)
    n_cat = bundle["X_seq_cat_cid"].shape[2]
    assert with_match.shape == (30, plain.shape[1] + 2 * n_cat)
    np.testing.assert_array_equal(with_match[:, : plain.shape[1]], plain)
    # Row 0: make every real cid history row share the current order's categoricals.
    bundle["X_seq_cat_cid"][0] = bundle["X_seq_cat_cid"][0, -1]
    real = bundle["X_seq_num_cid"][0, :-1, -1] > 0.5
    rates = baseline_features(bundle, match_rates=True)[0, plain.shape[1] :][:n_cat]
    current = bundle["X_seq_cat_cid"][0, -1]
    expected = np.where((current != 0) & real.any(), 1.0, 0.0)
    np.testing.assert_array_equal(rates, expected)
    settings = BaselineSettings(max_iter=5, history_match_features=True)
    model = fit_baseline(bundle, bundle["Y"].astype(int), settings)
    assert model.n_features_in_ == with_match.shape[1]
    assert baseline_scores(model, bundle, settings).shape == (30,)
