import json

import pandas as pd
import pytest
import s3fs

from tests.raw_data import base_schema, tiny_orders
from tsa_kedro.datasets.atomic_partitioned import STAGING_SUFFIX
from tsa_kedro.synthetic import partition_orders

PREFIX = "teams/fraud/data"


@pytest.mark.slow
def test_ingest_reads_and_writes_the_bucket_in_the_s3_environment(
    kedro_cli, s3_bucket, aws_env
):
    fs = s3fs.S3FileSystem()
    raw = tiny_orders()
    for key, frame in partition_orders(raw, base_schema(), "month").items():
        with fs.open(f"{s3_bucket}/{PREFIX}/01_raw/orders/{key}.parquet", "wb") as out:
            frame.to_parquet(out)

    kedro_cli(
        "run",
        "-e",
        "s3",
        "--pipeline=ingest",
        "--params=ingest.chunk_size=600",
        env={**aws_env, "TSA_S3_BUCKET": s3_bucket, "TSA_S3_PREFIX": PREFIX},
    )

    fs.invalidate_cache()
    keys = fs.find(f"{s3_bucket}/{PREFIX}")
    assert not [k for k in keys if STAGING_SUFFIX in k]
    seen = set()
    for split in ("train", "vali", "cali"):
        report = json.loads(
            fs.cat(f"{s3_bucket}/{PREFIX}/08_reporting/{split}/ingest_report.json")
        )
        chunk_keys = sorted(
            k
            for k in keys
            if k.startswith(f"{s3_bucket}/{PREFIX}/02_intermediate/{split}/raw_chunks/")
        )
        assert [k.rsplit("/", 1)[1] for k in chunk_keys] == [
            f"part-{i:05d}.parquet" for i in range(report["chunk_count"])
        ]
        frames = [pd.read_parquet(fs.open(k, "rb")) for k in chunk_keys]
        orders = pd.concat(frames, ignore_index=True)
        assert len(orders) == report["rows"] > 0
        assert report["positive_rows"] == (orders["is_fraud"] == 1).sum() > 0
        assert not seen & set(orders["order_id"])
        seen |= set(orders["order_id"])
    assert len(seen) < len(raw)
    # Nothing went to the local catalog; only MLflow's local tracking store may be there.
    local = list(kedro_cli.data_root.iterdir()) if kedro_cli.data_root.exists() else []
    assert [p.name for p in local] in ([], ["09_registry"])
