"""Write the small production-format sample export under tests/data/production_sample.

The sample is what a team's export looks like, not what the synthetic demo writes:
TSV gz files with every column as text, one per month; numeric categorical codes
(merchant, terminal, merchant category) written ``3`` or ``3.0`` about half of the time
each, in the current order and apart in every history, some padded with spaces; null
tokens (``""`` and ``My Text String``); customers and cards with empty histories. The
``production_sample`` environment (conf/production_sample/) reads it:

    python scripts/make_production_sample.py       # rewrite the checked-in sample
    kedro run -e production_sample                 # train and register on it
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import yaml

from tsa_kedro.schema import RawSchema
from tsa_kedro.synthetic import SyntheticConfig, generate_orders, partition_orders

ROOT = Path(__file__).resolve().parents[1]
ENV = ROOT / "conf" / "production_sample"
OUTPUT = ROOT / "tests" / "data" / "production_sample"
PADDED_RATE = 0.02  # current-order codes written " 3 "


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    params = yaml.safe_load((ENV / "parameters.yml").read_text())
    schema = RawSchema.from_params(params["raw_schema"])
    config = SyntheticConfig.from_params(
        params["synthetic_profiles"][params["synthetic_profile"]]
    )
    orders = generate_orders(config, schema).orders
    rng = np.random.default_rng(config.seed + 1)
    for feature in schema.numeric_cat_features:
        padded = (rng.random(len(orders)) < PADDED_RATE) & (orders[feature] != "")
        orders.loc[padded, feature] = " " + orders.loc[padded, feature] + " "
    args.output.mkdir(parents=True, exist_ok=True)
    for old in args.output.glob("*.tsv.gz"):
        old.unlink()
    for name, part in partition_orders(orders, schema, config.partition_by).items():
        path = args.output / f"{name}.tsv.gz"
        gzip = {"method": "gzip", "mtime": 0}  # the same bytes on every rewrite
        part.to_csv(path, sep="\t", index=False, compression=gzip)
        print(f"{path.relative_to(ROOT)}: {len(part)} orders")


if __name__ == "__main__":
    main()
