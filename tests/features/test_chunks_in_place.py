"""Workers write their chunk's tensors to the final location; the parent commits.

The sample is the production-format export checked in under tests/data (every column
text, numeric codes written ``1`` and ``1.0``, null tokens, empty histories), normalised
as ingest does and cut into chunks saved as Parquet, which the workers read themselves.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
import yaml
from kedro.io.core import DatasetError

from tests.raw_data import production_sample_chunks
from tsa_kedro.datasets import StagedBundle, TensorBundleDataset, TensorChunksDataset
from tsa_kedro.datasets.arrow_parquet import ArrowParquetDataset
from tsa_kedro.features.chunks import (
    ARROW_POOL_VARIABLE,
    STATS_KEY,
    ChunkContext,
    ChunkError,
    ChunkProcessor,
    Downsampling,
    downsample_negatives,
    process_chunk,
    worker_environment,
)
from tsa_kedro.features.tensors import TensorParams, build_tensors, prepare_transforms
from tsa_kedro.features.transforms import fit_transforms
from tsa_kedro.pipelines.preprocess.nodes import build_tensor_chunks
from tsa_kedro.schema import ID_TYPES

SEQ_LEN = 6
CONF = Path(__file__).resolve().parents[2] / "conf" / "base"


@pytest.fixture
def sample(tmp_path: Path) -> dict:
    schema, frames = production_sample_chunks()
    fitted = fit_transforms(list(frames), schema, {"min_frequency": 1})
    sources = {}
    for i, frame in enumerate(frames):
        path = tmp_path / "raw" / f"chunk-{i}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(path)
        sources[f"chunk-{i}"] = functools.partial(pd.read_parquet, str(path))
    return {"schema": schema, "fitted": fitted, "sources": sources}


def _chunks(sample: dict, workers: int, sources: dict | None = None) -> dict:
    cat_to_index, scaling, defaults = sample["fitted"]
    return build_tensor_chunks(
        raw_chunks=sources or sample["sources"],
        cat_to_index=cat_to_index,
        scaling=scaling,
        default_values=defaults,
        raw_schema=sample["schema"].to_params(),
        preprocess={"seq_len": SEQ_LEN, "workers": workers},
        downsample={},
    )


def _context(sample: dict, downsampling: Downsampling | None = None) -> ChunkContext:
    """The sample's chunk context (no downsampling unless given)."""
    schema, (cat_to_index, scaling, defaults) = sample["schema"], sample["fitted"]
    return ChunkContext(
        schema_params=schema.to_params(),
        cat_to_index=cat_to_index,
        scaling=scaling,
        default_values=defaults,
        tensor_params=TensorParams(SEQ_LEN),
        downsampling=downsampling or Downsampling(),
    )


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("workers", [1, 2])
def test_pool_writes_the_files_one_process_writes(
    sample: dict, tmp_path: Path, workers: int
) -> None:
    schema = sample["schema"]
    prepared = prepare_transforms(*sample["fitted"], schema)
    single = tmp_path / "single"
    expected_stats = {}
    for chunk_id, load in sample["sources"].items():
        bundle, stats = build_tensors(load(), schema, prepared, TensorParams(SEQ_LEN))
        TensorBundleDataset(filepath=str(single / chunk_id)).save(bundle)
        expected_stats[chunk_id] = stats

    pooled = tmp_path / "pooled"
    TensorChunksDataset(path=str(pooled), overwrite=True).save(_chunks(sample, workers))

    # byte for byte, every file of the single process, plus each chunk's statistics
    stats_files = {f"{c}/{STATS_KEY}.npy" for c in sample["sources"]}
    assert set(_files(pooled)) == set(_files(single)) | stats_files
    for name in _files(single):
        if not name.endswith("manifest.json"):
            assert (pooled / name).read_bytes() == (single / name).read_bytes(), name
    for chunk_id, stats in expected_stats.items():
        written = json.loads((pooled / chunk_id / "manifest.json").read_text())
        reference = json.loads((single / chunk_id / "manifest.json").read_text())
        arrays = written.pop("arrays")
        assert arrays.pop(STATS_KEY)["shape"] == []
        assert arrays == reference.pop("arrays")  # dtypes, shapes and checksums
        assert written == reference
        chunk = TensorBundleDataset(filepath=str(pooled / chunk_id)).load()
        recorded = json.loads(str(chunk[STATS_KEY][()]))
        assert recorded["dropped"] == stats["dropped"]
        assert recorded["rows_out"] == stats["rows_out"] > 0

    # the sample is what production sends: null tokens and empty histories included
    raw = pd.concat([load() for load in sample["sources"].values()])
    history = raw[schema.history_timestamp_column(ID_TYPES[0])]
    assert (history == "").any()


