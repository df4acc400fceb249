import json

import pandas as pd
import pytest

from tests.raw_data import base_schema_params, tiny_config
from tsa_kedro.pipelines.synthetic import create_pipeline
from tsa_kedro.pipelines.synthetic.nodes import generate_synthetic_orders
from tsa_kedro.synthetic import SyntheticConfigError


def test_node_writes_one_partition_per_month_of_the_selected_profile():
    profiles = {
        "small": {**tiny_config(n_customers=40).__dict__, "end_date": "2024-02-29"}
    }
    parts = generate_synthetic_orders(base_schema_params(), profiles, "small")
    assert sorted(parts) == ["orders_2024-01", "orders_2024-02"]
    assert all(isinstance(p, pd.DataFrame) and len(p) for p in parts.values())
    assert create_pipeline().outputs() == {"raw_orders"}


def test_unknown_profile_is_named():
    with pytest.raises(SyntheticConfigError, match="synthetic_profile 'huge'"):
        generate_synthetic_orders(base_schema_params(), {"default": {}}, "huge")


@pytest.mark.slow
def test_cli_generates_then_ingests(kedro_cli):
    profile = "synthetic_profiles.default"
    kedro_cli(
        "run",
        "--pipeline=synthetic",
        f"--params={profile}.n_customers=150",
    )
    raw = sorted((kedro_cli.data_root / "01_raw" / "orders").iterdir())
    assert [p.name for p in raw] == [f"orders_2024-0{m}.parquet" for m in range(1, 6)]
    # A few hundred orders per split: one planted ragged row is already 0.2 %.
    kedro_cli(
        "run",
        "--pipeline=ingest",
        "--params=ingest.chunk_size=400,ingest.ragged_tolerance=0.01",
    )
    for split in ("train", "vali", "cali"):
        report = json.loads(
            (
                kedro_cli.data_root / "08_reporting" / split / "ingest_report.json"
            ).read_text()
        )
        chunks = sorted(
            (kedro_cli.data_root / "02_intermediate" / split / "raw_chunks").iterdir()
        )
        assert report["chunk_count"] == len(chunks) > 1
        assert chunks[0].name == "part-00000.parquet"
        frames = pd.concat(pd.read_parquet(p) for p in chunks)
        assert len(frames) == report["rows"] > 0
        assert frames["order_ts"].dtype == "int64"
