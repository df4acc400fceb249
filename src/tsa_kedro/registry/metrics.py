"""Nested metric mappings flattened into MLflow-safe names."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

# MLflow metric, parameter and tag names: alphanumerics, _ - . space : /
_UNSAFE = re.compile(r"[^\w.\- :/]")


def metric_name(path: str) -> str:
    """``tsa.operating_points.top_1%.recall`` to ``tsa.operating_points.top_1pct.recall``."""
    return _UNSAFE.sub("_", path.replace("%", "pct"))


def flatten_numbers(tree: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Every finite number in a nested mapping, keyed by its (MLflow-safe) dotted path.

    Booleans, text, lists, NaN and infinities are left out.
    """
    flat: dict[str, float] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_numbers(value, f"{path}."))
        elif (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(value)
        ):
            flat[metric_name(path)] = float(value)
    return flat
