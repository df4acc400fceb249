"""Tensor bundle validation, batch gathering and the sharded sampler."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from tests.training.standin import VOCAB_SIZE, WIDTHS, make_bundle
from tsa_kedro.features.contract import (
    FEATURE_KEYS,
    TensorContractError,
    bundle_widths,
    check_vocabulary,
    check_widths,
    gather_batch,
)
from tsa_kedro.training.data import (
    BatchPrefetcher,
    ShardedBatchSampler,
    attach_bundle,
    detach_bundle,
    labels_of,
    shard_range,
)


def test_validate_bundle_reports_widths():
    widths = bundle_widths(make_bundle(10, 0), "train.model_input")
    assert widths.n_samples == 10
    assert widths.model_widths() == WIDTHS


def test_empty_split_is_named():
    bundle = {key: value[:0] for key, value in make_bundle(5, 0).items()}
    with pytest.raises(
        TensorContractError, match=r"cali\.model_input: the split is empty"
    ):
        bundle_widths(bundle, "cali.model_input")


def test_missing_array_is_named():
    bundle = make_bundle(5, 0)
    del bundle["X_num"]
    with pytest.raises(
        TensorContractError, match=r"vali\.model_input: missing arrays \['X_num'\]"
    ):
        bundle_widths(bundle, "vali.model_input")


def test_cid_and_ccid_must_agree():
    bundle = make_bundle(5, 0)
    bundle["X_seq_cat_ccid"] = bundle["X_seq_cat_ccid"][:, :, :2]
    with pytest.raises(TensorContractError, match="cid and ccid sequences differ"):
        bundle_widths(bundle, "train.model_input")


def test_row_counts_must_agree():
    bundle = make_bundle(5, 0)
    bundle["Y"] = bundle["Y"][:4]
    with pytest.raises(TensorContractError, match="disagree on the number of rows"):
        bundle_widths(bundle, "train.model_input")


def test_labels_must_be_binary():
    bundle = make_bundle(5, 0)
    bundle["Y"] = np.array([0, 1, 2, 0, 1], dtype=np.int8)
    with pytest.raises(TensorContractError, match="Y must be 0/1"):
        bundle_widths(bundle, "train.model_input")


def test_widths_against_config_name_dataset_and_field():
    widths = bundle_widths(make_bundle(5, 0), "vali.model_input")
    check_widths(widths, WIDTHS, "vali.model_input")
    with pytest.raises(
        TensorContractError,
        match=r"vali\.model_input: widths disagree .*n_eng_features: data 4 vs config 297",
    ):
        check_widths(widths, {**WIDTHS, "n_eng_features": 297}, "vali.model_input")


def test_category_outside_vocabulary_is_named():
    bundle = make_bundle(50, 0)
    check_vocabulary(bundle, "train.model_input", VOCAB_SIZE, chunk_rows=7)
    bundle["X_seq_cat_ccid"][41, 3, 1] = VOCAB_SIZE
    with pytest.raises(
        TensorContractError,
        match=rf"array 'X_seq_cat_ccid': category index {VOCAB_SIZE} is outside",
    ):
        check_vocabulary(bundle, "train.model_input", VOCAB_SIZE, chunk_rows=7)


def test_single_class_labels_are_rejected():
    bundle = make_bundle(20, 0)
    bundle["Y"][:] = 0
    with pytest.raises(
        TensorContractError, match=r"vali\.model_input: all 20 labels are 0"
    ):
        labels_of(bundle, "vali.model_input")


class CountingArray:
    """Wraps an array and counts indexing calls."""

    def __init__(self, array: np.ndarray):
        self.array = array
        self.calls = 0

    def __getitem__(self, index):
        self.calls += 1
        return self.array[index]


def test_gather_batch_indexes_each_array_once_and_matches_rows():
    bundle = make_bundle(40, 0)
    counting = {key: CountingArray(value) for key, value in bundle.items()}
    rows = np.array([3, 7, 8, 30])
    batch = gather_batch(counting, rows)
    for key in (*FEATURE_KEYS, "Y"):
        assert counting[key].calls == 1, key
        np.testing.assert_array_equal(batch[key].numpy(), bundle[key][rows])
    assert batch["X_seq_cat_cid"].dtype == torch.int32
    narrow = {**bundle, "X_seq_cat_ccid": bundle["X_seq_cat_ccid"].astype(np.int16)}
    assert gather_batch(narrow, rows)["X_seq_cat_ccid"].dtype == torch.int64
    assert batch["X_seq_num_ccid"].dtype == torch.float32
    assert batch["Y"].dtype == torch.int64


def test_sampler_shards_cover_all_rows_with_equal_batches():
    n_rows, world = 103, 4
    samplers = [
        ShardedBatchSampler(n_rows, 8, rank=r, world_size=world, seed=5)
        for r in range(world)
    ]
    for sampler in samplers:
        sampler.set_epoch(2)
    batches = [list(sampler) for sampler in samplers]
    assert len({len(b) for b in batches}) == 1
    assert len(batches[0]) == len(samplers[0])
    rows = np.concatenate([np.concatenate(b) for b in batches])
    assert rows.size == 104  # padded by wrapping to a multiple of the world size
    assert set(rows.tolist()) == set(range(n_rows))
    for batch in batches[0]:
        assert np.all(np.diff(batch) >= 0)


def test_sampler_shuffles_per_epoch_and_repeats_with_the_seed():
    sampler = ShardedBatchSampler(50, 50, seed=1)
    sampler.set_epoch(1)
    first = sampler.rank_indices()
    sampler.set_epoch(2)
    second = sampler.rank_indices()
    assert not np.array_equal(first, second)
    again = ShardedBatchSampler(50, 50, seed=1)
    again.set_epoch(1)
    np.testing.assert_array_equal(again.rank_indices(), first)


def test_sampler_state_round_trip_and_mismatch():
    sampler = ShardedBatchSampler(50, 10, seed=1)
    sampler.set_epoch(4)
    restored = ShardedBatchSampler(50, 10, seed=1)
    restored.load_state_dict(sampler.state_dict())
    assert restored.epoch == 4
    other = ShardedBatchSampler(50, 20, seed=1)
    with pytest.raises(ValueError, match="batch_size"):
        other.load_state_dict(sampler.state_dict())


def test_shard_range_partitions_rows():
    parts = [shard_range(10, rank, 3) for rank in range(3)]
    assert parts[0][0] == 0 and parts[-1][1] == 10
    assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))


def test_memory_maps_travel_as_references(tmp_path):
    array = np.arange(6000, dtype=np.float32).reshape(10, 20, 30)
    np.save(tmp_path / "x.npy", array)
    bundle = {"x": np.load(tmp_path / "x.npy", mmap_mode="r"), "y": np.arange(3)}
    detached = detach_bundle(bundle)
    assert len(pickle.dumps(detached)) < array.nbytes / 10
    attached = attach_bundle(pickle.loads(pickle.dumps(detached)))
    assert isinstance(attached["x"], np.memmap)
    np.testing.assert_array_equal(attached["x"], array)
    np.testing.assert_array_equal(attached["y"], bundle["y"])


def _memory_mapped(bundle, folder):
    mapped = {}
    for key, value in bundle.items():
        np.save(folder / f"{key}.npy", value)
        mapped[key] = np.load(folder / f"{key}.npy", mmap_mode="r")
    return mapped


@pytest.mark.parametrize(("depth", "narrow"), [(1, False), (3, False), (2, True)])
def test_prefetched_batches_equal_gathered_batches_in_order(tmp_path, depth, narrow):
    bundle = make_bundle(50, 0)
    if narrow:  # int16 categories and float64 numericals are converted as gathered
        bundle["X_seq_cat_ccid"] = bundle["X_seq_cat_ccid"].astype(np.int16)
        bundle["X_num"] = bundle["X_num"].astype(np.float64)
    bundle = _memory_mapped(bundle, tmp_path)
    sampler = ShardedBatchSampler(50, 8, seed=3)
    sampler.set_epoch(2)
    expected = list(sampler)
    seen = list(BatchPrefetcher(bundle, sampler, torch.device("cpu"), depth=depth))
    assert len(seen) == len(expected) == 7
    for (indices, batch), want in zip(seen, expected, strict=True):
        np.testing.assert_array_equal(indices, want)
        reference = gather_batch(bundle, want)
        assert batch.keys() == reference.keys()
        for key, value in reference.items():
            assert batch[key].dtype == value.dtype, key
            torch.testing.assert_close(batch[key], value, rtol=0, atol=0)


def test_prefetch_error_is_raised_at_its_batch():
    bundle = make_bundle(20, 0)
    batches = [np.array([0, 1]), np.array([2, 3]), np.array([4, 99])]
    prefetched = iter(BatchPrefetcher(bundle, batches, torch.device("cpu")))
    assert next(prefetched)[0].tolist() == [0, 1]
    assert next(prefetched)[0].tolist() == [2, 3]
    with pytest.raises(IndexError, match="99"):
        next(prefetched)


def test_prefetch_depth_must_be_positive():
    with pytest.raises(ValueError, match="depth"):
        BatchPrefetcher(make_bundle(4, 0), [], torch.device("cpu"), depth=0)
