"""TSAConfig: the presets of the train parameters, validation errors, JSON round trip."""

from __future__ import annotations

import json

import pytest

from tests.model_params import preset_fields
from tsa_kedro.models import TSAConfig

from .conftest import WIDTHS


def _preset(name: str, **fields) -> TSAConfig:
    return TSAConfig.from_dict({**preset_fields(name), **WIDTHS, **fields})


def test_production_preset_holds_the_spec_values():
    config = _preset("production")
    assert (config.dim_embedding, config.n_heads) == (64, 1)
    assert (config.n_layers_order, config.n_layers_feature) == (6, 4)
    assert (config.dim_feedforward, config.dropout) == (256, 0.1)
    assert (config.gate_dim, config.classifier_hidden) == (32, 1024)
    assert config.use_moe is False
    assert config.time_scale == 1e6


def test_small_preset_is_small():
    config = _preset("small")
    assert config.dim_embedding <= 32
    assert config.n_layers_order <= 2 and config.n_layers_feature <= 2


def test_json_round_trip():
    config = _preset("production", use_moe=True, n_experts=8)
    assert TSAConfig.from_json(config.to_json()) == config
    via_dict = TSAConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert via_dict == config


def test_unknown_keys_are_rejected_by_name():
    data = {**_preset("small").to_dict(), "dim_embeding": 32}
    with pytest.raises(ValueError, match="dim_embeding"):
        TSAConfig.from_dict(data)


def test_missing_width_is_named():
    data = _preset("small").to_dict()
    del data["vocab_size"]
    with pytest.raises(ValueError, match="vocab_size"):
        TSAConfig.from_dict(data)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n_cat_features", 0),
        ("n_num_features", -1),
        ("seq_len", 2.5),
        ("n_layers_order", True),
        ("vocab_size", 1),
        ("dropout", 1.0),
        ("dropout", -0.1),
        ("categorical_dropout", 1.0),
        ("categorical_dropout", "0.2"),
        ("numeric_embedding", "cubic"),
        ("periodic_sigma", 0.0),
        ("periodic_frequencies", 0),
        ("feature_mlp_hidden", -1),
        ("feature_mlp_hidden", 1.5),
        ("time_scale", 0.0),
        ("time_scale", float("inf")),
        ("use_moe", "yes"),
    ],
)
def test_invalid_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"TSAConfig.{field}"):
        _preset("small", **{field: value})


def test_heads_must_divide_the_embedding():
    with pytest.raises(ValueError, match="n_heads"):
        _preset("small", dim_embedding=16, n_heads=3)


def test_top_k_above_experts_is_rejected():
    with pytest.raises(ValueError, match="moe_top_k"):
        _preset("small", use_moe=True, n_experts=2, moe_top_k=3)


def test_validate_catches_fields_changed_after_construction():
    config = _preset("small")
    config.gate_dim = 0
    with pytest.raises(ValueError, match="TSAConfig.gate_dim"):
        config.validate()
