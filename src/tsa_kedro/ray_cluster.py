"""Where the Ray engines (``score.engine`` and ``preprocess.engine``: ``ray``) run.

First that applies: the engine's ``ray.address`` parameter (a cluster, e.g.
``127.0.0.1:6379`` or ``ray://head:10001``); the ``RAY_ADDRESS`` environment variable;
otherwise an embedded Ray instance on this machine with the engine's
``ray.local_num_cpus`` CPUs (null: all cores), which the caller stops after its run. A
Ray instance already started in this process is used as it is. Usage statistics are
off unless ``RAY_USAGE_STATS_ENABLED`` says otherwise; the embedded instance has no
dashboard.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray  # noqa: E402

logger = logging.getLogger(__name__)


def connect(settings: Mapping[str, Any], work: str) -> bool:
    """Start or join Ray (module doc).

    Args:
        settings: The engine's ``ray`` parameters (``address``, ``local_num_cpus``).
        work: What runs there, for the log (``scoring``, ``preprocessing``).

    Returns:
        Whether this call started Ray (the caller then calls ``ray.shutdown``).
    """
    if ray.is_initialized():
        return False
    address = settings.get("address") or os.environ.get("RAY_ADDRESS")
    if address:
        logger.info("%s on the Ray cluster at %s", work, address)
        ray.init(address=address, log_to_driver=True)
    else:
        logger.info("%s on an embedded Ray instance", work)
        ray.init(
            address="local",
            num_cpus=settings.get("local_num_cpus"),
            include_dashboard=False,
        )
    return True
