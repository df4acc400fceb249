"""Which export files this host scores when the score step runs on several hosts.

A SageMaker processing job with ``instance_count: N`` starts the same command on N
hosts and describes them in ``/opt/ml/config/resourceconfig.json``
(``{"current_host": "algo-1", "hosts": ["algo-1", "algo-2"], ...}``). The host at
position ``rank`` of ``hosts`` scores the export files (whole files, by their sorted
keys) at positions ``i`` with ``i % N == rank``, so the hosts' shards are disjoint and
together cover the export. Without that file, or with one host, there is one shard:
every file. ``TSA_RESOURCE_CONFIG`` names another file (tests, other launchers).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

RESOURCE_CONFIG_VARIABLE = "TSA_RESOURCE_CONFIG"
RESOURCE_CONFIG = "/opt/ml/config/resourceconfig.json"


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
        """Whether other hosts score other files (more than one host)."""
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


def current_shard(path: str | os.PathLike | None = None) -> HostShard:
    """This host's shard, from ``path`` (default: ``$TSA_RESOURCE_CONFIG``, else
    SageMaker's ``/opt/ml/config/resourceconfig.json``).

    A missing file means one host. Rejected: a file that is not JSON, whose
    ``hosts`` is not a non-empty list of distinct names, or whose ``current_host``
    is not one of them.

    Raises:
        ShardConfigError: the file is unusable (naming it and the field).
    """
    path = Path(path or os.environ.get(RESOURCE_CONFIG_VARIABLE) or RESOURCE_CONFIG)
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
