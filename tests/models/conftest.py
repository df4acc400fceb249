"""Tiny configs and random but well-formed input batches for the model tests."""

from __future__ import annotations

import pytest
import torch

from tsa_kedro.models import TSAConfig

WIDTHS = {
    "n_cat_features": 5,
    "n_num_features": 3,
    "n_eng_features": 4,
    "vocab_size": 40,
    "seq_len": 7,
}


def tiny_config(**overrides) -> TSAConfig:
    """A tiny model of the plain architecture with dropout 0, unless overridden."""
    fields = {
        **WIDTHS,
        "dim_embedding": 8,
        "n_heads": 1,
        "n_layers_order": 2,
        "n_layers_feature": 2,
        "dim_feedforward": 16,
        "gate_dim": 8,
        "gate_feedforward": 16,
        "classifier_hidden": 16,
        "dropout": 0.0,
    }
    return TSAConfig(**{**fields, **overrides})


def make_sequence(
    config: TSAConfig, lengths: list[int], generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L, n_cat) indices and (B, L, n_num + 2) numericals, left-padded.

    ``lengths[b]`` real rows (the current order included) at the end of row b; padded
    rows are all zero, deltas grow towards the past (days, in seconds).
    """
    B, L = len(lengths), config.seq_len
    cat = torch.randint(
        1, config.vocab_size, (B, L, config.n_cat_features), generator=generator
    )
    num = torch.rand(B, L, config.n_num_features + 2, generator=generator)
    steps_back = (L - 1 - torch.arange(L)).float()  # (L,)
    real = steps_back[None] < torch.tensor(lengths)[:, None]  # (B, L)
    jitter = torch.rand(B, L, generator=generator)
    num[..., -2] = (steps_back[None] + jitter) * 86_400.0
    num[:, -1, -2] = 0.0
    num[..., -1] = real.float()
    cat = cat * real[..., None]
    num = num * real[..., None]
    return cat, num


def make_batch(
    config: TSAConfig,
    cid_lengths: list[int],
    ccid_lengths: list[int],
    seed: int = 0,
) -> tuple[torch.Tensor, ...]:
    """The five model inputs for len(cid_lengths) orders."""
    g = torch.Generator().manual_seed(seed)
    cat_cid, num_cid = make_sequence(config, cid_lengths, g)
    cat_ccid, num_ccid = make_sequence(config, ccid_lengths, g)
    x_num = torch.rand(len(cid_lengths), config.n_eng_features, generator=g)
    return cat_cid, num_cid, cat_ccid, num_ccid, x_num


@pytest.fixture(
    params=[
        {},
        {"time_delta_feature": True},
        {
            "time_delta_feature": True,
            "numeric_embedding": "periodic",
            "feature_mlp_hidden": 8,
            "history_match_features": True,
        },
    ],
    ids=["plain", "delta_feature", "small_preset_options"],
)
def config(request) -> TSAConfig:
    return tiny_config(**request.param)