def test_arrow_backed_chunks_write_the_same_files(sample: dict, tmp_path: Path) -> None:
    # the raw_chunks datasets load Arrow-backed frames (conf/base/catalog_ingest.yml)
    catalog = yaml.safe_load((CONF / "catalog_ingest.yml").read_text())
    partition = catalog["_raw_chunks"]["dataset"]
    assert partition["type"] == "tsa_kedro.datasets.arrow_parquet.ArrowParquetDataset"
    arrow_sources = {
        chunk_id: ArrowParquetDataset(
            filepath=load.args[0], load_args=partition["load_args"]
        ).load
        for chunk_id, load in sample["sources"].items()
    }
    frames = {}
    for name, sources in (("objects", sample["sources"]), ("arrow", arrow_sources)):
        frames[name] = sources["chunk-0"]()
        TensorChunksDataset(path=str(tmp_path / name), overwrite=True).save(
            _chunks(sample, 1, sources)
        )
    assert all(isinstance(d, pd.ArrowDtype) for d in frames["arrow"].dtypes)
    assert not any(isinstance(d, pd.ArrowDtype) for d in frames["objects"].dtypes)
    objects, arrow = tmp_path / "objects", tmp_path / "arrow"
    assert _files(arrow) == _files(objects)
    for name in _files(objects):
        if name.endswith(f"{STATS_KEY}.npy"):  # seconds and memory differ
            continue
        if name.endswith("manifest.json"):
            written = json.loads((arrow / name).read_text())
            reference = json.loads((objects / name).read_text())
            written["arrays"].pop(STATS_KEY), reference["arrays"].pop(STATS_KEY)
            assert written["arrays"] == reference["arrays"], name
            continue
        assert (arrow / name).read_bytes() == (objects / name).read_bytes(), name


def test_workers_hand_back_only_what_was_staged(sample: dict, tmp_path: Path) -> None:
    context = _context(sample)
    dataset = TensorChunksDataset(path=str(tmp_path / "chunks"))
    results = ChunkProcessor(sample["sources"], context, workers=2).lazy_results()
    results.stage_into({c: dataset.bundle_arguments(c) for c in results})
    staged = results["chunk-0"]()
    assert isinstance(staged, StagedBundle)
    assert staged.info["rows_out"] == staged.shapes["order_id"][0] > 0
    assert staged.shapes[f"X_seq_cat_{ID_TYPES[0]}"][1] == SEQ_LEN
    # staged, not visible: no manifest until the chunk is committed
    assert not (tmp_path / "chunks" / "chunk-0").exists()
    assert list((Path(staged.location)).glob("*.npy"))
    TensorBundleDataset(**dataset.bundle_arguments("chunk-0")).save(staged)
    assert (tmp_path / "chunks" / "chunk-0" / "manifest.json").exists()
    assert not Path(staged.location).exists()
    for chunk_id in ("chunk-1", "chunk-2"):
        results[chunk_id]().location  # noqa: B018 (drain the pool)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failed_chunk_leaves_nothing_half_written(
    sample: dict, tmp_path: Path, workers: int
) -> None:
    frame = pd.read_parquet(sample["sources"]["chunk-1"].args[0])
    broken = tmp_path / "raw" / "broken.parquet"
    frame.drop(columns=[sample["schema"].timestamp]).to_parquet(broken)
    sources = {
        **sample["sources"],
        "chunk-1": functools.partial(pd.read_parquet, str(broken)),
        "chunk-3": sample["sources"]["chunk-0"],
    }
    target = tmp_path / "chunks"
    dataset = TensorChunksDataset(path=str(target), overwrite=True)
    with pytest.raises(
        DatasetError, match=rf"chunk .chunk-1.*{sample['schema'].timestamp}"
    ) as failed:
        dataset.save(_chunks(sample, workers, sources))
    assert isinstance(failed.value.__cause__, ChunkError)
    # the chunk before the failure is complete; nothing else is left, staged or not
    assert _files(target) == [
        f"chunk-0/{name}"
        for name in sorted(
            p.name for p in (target / "chunk-0").iterdir() if p.is_file()
        )
    ]
    assert sorted(dataset.load()) == ["chunk-0"]


