"""BinaryFileDataset: local atomic saves and S3 through the moto server."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
from kedro.io.core import DatasetError

from tsa_kedro.datasets.binary_file import BinaryFileDataset


def test_local_round_trip_leaves_no_temporary_file(tmp_path: Path) -> None:
    dataset = BinaryFileDataset(filepath=str(tmp_path / "models" / "model.tar.gz"))
    assert not dataset.exists()
    dataset.save(b"\x1f\x8bpayload")
    assert dataset.load() == b"\x1f\x8bpayload"
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["model.tar.gz"]


def test_refuses_anything_but_bytes(tmp_path: Path) -> None:
    dataset = BinaryFileDataset(filepath=str(tmp_path / "x.bin"))
    with pytest.raises(DatasetError, match="saves bytes"):
        dataset.save("text")
    assert not (tmp_path / "x.bin").exists()


def test_s3_round_trip(s3_bucket: str, aws_env: dict) -> None:
    dataset = BinaryFileDataset(
        filepath=f"s3://{s3_bucket}/06_models/model.tar.gz",
        fs_args={"client_kwargs": {"endpoint_url": aws_env["AWS_ENDPOINT_URL"]}},
    )
    dataset.save(b"bundle-bytes")
    body = boto3.client("s3").get_object(Bucket=s3_bucket, Key="06_models/model.tar.gz")
    assert body["Body"].read() == b"bundle-bytes"
    assert dataset.load() == b"bundle-bytes"
    assert dataset.exists()
