"""Resuming an unfinished training run: changes of ``epochs`` and ``patience`` are
allowed, changes of anything that defines the model or the data order are refused with
a message that names them."""

from __future__ import annotations

import pytest

from tests.training.standin import TinyTSA, make_bundle
from tsa_kedro.training.checkpoint import (
    CHECKPOINT_NAME,
    CheckpointError,
    CheckpointStore,
)
from tsa_kedro.training.loop import TrainingSettings, fit

FAST = {"batch_size": 32, "lr": 1e-2, "max_lr": 1e-1, "progress": False, "seed": 3}
MODEL = {"model_config": {"dim": 8}}


class Interrupt(Exception):
    """Stands for a process killed after the checkpoint of an epoch was written."""


def _stop_after(last_epoch: int):
    def on_epoch_end(epoch: int, record: dict) -> None:
        if epoch == last_epoch:
            raise Interrupt

    return on_epoch_end


@pytest.fixture(scope="module")
def data():
    return make_bundle(200, seed=0), make_bundle(100, seed=1)


@pytest.fixture(scope="module")
def interrupted(data, tmp_path_factory):
    """The checkpoint bytes of a 4-epoch run stopped after epoch 2, and its history."""
    folder = tmp_path_factory.mktemp("interrupted")
    settings = TrainingSettings(epochs=4, checkpoint_dir=str(folder), **FAST)
    with pytest.raises(Interrupt):
        fit(TinyTSA, *data, settings, run_identity=MODEL, on_epoch_end=_stop_after(2))
    state = CheckpointStore(str(folder)).load()
    assert state["epoch"] == 2 and not state["completed"]
    return (folder / CHECKPOINT_NAME).read_bytes(), state["history"]


def _checkpoint_from(interrupted, tmp_path) -> str:
    (tmp_path / CHECKPOINT_NAME).write_bytes(interrupted[0])
    return str(tmp_path)


@pytest.mark.parametrize("epochs", [3, 5])
def test_a_different_epoch_count_resumes(data, interrupted, tmp_path, epochs):
    folder = _checkpoint_from(interrupted, tmp_path)
    settings = TrainingSettings(epochs=epochs, checkpoint_dir=folder, **FAST)
    result = fit(TinyTSA, *data, settings, run_identity=MODEL)
    assert result.resumed_from_epoch == 3
    assert [h["epoch"] for h in result.history] == list(range(1, epochs + 1))
    assert result.history[:2] == interrupted[1]
    assert result.history[-1]["lr"] < result.history[1]["lr"]  # annealed to the end
    state = CheckpointStore(folder).load()
    assert state["completed"] and state["epoch"] == epochs
    assert state["identity"]["settings"]["epochs"] == epochs


def test_fewer_epochs_than_already_trained_end_the_run_at_once(
    data, interrupted, tmp_path
):
    folder = _checkpoint_from(interrupted, tmp_path)
    settings = TrainingSettings(epochs=1, checkpoint_dir=folder, **FAST)
    result = fit(TinyTSA, *data, settings, run_identity=MODEL)
    assert result.history == interrupted[1]
    assert CheckpointStore(folder).load()["completed"]


def test_a_smaller_patience_applies_to_the_saved_counter(data, tmp_path):
    settings = TrainingSettings(epochs=6, checkpoint_dir=str(tmp_path), **FAST)
    with pytest.raises(Interrupt):
        fit(TinyTSA, *data, settings, run_identity=MODEL, on_epoch_end=_stop_after(1))
    store = CheckpointStore(str(tmp_path))
    state = store.load()
    state["epochs_without_improvement"] = 2  # as if two epochs had not improved
    store.save(state)
    patient = TrainingSettings(
        epochs=6, patience=2, checkpoint_dir=str(tmp_path), **FAST
    )
    result = fit(TinyTSA, *data, patient, run_identity=MODEL)
    assert result.stopped_early
    assert [h["epoch"] for h in result.history] == [1]
    assert store.load()["completed"]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"lr": 5e-3}, "training parameter lr (checkpoint 0.01, now 0.005)"),
        ({"batch_size": 16}, "training parameter batch_size (checkpoint 32, now 16)"),
        ({"seed": 4}, "training parameter seed (checkpoint 3, now 4)"),
    ],
)
def test_a_changed_training_parameter_is_refused_and_named(
    data, interrupted, tmp_path, change, named
):
    folder = _checkpoint_from(interrupted, tmp_path)
    settings = TrainingSettings(epochs=6, checkpoint_dir=folder, **{**FAST, **change})
    with pytest.raises(CheckpointError) as caught:
        fit(TinyTSA, *data, settings, run_identity=MODEL)
    assert str(caught.value) == (
        f"checkpoint {tmp_path / CHECKPOINT_NAME} belongs to an unfinished run with "
        f"other settings: {named}. Delete it (or set resume: false) to train afresh, "
        "or restore those settings; only epochs and patience may change when "
        "resuming."
    )
    assert (tmp_path / CHECKPOINT_NAME).read_bytes() == interrupted[0]


def test_a_changed_model_or_data_is_refused_and_named(data, interrupted, tmp_path):
    folder = _checkpoint_from(interrupted, tmp_path)
    settings = TrainingSettings(epochs=4, checkpoint_dir=folder, **FAST)
    with pytest.raises(
        CheckpointError, match=r"run setting model_config\.dim \(checkpoint 8, now 16\)"
    ):
        fit(TinyTSA, *data, settings, run_identity={"model_config": {"dim": 16}})
    other_rows = make_bundle(200, seed=9)
    with pytest.raises(
        CheckpointError,
        match=r"content \(labels, order ids\) of the training data \(changed\)\.",
    ):
        fit(TinyTSA, other_rows, data[1], settings, run_identity=MODEL)
    assert (tmp_path / CHECKPOINT_NAME).read_bytes() == interrupted[0]
