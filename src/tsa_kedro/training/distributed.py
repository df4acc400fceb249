"""Where training runs: one process, ``torchrun`` ranks, or SageMaker hosts x GPUs.

Three ways in, one way through:

1. Launched by ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
   ``MASTER_PORT`` set): this process is one rank; the process group is initialised from
   the environment.
2. On SageMaker (``/opt/ml/input/config/resourceconfig.json`` present, path overridable):
   the file lists ``hosts`` and ``current_host``. With ``hosts x local GPUs > 1`` this
   process becomes the launcher of its host: it starts one worker per local GPU (or runs
   the only one itself), with the first host of the sorted ``hosts`` list as master and
   the node rank equal to the index of ``current_host`` in that list. SageMaker starts
   the same command on every host, so every host does the same and they meet at the
   master's address.
3. Otherwise this machine is the only host (``localhost``): one worker per local GPU
   when there are several, else a single process on CUDA or the CPU.

:func:`run_distributed` hides the difference: it calls ``fn(context, *args)`` in every
rank and returns, in the calling process, what local rank 0 of this host returned.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

logger = logging.getLogger(__name__)

SAGEMAKER_RESOURCE_CONFIG = "/opt/ml/input/config/resourceconfig.json"
DEFAULT_MASTER_PORT = 29500
_TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class DistributedSetupError(RuntimeError):
    """The host configuration cannot be turned into a process group."""


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Whether this rank writes outputs and checkpoints."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        """Whether there is more than one rank."""
        return self.world_size > 1


@dataclass(frozen=True)
class LaunchPlan:
    """How to start the ranks of a multi-host (or multi-GPU) job on this host."""

    node_rank: int
    n_nodes: int
    procs_per_node: int
    master_addr: str
    master_port: int
    backend: str

    @property
    def world_size(self) -> int:
        """Total number of ranks."""
        return self.n_nodes * self.procs_per_node


@dataclass(frozen=True)
class DistributedSettings:
    """Settings of the ``distributed`` block of the training parameters.

    Attributes:
        resource_config: SageMaker's host configuration file; absent means one host.
        master_addr: Address of the master host; ``None`` takes the first sorted host
            name (SageMaker resolves host names such as ``algo-1`` by DNS).
        master_port: TCP port of the rendezvous on the master host.
        backend: ``"auto"`` (NCCL with CUDA, gloo without), ``"nccl"`` or ``"gloo"``.
        procs_per_host: Workers per host; ``None`` means one per local GPU (one on a
            host without GPU).
        timeout_s: How long ranks wait for each other before failing.
    """

    resource_config: str = SAGEMAKER_RESOURCE_CONFIG
    master_addr: str | None = None
    master_port: int = DEFAULT_MASTER_PORT
    backend: str = "auto"
    procs_per_host: int | None = None
    timeout_s: float = 1800.0

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> DistributedSettings:
        """Build from the parameters block, rejecting unknown keys."""
        values = dict(values or {})
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown distributed parameters: {sorted(unknown)}")
        return cls(**values)


def under_torchrun() -> bool:
    """Whether ``torchrun`` (or an equivalent launcher) started this process."""
    return all(name in os.environ for name in _TORCHRUN_VARIABLES)


def read_resource_config(path: str | os.PathLike) -> dict[str, Any] | None:
    """SageMaker's host configuration, or ``None`` when the file does not exist.

    Raises:
        DistributedSetupError: If the file exists but is not JSON with a ``hosts`` list
            that contains ``current_host``.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        config = json.loads(path.read_text())
        hosts, current = config["hosts"], config["current_host"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DistributedSetupError(
            f"{path}: not a SageMaker resource config with 'hosts' and 'current_host' "
            f"({error})"
        ) from error
    if not isinstance(hosts, list) or current not in hosts:
        raise DistributedSetupError(
            f"{path}: current_host {current!r} is not one of hosts {hosts!r}"
        )
    return config


def resolve_backend(backend: str) -> str:
    """``auto`` → NCCL when CUDA is present, gloo otherwise."""
    if backend == "auto":
        return "nccl" if torch.cuda.is_available() else "gloo"
    if backend not in ("nccl", "gloo"):
        raise ValueError(f"distributed backend must be auto, nccl or gloo: {backend!r}")
    return backend


def plan_launch(settings: DistributedSettings) -> LaunchPlan | None:
    """The launch plan for this host, or ``None`` when one process is enough.

    ``None`` also when already under ``torchrun``: the ranks exist already.
    """
    if under_torchrun():
        return None
    config = read_resource_config(settings.resource_config)
    gpus = torch.cuda.device_count()
    procs = settings.procs_per_host or max(gpus, 1)
    hosts = sorted(config["hosts"]) if config else ["localhost"]
    current = config["current_host"] if config else "localhost"
    if len(hosts) * procs <= 1:
        return None
    plan = LaunchPlan(
        node_rank=hosts.index(current),
        n_nodes=len(hosts),
        procs_per_node=procs,
        master_addr=settings.master_addr or hosts[0],
        master_port=settings.master_port,
        backend=resolve_backend(settings.backend),
    )
    logger.info(
        "Distributed launch: host %s is node %d of %d, %d process(es) per host, "
        "master %s:%d, backend %s",
        current,
        plan.node_rank,
        plan.n_nodes,
        plan.procs_per_node,
        plan.master_addr,
        plan.master_port,
        plan.backend,
    )
    return plan


def _device_for(local_rank: int) -> torch.device:
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


@contextmanager
def process_group(backend: str, timeout_s: float) -> Iterator[DistContext]:
    """Join the process group described by the torchrun variables; leave it after."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    device = _device_for(local_rank)
    dist.init_process_group(
        backend=resolve_backend(backend),
        init_method="env://",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=timeout_s),
    )
    try:
        yield DistContext(
            rank=rank, world_size=world, local_rank=local_rank, device=device
        )
        # Leave together: rank 0 hosts the rendezvous store, and tearing the group
        # down while another rank still uses it can abort a process (seen as
        # "terminate called without an active exception" in spawned gloo workers).
        # Not after an error: the other ranks may never arrive.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _rank_environment(plan: LaunchPlan, local_rank: int) -> dict[str, str]:
    return {
        "RANK": str(plan.node_rank * plan.procs_per_node + local_rank),
        "WORLD_SIZE": str(plan.world_size),
        "LOCAL_RANK": str(local_rank),
        "LOCAL_WORLD_SIZE": str(plan.procs_per_node),
        "GROUP_RANK": str(plan.node_rank),
        "MASTER_ADDR": plan.master_addr,
        "MASTER_PORT": str(plan.master_port),
    }


@dataclass(frozen=True)
class _HostJob:
    """What every rank launched by this host runs, and where rank 0's result goes."""

    plan: LaunchPlan
    timeout_s: float
    result_path: str
    fn: Callable[..., Any]
    args: tuple


def _worker(local_rank: int, job: _HostJob) -> None:
    """Body of one spawned (or in-process) rank on a launching host."""
    os.environ.update(_rank_environment(job.plan, local_rank))
    with process_group(job.plan.backend, job.timeout_s) as context:
        result = job.fn(context, *job.args)
    if local_rank == 0:
        torch.save(result, job.result_path)


def run_distributed(
    fn: Callable[..., Any], args: tuple, settings: DistributedSettings
) -> Any:
    """Run ``fn(context, *args)`` on every rank this process is responsible for.

    Returns, in the calling process, the value that local rank 0 of this host returned
    (``fn`` is expected to return the same value on every rank, for example by
    broadcasting rank 0's result). Spawned workers hand it back through a temporary
    ``torch.save`` file, so it must be made of tensors, numbers, strings, lists and
    dicts (it is loaded with ``weights_only=True``).
    """
    if under_torchrun():
        with process_group(settings.backend, settings.timeout_s) as context:
            return fn(context, *args)
    plan = plan_launch(settings)
    if plan is None:
        return fn(DistContext(device=_device_for(0)), *args)
    with tempfile.TemporaryDirectory(prefix="tsa-dist-") as tmp:
        result_path = os.path.join(tmp, "result.pt")
        job = _HostJob(plan, settings.timeout_s, result_path, fn, args)
        saved = {name: os.environ.get(name) for name in _rank_environment(plan, 0)}
        try:
            if plan.procs_per_node == 1:
                _worker(0, job)
            else:
                mp.start_processes(
                    _worker,
                    args=(job,),
                    nprocs=plan.procs_per_node,
                    join=True,
                    start_method="spawn",
                )
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        return torch.load(result_path, weights_only=True)


def broadcast_from_main(context: DistContext, value: Any) -> Any:
    """Rank 0's ``value`` on every rank (the value itself without distribution)."""
    if not context.is_distributed:
        return value
    holder = [value if context.is_main else None]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def gather_to_all(context: DistContext, value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank."""
    if not context.is_distributed:
        return [value]
    values: list[Any] = [None] * context.world_size
    dist.all_gather_object(values, value)
    return values


def barrier(context: DistContext) -> None:
    """Wait for every rank (no-op without distribution)."""
    if context.is_distributed:
        dist.barrier()


def is_main_process(settings: DistributedSettings) -> bool:
    """Whether this process (before or after :func:`run_distributed`) holds rank 0:
    rank 0 under ``torchrun``, the first host's launcher on SageMaker, else true."""
    if under_torchrun():
        return int(os.environ["RANK"]) == 0
    plan = plan_launch(settings)
    return plan is None or plan.node_rank == 0
