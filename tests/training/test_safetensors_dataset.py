"""SafetensorsDataset: local and S3 round trips, atomic local writes, bad data."""

from __future__ import annotations

import os

import pytest
import torch
from kedro.io import DatasetError

from tsa_kedro.datasets.safetensors_dataset import SafetensorsDataset


def _weights() -> dict[str, torch.Tensor]:
    shared = torch.arange(6, dtype=torch.float32)
    return {
        "a.weight": shared.view(2, 3),
        "b.weight": shared,
        "steps": torch.tensor([3]),
    }


def test_local_round_trip(tmp_path):
    dataset = SafetensorsDataset(
        filepath=str(tmp_path / "06_models" / "model.safetensors"),
        metadata_fields={"format": "pt"},
    )
    assert not dataset.exists()
    dataset.save(_weights())
    assert os.listdir(tmp_path / "06_models") == ["model.safetensors"]
    loaded = dataset.load()
    for name, tensor in _weights().items():
        assert torch.equal(loaded[name], tensor)


def test_s3_round_trip(s3_bucket):
    dataset = SafetensorsDataset(
        filepath=f"s3://{s3_bucket}/06_models/model.safetensors"
    )
    dataset.save(_weights())
    assert dataset.exists()
    assert torch.equal(dataset.load()["a.weight"], _weights()["a.weight"])


def test_rejects_what_is_not_a_dict_of_tensors(tmp_path):
    dataset = SafetensorsDataset(filepath=str(tmp_path / "model.safetensors"))
    with pytest.raises(DatasetError, match="saves a dict of tensors"):
        dataset.save({"a": [1, 2]})
    assert not (tmp_path / "model.safetensors").exists()


def test_corrupt_file_names_the_path(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x00garbage")
    with pytest.raises(DatasetError, match="not a readable safetensors file"):
        SafetensorsDataset(filepath=str(path)).load()
