import copy

import numpy as np
import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from tests.raw_data import as_partitions, base_schema_params, ingest_params, tiny_orders
from tsa_kedro.features.raw_orders import RawDataError
from tsa_kedro.pipelines.ingest import create_pipeline
from tsa_kedro.pipelines.ingest.nodes import download, download_split
from tsa_kedro.pipelines.ingest.windows import IngestConfigError, split_windows

DAY = 86400


def params(**changes):
    ingest = copy.deepcopy(ingest_params())
    ingest["chunk_size"] = 700
    for path, value in changes.items():
        *parents, leaf = path.split(".")
        node = ingest
        for key in parents:
            node = node[key]
        node[leaf] = value
    return ingest


@pytest.mark.parametrize("split", ["train", "vali", "cali"])
def test_each_download_keeps_its_window_in_time_ordered_chunks(split):
    raw = tiny_orders()
    ingest = params()
    window_block = ingest["windows"][split]
    chunks, report = download(
        as_partitions(raw), base_schema_params(), ingest, window_block
    )
    window = split_windows(ingest)[split]

    names = sorted(chunks)
    assert names == [f"part-{i:05d}" for i in range(len(names))]
    assert (
        all(len(chunks[n]) == 700 for n in names[:-1]) and len(chunks[names[-1]]) <= 700
    )
    orders = pd.concat([chunks[n] for n in names], ignore_index=True)
    ts = orders["order_ts"].to_numpy()
    assert ts.min() >= window.start_epoch and ts.max() < window.stop_epoch
    assert (np.diff(ts) >= 0).all()
    raw_ts = raw["order_ts"].astype(int)
    expected = raw[(raw_ts >= window.start_epoch) & (raw_ts < window.stop_epoch)]
    assert sorted(orders["order_id"]) == sorted(expected["order_id"])
    assert str(orders["is_fraud"].dtype) == "Int8"

    labels = orders["is_fraud"]
    assert report["split"] == split
    assert report["rows"] == len(orders) == sum(report["chunks"].values())
    assert report["chunk_count"] == len(chunks)
    assert report["labelled_rows"] == labels.notna().sum()
    assert report["unlabelled_rows"] == labels.isna().sum() > 0
    assert report["positive_rows"] == (labels == 1).sum() > 0
    assert report["positive_rate"] == pytest.approx(labels.dropna().mean())
    assert report["rows_read"] == len(raw)
    assert report["rows_outside_window"] == len(raw) - len(orders)
    assert report["window"] == {
        "start": str(window.start),
        "end": str(window.end),
    }
    assert report["date_range"]["first_order"].startswith(str(window.start)[:7])


def test_chunking_is_deterministic():
    first, _ = download_split(
        "vali", as_partitions(tiny_orders()), base_schema_params(), params()
    )
    second, _ = download_split(
        "vali", as_partitions(tiny_orders()), base_schema_params(), params()
    )
    assert first.keys() == second.keys()
    for name in first:
        pd.testing.assert_frame_equal(first[name], second[name])


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"windows.vali.start": "2024-03-20"}, "ingest.windows.vali.start"),
        ({"windows.cali.start": "2024-01-20"}, "ingest.windows.cali.start"),
        ({"windows.cali.start": "2024-04-15"}, "ingest.windows.cali"),
        ({"windows.train.end": "2024-01-01"}, "ingest.windows.train"),
        ({"windows.vali.end": "31/04/2024"}, "ingest.windows.vali.end"),
        ({"windows.cali": None}, "ingest.windows.cali"),
        ({"chunk_size": 0}, "ingest.chunk_size"),
        ({"ragged_tolerance": 2}, "ingest.ragged_tolerance"),
    ],
)
def test_bad_parameters_are_named(changes, named):
    with pytest.raises(IngestConfigError, match=named.replace(".", r"\.")):
        download_split(
            "vali",
            as_partitions(tiny_orders()),
            base_schema_params(),
            params(**changes),
        )


def test_missing_split_window_is_named():
    ingest = params()
    del ingest["windows"]["train"]
    with pytest.raises(IngestConfigError, match=r"ingest\.windows\.train is missing"):
        download_split(
            "cali", as_partitions(tiny_orders()), base_schema_params(), ingest
        )


