"""This host's share of a SageMaker processing step that runs on several hosts.

A SageMaker processing job with ``instance_count: N`` starts the same command on N
hosts and describes them in ``/opt/ml/config/resourceconfig.json``
(``{"current_host": "algo-1", "hosts": ["algo-1", "algo-2"], ...}``). The host at
position ``rank`` of ``hosts`` takes the items (the score step's export files, the
preprocessing build's raw chunks; by their sorted keys) at positions ``i`` with
``i % N == rank``, so the hosts' shares are disjoint and together cover every item.
Without that file, or with one host, there is one share: every item.
``TSA_RESOURCE_CONFIG`` names another file (tests, other launchers); the job's
description, ``processingjobconfig.json``, is read from the same folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

RESOURCE_CONFIG_VARIABLE = "TSA_RESOURCE_CONFIG"
RESOURCE_CONFIG = "/opt/ml/config/resourceconfig.json"
JOB_CONFIG = "processingjobconfig.json"


class ShardConfigError(ValueError):
    """The host description cannot be used; the message names the file."""


def shard_keys(keys: Iterable[str], rank: int, count: int) -> list[str]:
    """The keys at sorted positions ``i`` with ``i % count == rank``.

    Rejected: ``count`` below 1, ``rank`` outside ``0 .. count - 1``.

    Raises:
        ValueError: ``count`` or ``rank`` out of range.
    """
    if count < 1 or not 0 <= rank < count:
        raise ValueError(f"no shard {rank} of {count} hosts")
    return [key for i, key in enumerate(sorted(keys)) if i % count == rank]


@dataclass(frozen=True)
class HostShard:
    """This host's part of the work: ``rank`` of ``count`` hosts, named ``host``."""

    host: str | None = None
    rank: int = 0
    count: int = 1

    @property
    def sharded(self) -> bool:
        """Whether other hosts take other items (more than one host)."""
        return self.count > 1

    def select(self, keys: Iterable[str]) -> list[str]:
        """This host's keys, sorted (every key when not sharded)."""
        return shard_keys(keys, self.rank, self.count)

    def partition_name(self, index: int) -> str:
        """``batch-00000``; ``<host>-batch-00000`` when sharded, so that the hosts'
        partitions never share a name."""
        name = f"batch-{index:05d}"
        return f"{self.host}-{name}" if self.sharded else name

    def file_name(self, name: str) -> str:
        """``name`` with ``-<host>`` before its suffix when sharded:
        ``score_summary.json`` -> ``score_summary-algo-1.json``."""
        if not self.sharded:
            return name
        path = Path(name)
        return str(path.with_name(f"{path.stem}-{self.host}{path.suffix}"))


def _resource_config(path: str | os.PathLike | None) -> Path:
    return Path(path or os.environ.get(RESOURCE_CONFIG_VARIABLE) or RESOURCE_CONFIG)


def current_shard(path: str | os.PathLike | None = None) -> HostShard:
    """This host's shard, from ``path`` (default: ``$TSA_RESOURCE_CONFIG``, else
    SageMaker's ``/opt/ml/config/resourceconfig.json``).

    A missing file means one host. Rejected: a file that is not JSON, whose
    ``hosts`` is not a non-empty list of distinct names, or whose ``current_host``
    is not one of them.

    Raises:
        ShardConfigError: the file is unusable (naming it and the field).
    """
    path = _resource_config(path)
    if not path.exists():
        return HostShard()
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ShardConfigError(f"cannot read the host list {path}: {error}") from None
    hosts = config.get("hosts") if isinstance(config, dict) else None
    if (
        not isinstance(hosts, list)
        or not hosts
        or not all(isinstance(h, str) and h for h in hosts)
        or len(set(hosts)) != len(hosts)
    ):
        raise ShardConfigError(
            f"{path}: `hosts` must be a non-empty list of distinct names, not {hosts!r}"
        )
    current = config.get("current_host")
    if current not in hosts:
        raise ShardConfigError(
            f"{path}: `current_host` {current!r} is not one of `hosts` {hosts}"
        )
    return HostShard(host=current, rank=hosts.index(current), count=len(hosts))


def current_job(path: str | os.PathLike | None = None) -> str:
    """The processing job this host runs in: ``ProcessingJobArn`` of
    ``processingjobconfig.json`` in the folder of the host list (``path`` as in
    :func:`current_shard`), the same on every host of one job and new on every retry.

    Rejected: a missing or unreadable file, and one without a ``ProcessingJobArn``.

    Raises:
        ShardConfigError: naming the file.
    """
    job_config = _resource_config(path).with_name(JOB_CONFIG)
    try:
        config = json.loads(job_config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ShardConfigError(
            f"cannot read the processing job description {job_config}: {error}"
        ) from None
    arn = config.get("ProcessingJobArn") if isinstance(config, dict) else None
    if not isinstance(arn, str) or not arn:
        raise ShardConfigError(f"{job_config}: no `ProcessingJobArn` in {config!r}")
    return arn
