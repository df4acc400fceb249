"""Saves six partitions to an ``AtomicPartitionedDataset`` slowly, in its own process.

Used by the concurrent-writer test: ``python -m tests.reliability.partition_writer
--path P --tag A``. Each partition holds the writer's tag; ``--started`` is touched once
the first partition is on disk, and every partition takes ``--delay`` seconds.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import pandas as pd

from tsa_kedro.datasets.atomic_partitioned import AtomicPartitionedDataset

PARTS = 6


def main() -> None:
    """Parse arguments, wait for ``--wait-for`` if given, then save."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--path", required=True)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--delay", type=float, default=0.3)
    parser.add_argument("--started")
    parser.add_argument("--wait-for")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    if args.wait_for:
        while not Path(args.wait_for).exists():
            time.sleep(0.02)

    def partition(index: int):
        def build() -> pd.DataFrame:
            if index == 1 and args.started:  # partition 0 is saved
                Path(args.started).touch()
            time.sleep(args.delay)
            return pd.DataFrame({"writer": [args.tag], "part": [index]})

        return build

    dataset = AtomicPartitionedDataset(
        path=args.path,
        dataset={"type": "pandas.ParquetDataset"},
        filename_suffix=".parquet",
    )
    dataset.save({f"part-{i:05d}": partition(i) for i in range(PARTS)})


if __name__ == "__main__":
    main()