def test_staging_fails_naming_the_chunk_and_file(sample: dict, tmp_path: Path) -> None:
    results = _chunks(sample, 1)
    results.stage_into({c: {"filepath": str(tmp_path / "file" / c)} for c in results})
    (tmp_path / "file").write_text("a file where the chunks' folder goes")
    with pytest.raises(ChunkError, match=r"chunk 'chunk-0'.*file/chunk-0"):
        results["chunk-0"]()


def test_a_consumed_frame_gives_the_same_tensors(sample: dict) -> None:
    schema = sample["schema"]
    prepared = prepare_transforms(*sample["fitted"], schema)
    frame = sample["sources"]["chunk-2"]()
    kept, kept_stats = build_tensors(frame, schema, prepared, TensorParams(SEQ_LEN))
    assert list(frame.columns) == schema.all_columns()  # left as it was
    consumed, stats = build_tensors(
        frame, schema, prepared, TensorParams(SEQ_LEN), consume=True
    )
    assert stats == kept_stats
    for key, array in kept.items():
        assert consumed[key].tobytes() == array.tobytes(), key
    # handed over: the history columns are gone, the current order's are not
    history = {c for t in ID_TYPES for c in schema.history_columns(t)}
    assert list(frame.columns) == [c for c in schema.all_columns() if c not in history]


def _arrow_pool_backend() -> str:
    import pyarrow as pa  # noqa: PLC0415

    return pa.default_memory_pool().backend_name


def test_workers_allocate_arrow_memory_from_malloc(monkeypatch) -> None:
    monkeypatch.delenv(ARROW_POOL_VARIABLE, raising=False)
    spawn = multiprocessing.get_context("spawn")
    with worker_environment():
        with ProcessPoolExecutor(1, mp_context=spawn) as pool:
            assert pool.submit(_arrow_pool_backend).result() == "system"
    assert ARROW_POOL_VARIABLE not in os.environ  # the parent's is left as it was
    monkeypatch.setenv(ARROW_POOL_VARIABLE, "jemalloc")
    with worker_environment():
        assert os.environ[ARROW_POOL_VARIABLE] == "jemalloc"  # a choice is kept


def test_a_frame_passed_in_is_left_whole(sample: dict) -> None:
    context = _context(sample)
    frame = sample["sources"]["chunk-1"]()
    before = frame.copy()
    loaded = process_chunk("chunk-1", sample["sources"]["chunk-1"], context)
    passed = process_chunk("chunk-1", frame, context)
    pd.testing.assert_frame_equal(frame, before)
    for key in loaded:
        if key != STATS_KEY:
            assert passed[key].tobytes() == loaded[key].tobytes(), key


def test_a_downsampled_chunk_frees_only_its_own_rows(sample: dict) -> None:
    schema, (cat_to_index, scaling, defaults) = sample["schema"], sample["fitted"]
    sampling = Downsampling(target_positive_rate=0.2, seed=7)
    context = _context(sample, sampling)
    frame = sample["sources"]["chunk-1"]()
    before = frame.copy()
    bundle = process_chunk("chunk-1", frame, context)
    pd.testing.assert_frame_equal(
        frame, before
    )  # the kept rows were a frame of its own
    kept, counts = downsample_negatives(frame, schema.label, sampling, "chunk-1")
    assert 0 < counts["downsampled_negatives"] and len(kept) < len(frame)
    expected, _ = build_tensors(
        kept,
        schema,
        prepare_transforms(cat_to_index, scaling, defaults, schema),
        TensorParams(SEQ_LEN),
    )
    assert list(bundle) == [*expected, STATS_KEY]
    for key, array in expected.items():
        assert bundle[key].tobytes() == array.tobytes(), key
