"""Distribution: launch plans from SageMaker host configurations, real ``torchrun`` with
gloo, two simulated SageMaker hosts on 127.0.0.1, spawned workers on one host."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import free_port
from tsa_kedro.training.checkpoint import CheckpointStore
from tsa_kedro.training.distributed import (
    DistributedSettings,
    DistributedSetupError,
    is_main_process,
    plan_launch,
    read_resource_config,
)

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture(autouse=True)
def outside_torchrun(monkeypatch):
    for name in TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def _resource_config(folder: Path, current: str, hosts: list[str]) -> str:
    path = folder / f"resourceconfig-{current}.json"
    path.write_text(
        json.dumps(
            {"current_host": current, "hosts": hosts, "network_interface_name": "eth0"}
        )
    )
    return str(path)


def test_no_resource_config_and_no_gpu_means_one_process(tmp_path):
    settings = DistributedSettings(resource_config=str(tmp_path / "absent.json"))
    assert plan_launch(settings) is None
    assert is_main_process(settings)


def test_single_host_without_gpu_runs_in_process(tmp_path):
    path = _resource_config(tmp_path, "algo-1", ["algo-1"])
    assert plan_launch(DistributedSettings(resource_config=path)) is None


def test_plan_for_the_second_of_two_gpu_hosts(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    path = _resource_config(
        tmp_path, "algo-1", ["algo-2", "algo-1"]
    )  # unsorted on purpose
    settings = DistributedSettings(resource_config=path, master_port=7777)
    plan = plan_launch(settings)
    assert plan.node_rank == 0 and plan.n_nodes == 2
    assert plan.procs_per_node == 8 and plan.world_size == 16
    assert plan.master_addr == "algo-1" and plan.master_port == 7777
    assert plan.backend == "nccl"
    other = plan_launch(
        DistributedSettings(
            resource_config=_resource_config(tmp_path, "algo-2", ["algo-1", "algo-2"])
        )
    )
    assert other.node_rank == 1 and other.master_addr == "algo-1"
    assert not is_main_process(
        DistributedSettings(
            resource_config=_resource_config(tmp_path, "algo-2", ["algo-1", "algo-2"])
        )
    )


def test_torchrun_variables_take_precedence(tmp_path, monkeypatch):
    path = _resource_config(tmp_path, "algo-1", ["algo-1", "algo-2"])
    for name, value in zip(TORCHRUN_VARIABLES, ("1", "2", "1", "127.0.0.1", "29500")):
        monkeypatch.setenv(name, value)
    settings = DistributedSettings(resource_config=path)
    assert plan_launch(settings) is None
    assert not is_main_process(settings)


def test_bad_resource_config_names_the_file(tmp_path):
    path = tmp_path / "resourceconfig.json"
    path.write_text('{"hosts": ["algo-1"]}')
    with pytest.raises(
        DistributedSetupError, match=r"resourceconfig\.json: not a SageMaker"
    ):
        read_resource_config(path)
    path.write_text('{"hosts": ["algo-1"], "current_host": "algo-9"}')
    with pytest.raises(DistributedSetupError, match="algo-9"):
        read_resource_config(path)


def test_unknown_distributed_parameter_is_named():
    with pytest.raises(ValueError, match="master_host"):
        DistributedSettings.from_dict({"master_host": "x"})


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARIABLES}
    env["PYTHONPATH"] = f"{ROOT / 'src'}{os.pathsep}{ROOT}"
    return env


def _script(out: Path, checkpoints: Path, *extra: str, epochs: int = 1) -> list[str]:
    return [
        "-m",
        "tests.training.run_training",
        "--out",
        str(out),
        "--checkpoint-dir",
        str(checkpoints),
        "--epochs",
        str(epochs),
        "--rows",
        "400",
        *extra,
    ]


def _check_outputs(
    out: Path, checkpoints: Path, ranks: int, here: int, epochs: int = 1
) -> None:
    """Rank 0's outputs in ``out``; ``here`` ranks ran in this folder's process tree."""
    markers = sorted(p.name for p in out.iterdir() if p.name.startswith("rank"))
    assert markers == sorted(
        f"rank{r}.epoch{e}" for r in range(here) for e in range(1, epochs + 1)
    )
    summary = json.loads((out / "result.json").read_text())
    assert 1 <= summary["best_epoch"] <= epochs
    assert 0.5 < summary["best_metric"] <= 1.0
    assert all(record["train_loss"] > 0 for record in summary["history"])
    weights = load_file(out / "weights.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())
    assert os.listdir(checkpoints) == ["training_state.pt"]
    state = CheckpointStore(str(checkpoints)).load()
    assert state["world_size"] == ranks and len(state["rng"]) == ranks
    for name, tensor in weights.items():
        assert torch.equal(state["best_weights"][name], tensor)


@pytest.mark.slow
def test_torchrun_two_processes_with_gloo(tmp_path):
    """The real TSA model, with no ccid history anywhere: its ccid stack is skipped and
    gets no gradient, which DDP must tolerate. Three epochs: the TSA's randomly
    initialised feature biases need more than one pass over 400 rows to learn the
    planted label."""
    out, checkpoints = tmp_path / "out", tmp_path / "ckpt"
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [
        str(torchrun),
        "--nproc_per_node=2",
        f"--master_port={free_port()}",
        *_script(out, checkpoints, "--tsa-without-ccid-history", epochs=3),
    ]
    result = subprocess.run(
        command,
        check=False,
        cwd=ROOT,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    _check_outputs(out, checkpoints, ranks=2, here=2, epochs=3)


@pytest.mark.slow
def test_two_sagemaker_hosts_on_loopback(tmp_path):
    hosts = ["algo-2", "algo-1"]
    checkpoints = tmp_path / "ckpt"
    port = str(free_port())
    processes = {
        host: subprocess.Popen(
            [
                sys.executable,
                *_script(tmp_path / host, checkpoints),
                "--resource-config",
                _resource_config(tmp_path, host, hosts),
                "--master-addr",
                "127.0.0.1",
                "--master-port",
                port,
            ],
            cwd=ROOT,
            env=_environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for host in hosts
    }
    outcomes = {host: proc.communicate(timeout=600) for host, proc in processes.items()}
    for host, proc in processes.items():
        assert proc.returncode == 0, outcomes[host][1][-4000:]
    assert "host algo-2 is node 1 of 2" in outcomes["algo-2"][1]
    # algo-1 sorts first: it is the master, holds rank 0 and alone writes outputs.
    _check_outputs(tmp_path / "algo-1", checkpoints, ranks=2, here=1)
    assert sorted(p.name for p in (tmp_path / "algo-2").iterdir()) == ["rank1.epoch1"]


@pytest.mark.slow
def test_spawned_workers_on_one_host(tmp_path):
    out, checkpoints = tmp_path / "out", tmp_path / "ckpt"
    command = [
        sys.executable,
        *_script(out, checkpoints),
        "--resource-config",
        _resource_config(tmp_path, "algo-1", ["algo-1"]),
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(free_port()),
        "--procs-per-host",
        "2",
    ]
    result = subprocess.run(
        command,
        check=False,
        cwd=ROOT,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    _check_outputs(out, checkpoints, ranks=2, here=2)
