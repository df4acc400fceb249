import pandas as pd
import pytest

from tsa_kedro.datasets.atomic_partitioned import (
    STAGING_SUFFIX,
    AtomicPartitionedDataset,
)


def dataset(path):
    return AtomicPartitionedDataset(
        path=str(path),
        dataset={"type": "pandas.ParquetDataset"},
        filename_suffix=".parquet",
    )


def frame(value):
    return pd.DataFrame({"x": [value]})


def test_a_new_save_replaces_every_old_partition(tmp_path):
    chunks = dataset(tmp_path / "chunks")
    chunks.save(
        {"part-00000": frame(1), "part-00001": frame(2), "part-00002": frame(3)}
    )
    chunks.save({"part-00000": frame(4)})
    loaded = chunks.load()
    assert sorted(loaded) == ["part-00000"]
    assert loaded["part-00000"]().x.tolist() == [4]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chunks"]


def test_a_failed_save_leaves_the_previous_partitions_untouched(tmp_path):
    chunks = dataset(tmp_path / "chunks")
    chunks.save({"part-00000": frame(1), "part-00001": frame(2)})

    def broken():
        raise OSError("disk full")

    with pytest.raises(Exception, match="disk full"):
        chunks.save({"part-00000": frame(9), "part-00001": broken})
    loaded = dataset(tmp_path / "chunks").load()
    assert [loaded[k]().x.item() for k in sorted(loaded)] == [1, 2]
    assert not (tmp_path / f"chunks{STAGING_SUFFIX}").exists()


def test_a_leftover_staging_folder_is_cleared(tmp_path):
    stale = tmp_path / f"chunks{STAGING_SUFFIX}"
    stale.mkdir()
    (stale / "part-00007.parquet").write_bytes(b"half")
    chunks = dataset(tmp_path / "chunks")
    chunks.save({"part-00000": frame(1)})
    assert sorted(chunks.load()) == ["part-00000"]
    assert not stale.exists()


def test_saving_nothing_is_refused(tmp_path):
    with pytest.raises(Exception, match="no partitions"):
        dataset(tmp_path / "chunks").save({})
