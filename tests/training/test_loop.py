"""The training loop on CPU with the stand-in model: learning, early stopping,
checkpoints, resume after a killed process, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from tests.training.standin import TinyTSA, make_bundle
from tsa_kedro.features.contract import TensorContractError
from tsa_kedro.training.baseline import BaselineSettings, baseline_scores, fit_baseline
from tsa_kedro.training.checkpoint import CheckpointError, CheckpointStore
from tsa_kedro.training.loop import Precision, TrainingSettings, fit
from tsa_kedro.training.metrics import roc_auc

ROOT = Path(__file__).resolve().parents[2]
FAST = {"batch_size": 32, "lr": 1e-2, "max_lr": 1e-1, "progress": False, "seed": 3}


class ConstantModel(nn.Module):
    """Same logits for every row: validation AUC is always 0.5."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(2))

    def forward(
        self, x_seq_cat_cid, x_seq_num_cid, x_seq_cat_ccid, x_seq_num_ccid, x_num
    ):
        return self.bias.expand(x_num.shape[0], 2)


@pytest.fixture(scope="module")
def data():
    return make_bundle(600, seed=0), make_bundle(300, seed=1)


def test_learns_the_history_signal_that_the_baseline_cannot_see(data):
    train, vali = data
    result = fit(TinyTSA, train, vali, TrainingSettings(epochs=5, patience=5, **FAST))
    assert result.best_metric > 0.85
    assert result.best_metric == max(h["vali_roc_auc"] for h in result.history)
    assert result.validation_scores.shape == (300,)
    assert roc_auc(vali["Y"], result.validation_scores) == pytest.approx(
        result.best_metric
    )
    model = fit_baseline(train, train["Y"].astype(int), BaselineSettings(max_iter=50))
    assert roc_auc(vali["Y"], baseline_scores(model, vali)) < result.best_metric - 0.2


def test_early_stopping_keeps_the_best_weights(data, tmp_path):
    train, vali = data
    settings = TrainingSettings(
        epochs=10, patience=2, checkpoint_dir=str(tmp_path), **FAST
    )
    result = fit(ConstantModel, train, vali, settings)
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert result.stopped_early and result.best_epoch == 1
    state = CheckpointStore(str(tmp_path)).load()
    assert state["completed"] and state["epoch"] == 3
    assert torch.equal(result.weights["bias"], state["best_weights"]["bias"])
    assert not torch.equal(result.weights["bias"], state["model"]["bias"])


def test_finished_checkpoint_is_not_resumed(data, tmp_path):
    train, vali = data
    settings = TrainingSettings(epochs=2, checkpoint_dir=str(tmp_path), **FAST)
    first = fit(TinyTSA, train, vali, settings)
    again = fit(TinyTSA, train, vali, settings)
    assert again.resumed_from_epoch is None
    assert [h["epoch"] for h in again.history] == [1, 2]
    for name, tensor in first.weights.items():
        assert torch.equal(tensor, again.weights[name])


def test_unfinished_checkpoint_of_another_run_is_refused(data, tmp_path):
    train, vali = data
    settings = TrainingSettings(epochs=1, checkpoint_dir=str(tmp_path), **FAST)
    fit(TinyTSA, train, vali, settings)
    state = CheckpointStore(str(tmp_path)).load()
    state["completed"] = False
    CheckpointStore(str(tmp_path)).save(state)
    changed = TrainingSettings(
        epochs=1, checkpoint_dir=str(tmp_path), **{**FAST, "lr": 5e-3}
    )
    with pytest.raises(CheckpointError, match="belongs to an unfinished run"):
        fit(TinyTSA, train, vali, changed)
    same_size = make_bundle(600, seed=9)
    with pytest.raises(CheckpointError, match="belongs to an unfinished run"):
        fit(TinyTSA, same_size, vali, settings)


def test_corrupt_checkpoint_stops_training_and_names_the_file(data, tmp_path):
    train, vali = data
    (tmp_path / "training_state.pt").write_bytes(b"not a checkpoint")
    settings = TrainingSettings(epochs=1, checkpoint_dir=str(tmp_path), **FAST)
    with pytest.raises(CheckpointError, match=str(tmp_path / "training_state.pt")):
        fit(TinyTSA, train, vali, settings)


def test_empty_training_split_is_named(data):
    train, vali = data
    empty = {key: value[:0] for key, value in train.items()}
    with pytest.raises(
        TensorContractError, match=r"train\.model_input: the split is empty"
    ):
        fit(TinyTSA, empty, vali, TrainingSettings(epochs=1, **FAST))


