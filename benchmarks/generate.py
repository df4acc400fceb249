"""Synthetic generator throughput at the default and production-width profiles.

Run: ``python -m benchmarks.generate [--prod-customers N] [--default-customers N]``.

For each profile it times the whole export (simulate, aggregates, histories, Parquet
partitions written to a temporary folder) and reports orders per second. The baseline,
measured in the same run on the same tokens, is the obvious per-order way of building
a history column (a Python ``join`` over each order's previous orders); the ratio is the
vectorised builder's speed-up per column (its windows are built once per id type and
shared by all of that id type's columns; their one-off cost is reported beside).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import yaml

from tsa_kedro.schema import RawSchema
from tsa_kedro.synthetic import (
    SyntheticConfig,
    generate_orders,
    partition_orders,
    production_width_schema,
)
from tsa_kedro.synthetic.text import HistoryWindows

CONF = Path(__file__).resolve().parents[1] / "conf" / "base"


def _profiles() -> dict:
    return yaml.safe_load((CONF / "parameters_synthetic.yml").read_text())[
        "synthetic_profiles"
    ]


def _schema() -> RawSchema:
    params = yaml.safe_load((CONF / "parameters.yml").read_text())["raw_schema"]
    return RawSchema.from_params(params)


def time_export(config: SyntheticConfig, schema: RawSchema) -> dict:
    """Generate and write one profile; orders per second over the whole export."""
    start = time.perf_counter()
    orders = generate_orders(config, schema).orders
    generated = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        for name, part in partition_orders(orders, schema, config.partition_by).items():
            part.to_parquet(Path(folder) / f"{name}.parquet")
        size = sum(p.stat().st_size for p in Path(folder).iterdir())
    written = time.perf_counter() - start
    return {
        "orders": len(orders),
        "columns": orders.shape[1],
        "generate_s": round(generated - start, 2),
        "total_s": round(written, 2),
        "orders_per_s": round(len(orders) / written, 1),
        "parquet_mb": round(size / 2**20, 1),
    }


def _best_of(func, repeats: int):
    """Result of ``func`` and its fastest wall time over ``repeats`` calls."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = func()
        best = min(best, time.perf_counter() - start)
    return result, best


def time_histories(
    n_orders: int, n_ids: int, history_length: int, repeats: int = 3, seed: int = 0
) -> dict:
    """Vectorised history builder against a per-order Python join, same tokens."""
    rng = np.random.default_rng(seed)
    ids = np.sort(rng.integers(0, n_ids, n_orders))[rng.permutation(n_orders)]
    values = np.round(rng.lognormal(3, 1, n_orders), 2).astype(str)
    tokens = pa.array(values.tolist(), pa.large_string())
    order = np.lexsort((np.arange(n_orders), ids))
    key = ids[order]
    first = np.maximum.accumulate(
        np.where(np.r_[True, key[1:] != key[:-1]], np.arange(n_orders), 0)
    )

    windows, windows_s = _best_of(
        lambda: HistoryWindows(order, first, history_length), repeats
    )

    def vectorised() -> list[str]:  # one more column: the windows are shared
        return windows.join(tokens, "~").to_numpy(zero_copy_only=False).tolist()

    def per_order_loop() -> list[str]:
        joined = [""] * n_orders
        sorted_values = values[order].tolist()
        for slot in range(n_orders):
            begin = max(first[slot], slot - history_length)
            joined[order[slot]] = "~".join(sorted_values[begin:slot])
        return joined

    fast, vectorised_s = _best_of(vectorised, repeats)
    slow, baseline = _best_of(per_order_loop, repeats)
    if fast != slow:
        raise AssertionError("vectorised and per-order histories differ")
    return {
        "orders": n_orders,
        "windows_once_s": round(windows_s, 3),
        "vectorised_column_s": round(vectorised_s, 3),
        "per_order_loop_s": round(baseline, 3),
        "column_speedup": round(baseline / vectorised_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--default-customers", type=int, default=None)
    parser.add_argument("--prod-customers", type=int, default=None)
    args = parser.parse_args()
    profiles = _profiles()
    default = dict(profiles["default"])
    prod = dict(profiles["production_width"])
    if args.default_customers:
        default["n_customers"] = args.default_customers
    if args.prod_customers:
        prod["n_customers"] = args.prod_customers

    results = {
        "history_column_short": time_histories(200_000, 10_000, 50),
        "history_column_long": time_histories(200_000, 2_000, 50),
        "default": time_export(SyntheticConfig.from_params(default), _schema()),
        "production_width": time_export(
            SyntheticConfig.from_params(prod), production_width_schema()
        ),
    }
    for name, figures in results.items():
        print(f"{name:>16}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
