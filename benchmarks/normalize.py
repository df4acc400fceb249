"""Raw-order validation and normalisation throughput (rows per second).

Run: ``python -m benchmarks.normalize [--customers N] [--prod-customers N]``.

Times ``normalize_raw_orders`` on all-text synthetic exports at the default and the
production width. The baseline, measured in the same run on the same frame, is the
same checks written with plain pandas text methods (``replace``/``to_numeric`` per
column, ``str.count`` per history column); the ratio is the speed-up over it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from tsa_kedro.features.raw_orders import normalize_raw_orders
from tsa_kedro.schema import ID_TYPES, RawSchema
from tsa_kedro.synthetic import (
    SyntheticConfig,
    generate_orders,
    production_width_schema,
)

CONF = Path(__file__).resolve().parents[1] / "conf" / "base"


def pandas_baseline(df: pd.DataFrame, schema: RawSchema) -> pd.DataFrame:
    """The same normalisation and ragged count with pandas text methods only."""
    tokens = list(schema.null_tokens)
    out = {schema.order_id: df[schema.order_id].astype(str)}
    for id_type in ID_TYPES:
        column = schema.id_columns[id_type]
        out[column] = df[column].where(~df[column].isin(tokens))
    out[schema.timestamp] = pd.to_numeric(df[schema.timestamp]).astype(np.int64)
    label = pd.to_numeric(df[schema.label].where(~df[schema.label].isin(tokens)))
    out[schema.label] = label.where(label >= 0).astype("Int8")
    for column in schema.cat_features:
        out[column] = df[column].where(~df[column].isin(tokens))
    for column in (*schema.num_features, *schema.eng_features):
        out[column] = pd.to_numeric(df[column].where(~df[column].isin(tokens)))

    def count(column: str) -> pd.Series:
        text = df[column].fillna("")
        return (text.str.count(schema.separator) + 1).where(text != "", 0)

    ragged = 0
    for id_type in ID_TYPES:
        expected = count(schema.history_timestamp_column(id_type))
        bad = pd.Series(False, index=df.index)
        for column in schema.history_columns(id_type):
            out[column] = df[column].fillna("")
            found = count(column)
            bad |= (found != expected) & ~((found == 0) & (expected == 1))
        ragged += int(bad.sum())
    return pd.DataFrame(out)


def time_profile(config: SyntheticConfig, schema: RawSchema, repeats: int = 2) -> dict:
    df = generate_orders(config, schema).orders
    timings = {}
    for name, func in (
        ("normalize", lambda: normalize_raw_orders(df, schema, "benchmark")),
        ("pandas_baseline", lambda: pandas_baseline(df, schema)),
    ):
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            func()
            best = min(best, time.perf_counter() - start)
        timings[name] = best
    return {
        "rows": len(df),
        "columns": df.shape[1],
        "normalize_s": round(timings["normalize"], 3),
        "rows_per_s": round(len(df) / timings["normalize"], 1),
        "pandas_baseline_s": round(timings["pandas_baseline"], 3),
        "speedup": round(timings["pandas_baseline"] / timings["normalize"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--prod-customers", type=int, default=200)
    args = parser.parse_args()
    params = yaml.safe_load((CONF / "parameters.yml").read_text())["raw_schema"]
    results = {
        "default_width": time_profile(
            SyntheticConfig(n_customers=args.customers), RawSchema.from_params(params)
        ),
        "production_width": time_profile(
            SyntheticConfig(n_customers=args.prod_customers), production_width_schema()
        ),
    }
    for name, figures in results.items():
        print(f"{name:>16}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
