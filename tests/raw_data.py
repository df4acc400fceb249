"""Small raw order exports for tests: the base schema and tiny synthetic profiles."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from tsa_kedro.features.raw_orders import normalize_raw_orders
from tsa_kedro.schema import RawSchema
from tsa_kedro.synthetic import SyntheticConfig, generate_orders, partition_orders

CONF = Path(__file__).resolve().parents[1] / "conf"


def base_schema_params() -> dict:
    """The ``raw_schema`` parameters of conf/base."""
    return yaml.safe_load((CONF / "base" / "parameters.yml").read_text())["raw_schema"]


def base_schema() -> RawSchema:
    return RawSchema.from_params(base_schema_params())


def ingest_params() -> dict:
    """The ``ingest`` parameters of conf/base."""
    return yaml.safe_load((CONF / "base" / "parameters_ingest.yml").read_text())[
        "ingest"
    ]


def tiny_config(**overrides) -> SyntheticConfig:
    """Five months (the default ingest windows), 200 customers, no corrupt rows.

    About 3900 orders with positives in every month.
    """
    defaults = {
        "n_customers": 200,
        "ragged_history_rate": 0.0,
        "future_history_rate": 0.0,
    }
    return SyntheticConfig(**{**defaults, **overrides})


@cache
def tiny_orders(**overrides) -> pd.DataFrame:
    """Raw orders of ``tiny_config`` (cached: treat as read-only)."""
    return generate_orders(tiny_config(**overrides), base_schema()).orders


def as_partitions(orders: pd.DataFrame) -> dict[str, Callable[[], pd.DataFrame]]:
    """Monthly partitions as a loaded ``PartitionedDataset`` presents them."""
    parts = partition_orders(orders, base_schema(), "month")
    return {key: (lambda frame=frame: frame.copy()) for key, frame in parts.items()}


PRODUCTION_SAMPLE = CONF.parent / "tests" / "data" / "production_sample"


@cache
def production_sample_chunks(
    rows: int = 360, chunks: int = 3
) -> tuple[RawSchema, tuple[pd.DataFrame, ...]]:
    """The first ``rows`` orders of the checked-in production-format export (every
    column text, numeric codes written ``1`` and ``1.0``, null tokens, empty
    histories), normalised as ingest does and cut into ``chunks`` frames (cached:
    treat as read-only)."""
    params = yaml.safe_load((CONF / "production_sample" / "parameters.yml").read_text())
    schema = RawSchema.from_params(params["raw_schema"])
    path = PRODUCTION_SAMPLE / "orders_2024-01.tsv.gz"
    text = pd.read_csv(
        path,
        sep="\t",
        compression="gzip",
        dtype=str,
        keep_default_na=False,
        na_filter=False,
        nrows=rows,
    )
    frame = normalize_raw_orders(text, schema, path.name, ragged_tolerance=1.0)
    bounds = np.linspace(0, len(frame), chunks + 1).astype(int)
    return schema, tuple(frame.iloc[a:b] for a, b in zip(bounds[:-1], bounds[1:]))
