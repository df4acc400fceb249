"""``ArrowParquetDataset`` loads the frame ``pandas.ParquetDataset`` loads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kedro_datasets.pandas import ParquetDataset

from tests.raw_data import production_sample_chunks
from tsa_kedro.datasets.arrow_parquet import ArrowParquetDataset, arrow_frame

ARROW = {"dtype_backend": "pyarrow"}


def _both(path: Path, load_args: dict | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    ours = ArrowParquetDataset(filepath=str(path), load_args=load_args).load()
    theirs = ParquetDataset(filepath=str(path), load_args=load_args).load()
    return ours, theirs


def _same(ours: pd.DataFrame, theirs: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(ours, theirs, check_exact=True)
    assert list(ours.dtypes) == list(theirs.dtypes)
    assert type(ours.index) is type(theirs.index)
    assert ours.index.equals(theirs.index)


@pytest.mark.parametrize("chunk", [0, 1])
def test_production_sample_chunk_loads_as_pandas_loads_it(
    tmp_path: Path, chunk: int
) -> None:
    # chunk 1 is a slice of the export: its stored RangeIndex does not start at 0
    _, frames = production_sample_chunks()
    path = tmp_path / "chunk.parquet"
    frames[chunk].to_parquet(path)
    ours, theirs = _both(path, ARROW)
    _same(ours, theirs)
    assert all(isinstance(d, pd.ArrowDtype) for d in ours.dtypes)


def test_many_row_groups_load_as_pandas_loads_them(tmp_path: Path) -> None:
    _, frames = production_sample_chunks()
    path = tmp_path / "groups.parquet"
    frames[0].reset_index(drop=True).to_parquet(path, row_group_size=25)
    ours, theirs = _both(path, ARROW)
    _same(ours, theirs)
    assert ours.iloc[:, 0].array.__arrow_array__().num_chunks > 1


def test_frames_it_cannot_wrap_are_read_by_pandas(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"a": ["x", None, "z"], "b": [1.0, np.nan, 3.0]},
        index=pd.Index(["r1", "r2", "r3"], name="row"),
    )
    path = tmp_path / "named_index.parquet"
    frame.to_parquet(path)
    ours, theirs = _both(path, ARROW)
    _same(ours, theirs)
    assert list(ours.index) == ["r1", "r2", "r3"]


def test_other_load_args_are_pandas_own(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": ["x", None], "b": [1.5, 2.0]})
    path = tmp_path / "plain.parquet"
    frame.to_parquet(path)
    for load_args in (None, {"columns": ["b"]}):
        ours, theirs = _both(path, load_args)
        _same(ours, theirs)


def test_table_without_pandas_metadata(tmp_path: Path) -> None:
    import pyarrow as pa  # noqa: PLC0415

    table = pa.table({"a": ["x", None], "b": [1, 2]})
    frame = arrow_frame(table)
    _same(frame, table.to_pandas(types_mapper=pd.ArrowDtype))
    assert arrow_frame(pa.table([[1], [2]], names=["a", "a"])) is None
