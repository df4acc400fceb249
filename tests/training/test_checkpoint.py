"""Checkpoint store: round trip, atomic writes, corrupt files, RNG states, S3."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from tsa_kedro.training.checkpoint import (
    REQUIRED_FIELDS,
    CheckpointError,
    CheckpointStore,
    capture_rng_state,
    restore_rng_state,
)


def _state(epoch: int) -> dict:
    state = {field: 0 for field in REQUIRED_FIELDS}
    state.update(epoch=epoch, model={"w": torch.full((3,), float(epoch))}, rng=[])
    return state


def test_round_trip(tmp_path):
    store = CheckpointStore(str(tmp_path / "checkpoints"))
    assert store.load() is None
    store.save(_state(2))
    loaded = store.load()
    assert loaded["epoch"] == 2
    assert torch.equal(loaded["model"]["w"], torch.full((3,), 2.0))
    assert os.listdir(tmp_path / "checkpoints") == ["training_state.pt"]


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    store = CheckpointStore(str(tmp_path))
    store.save(_state(1))

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        store.save(_state(2))
    monkeypatch.undo()
    assert store.load()["epoch"] == 1
    assert os.listdir(tmp_path) == ["training_state.pt"]  # no temporary file left


def test_corrupt_checkpoint_names_the_file(tmp_path):
    store = CheckpointStore(str(tmp_path))
    store.save(_state(1))
    payload = (tmp_path / "training_state.pt").read_bytes()
    (tmp_path / "training_state.pt").write_bytes(payload[: len(payload) // 2])
    with pytest.raises(CheckpointError, match=r"training_state\.pt is corrupt"):
        store.load()


def test_foreign_file_is_not_a_checkpoint(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "training_state.pt")
    with pytest.raises(CheckpointError, match="is not a training checkpoint"):
        CheckpointStore(str(tmp_path)).load()


def test_rng_states_survive_a_checkpoint(tmp_path):
    store = CheckpointStore(str(tmp_path))
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    state = _state(1)
    state["rng"] = [capture_rng_state()]
    store.save(state)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    restore_rng_state(store.load()["rng"][0])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_checkpoint_on_s3(s3_bucket):
    store = CheckpointStore(f"s3://{s3_bucket}/06_models/checkpoints")
    assert store.load() is None
    store.save(_state(3))
    assert store.url == f"s3://{s3_bucket}/06_models/checkpoints/training_state.pt"
    assert store.load()["epoch"] == 3