def test_empty_window_is_an_error_naming_the_parameter():
    ingest = params(
        **{"windows.cali.start": "2025-01-01", "windows.cali.end": "2025-01-31"}
    )
    with pytest.raises(RawDataError, match=r"ingest\.windows\.cali"):
        download_split(
            "cali", as_partitions(tiny_orders()), base_schema_params(), ingest
        )


def test_a_bad_partition_is_named():
    partitions = as_partitions(tiny_orders())
    broken = partitions["orders_2024-02"]()
    broken.loc[10, "order_ts"] = "yesterday"
    partitions["orders_2024-02"] = lambda: broken
    with pytest.raises(RawDataError, match=r"orders_2024-02.*order_ts"):
        download_split("train", partitions, base_schema_params(), params())


def test_bad_rows_outside_the_window_do_not_stop_another_split():
    partitions = as_partitions(tiny_orders())
    broken = partitions["orders_2024-02"]()
    broken.loc[10, "amount"] = "twelve"
    partitions["orders_2024-02"] = lambda: broken
    download_split("cali", partitions, base_schema_params(), params())
    with pytest.raises(RawDataError, match=r"orders_2024-02.*amount"):
        download_split("train", partitions, base_schema_params(), params())


def test_duplicate_order_ids_are_rejected():
    raw = tiny_orders().copy()
    april = np.flatnonzero(raw["order_ts"].astype(int) >= 1711929600)
    raw.loc[april[1], "order_id"] = raw.loc[april[0], "order_id"]
    with pytest.raises(RawDataError, match=raw.loc[april[0], "order_id"]):
        download_split("vali", as_partitions(raw), base_schema_params(), params())


def test_ragged_share_is_judged_on_the_whole_split():
    raw = tiny_orders().copy()
    ts = raw["order_ts"].astype(int)
    lengths = raw["cid_hist_ts"].str.count("~")
    rows = np.flatnonzero((ts >= 1711929600) & (ts < 1714521600) & (lengths >= 1))[:3]
    raw.loc[rows, "cid_hist_amount"] = (
        raw.loc[rows, "cid_hist_amount"].str.rsplit("~", n=1).str[0]
    )
    with pytest.raises(RawDataError, match=r"split vali.*ragged_tolerance"):
        download_split(
            "vali",
            as_partitions(raw),
            base_schema_params(),
            params(ragged_tolerance=0.001),
        )
    chunks, report = download_split(
        "vali", as_partitions(raw), base_schema_params(), params(ragged_tolerance=0.01)
    )
    assert report["ragged_history_rows"] == {"cid": 3, "ccid": 0}
    assert report["rows"] == sum(len(c) for c in chunks.values())


def test_pipeline_runs_the_three_downloads_on_memory_datasets():
    outputs = [
        f"{s}.{kind}"
        for s in ("train", "vali", "cali")
        for kind in ("raw_chunks", "ingest_report")
    ]
    catalog = DataCatalog(
        {
            "raw_orders": MemoryDataset(as_partitions(tiny_orders())),
            "params:raw_schema": MemoryDataset(base_schema_params()),
            "params:ingest": MemoryDataset(params()),
            **{
                f"params:ingest.windows.{s}": MemoryDataset(params()["windows"][s])
                for s in ("train", "vali", "cali")
            },
            **{name: MemoryDataset(copy_mode="assign") for name in outputs},
        }
    )
    pipeline = create_pipeline()
    assert {n.name for n in pipeline.nodes} == {
        "download_train",
        "download_vali",
        "download_cali",
    }
    assert len(pipeline.grouped_nodes) == 1  # independent: one layer, parallel
    SequentialRunner().run(pipeline, catalog)
    rows = {
        s: catalog.load(f"{s}.ingest_report")["rows"] for s in ("train", "vali", "cali")
    }
    total = sum(rows.values())
    assert 0 < rows["vali"] < rows["train"] and total < len(tiny_orders())
    ids = [
        set(pd.concat(catalog.load(f"{s}.raw_chunks").values())["order_id"])
        for s in ("train", "vali", "cali")
    ]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
