"""Nodes of the synthetic stage: a raw order export without any download."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pandas as pd

from tsa_kedro.schema import RawSchema
from tsa_kedro.synthetic import SyntheticConfig, generate_orders, partition_orders
from tsa_kedro.synthetic.config import SyntheticConfigError

logger = logging.getLogger(__name__)


def generate_synthetic_orders(
    raw_schema: Mapping[str, Any],
    profiles: Mapping[str, Mapping[str, Any]],
    profile: str,
) -> dict[str, pd.DataFrame]:
    """Generate the synthetic order stream of one profile as raw partitions.

    Args:
        raw_schema: The ``raw_schema`` parameters (column names and widths).
        profiles: The ``synthetic_profiles`` parameters.
        profile: Name of the profile to generate (``synthetic_profile``).

    Returns:
        ``{partition name: orders}`` in the raw contract, one partition per period.

    Raises:
        SyntheticConfigError: ``profile`` is not in ``profiles`` or its values are
            out of range.
    """
    if profile not in profiles:
        raise SyntheticConfigError(
            f"synthetic_profile {profile!r} is not one of synthetic_profiles "
            f"{sorted(profiles)}"
        )
    config = SyntheticConfig.from_params(profiles[profile])
    schema = RawSchema.from_params(raw_schema)
    result = generate_orders(config, schema)
    partitions = partition_orders(result.orders, schema, config.partition_by)
    fraud = (result.pattern != "legit").mean()
    logger.info(
        "Generated %d synthetic orders (profile %s, %d columns, %.2f%% planted fraud) "
        "in %d partitions",
        len(result.orders),
        profile,
        result.orders.shape[1],
        100 * fraud,
        len(partitions),
    )
    return partitions