def test_single_class_validation_set_is_named(data):
    train, vali = data
    one_class = {**vali, "Y": vali["Y"] * 0}
    with pytest.raises(
        TensorContractError, match=r"vali\.model_input: all 300 labels are 0"
    ):
        fit(TinyTSA, train, one_class, TrainingSettings(epochs=1, **FAST))


def test_settings_reject_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match=r"unknown training parameters: \['epoch'\]"):
        TrainingSettings.from_dict({"epoch": 3})
    with pytest.raises(ValueError, match="patience must be > 0"):
        TrainingSettings.from_dict({"patience": 0})
    with pytest.raises(ValueError, match="max_lr"):
        TrainingSettings.from_dict({"lr": 1e-2, "max_lr": 1e-3})


def test_float32_on_cpu():
    precision = Precision.for_device(torch.device("cpu"))
    assert precision.dtype is None and not precision.use_scaler


@pytest.mark.parametrize(
    ("bf16", "dtype", "scaler"),
    [(True, torch.bfloat16, False), (False, torch.float16, True)],
)
def test_mixed_precision_on_cuda(monkeypatch, bf16, dtype, scaler):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16)
    precision = Precision.for_device(torch.device("cuda", 0))
    assert precision.dtype == dtype and precision.use_scaler == scaler


def _run_training(
    out: Path, checkpoints: Path, *extra: str
) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    command = [
        sys.executable,
        "-m",
        "tests.training.run_training",
        "--out",
        str(out),
        "--checkpoint-dir",
        str(checkpoints),
        "--epochs",
        "3",
        *extra,
    ]
    return subprocess.run(
        command, check=False, cwd=ROOT, env=env, capture_output=True, text=True
    )


@pytest.mark.slow
def test_killed_run_resumes_at_epoch_two_and_ends_like_an_uninterrupted_run(tmp_path):
    straight = _run_training(tmp_path / "straight", tmp_path / "ckpt-straight")
    assert straight.returncode == 0, straight.stderr

    killed = _run_training(tmp_path / "resumed", tmp_path / "ckpt", "--kill-after", "1")
    assert killed.returncode == -9, killed.stderr  # SIGKILL right after epoch 1
    assert sorted(p.name for p in (tmp_path / "resumed").iterdir()) == ["rank0.epoch1"]
    assert CheckpointStore(str(tmp_path / "ckpt")).load()["epoch"] == 1

    rerun = _run_training(tmp_path / "resumed", tmp_path / "ckpt")
    assert rerun.returncode == 0, rerun.stderr
    assert "continuing with epoch 2" in rerun.stderr
    summary = json.loads((tmp_path / "resumed" / "result.json").read_text())
    expected = json.loads((tmp_path / "straight" / "result.json").read_text())
    assert summary["resumed_from_epoch"] == 2

    def without_timing(history):
        return [{k: v for k, v in h.items() if k != "seconds"} for h in history]

    assert without_timing(summary["history"]) == without_timing(expected["history"])
    resumed = load_file(tmp_path / "resumed" / "weights.safetensors")
    uninterrupted = load_file(tmp_path / "straight" / "weights.safetensors")
    assert resumed.keys() == uninterrupted.keys()
    for name, tensor in uninterrupted.items():
        assert torch.equal(resumed[name], tensor), name
    last = CheckpointStore(str(tmp_path / "ckpt")).load()
    reference = CheckpointStore(str(tmp_path / "ckpt-straight")).load()
    for name, tensor in reference["model"].items():
        assert torch.equal(last["model"][name], tensor), name


def test_compile_on_gpu_leaves_cpu_training_unchanged(data):
    """``compile_on_gpu`` applies to CUDA devices only: on the CPU both settings
    train the same uncompiled model, step for step."""
    train, vali = data
    runs = [
        fit(
            TinyTSA,
            train,
            vali,
            TrainingSettings(epochs=1, compile_on_gpu=flag, **FAST),
        )
        for flag in (True, False)
    ]
    assert not any(key.startswith("_orig_mod") for key in runs[0].weights)
    for key, value in runs[1].weights.items():
        torch.testing.assert_close(runs[0].weights[key], value, rtol=0, atol=0)
    assert runs[0].history[0]["train_loss"] == runs[1].history[0]["train_loss"]
