"""Synthetic order streams with planted, history-only fraud patterns (no Kedro)."""

from tsa_kedro.synthetic.config import (
    FRAUD_PATTERNS,
    SyntheticConfig,
    SyntheticConfigError,
)
from tsa_kedro.synthetic.generator import (
    SyntheticOrders,
    generate_orders,
    partition_orders,
)
from tsa_kedro.synthetic.widths import (
    PRODUCTION_WIDTH,
    production_width_schema,
    schema_of_width,
)

__all__ = [
    "FRAUD_PATTERNS",
    "PRODUCTION_WIDTH",
    "SyntheticConfig",
    "SyntheticConfigError",
    "SyntheticOrders",
    "generate_orders",
    "partition_orders",
    "production_width_schema",
    "schema_of_width",
]
