"""Hostile inputs to the inference handler and the bundle reader are refused clearly."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import zlib
from pathlib import Path

import pytest

from tsa_kedro.serving import handler
from tsa_kedro.serving.archive import (
    DEFAULT_MAX_BYTES,
    ArchiveTooLargeError,
    UnsafeArchiveError,
    read_tar_gz,
    safe_extract,
    tar_gz_bytes,
)
from tsa_kedro.serving.payload import PayloadError, parse_request

DEEP = "[" * 100_000 + "]" * 100_000


def test_deeply_nested_json_is_a_bad_request() -> None:
    with pytest.raises(PayloadError, match="100000 levels deep; at most 3 are allowed"):
        handler.input_fn(DEEP, "application/json")


@pytest.mark.parametrize(
    "body",
    [
        json.dumps([{"order_id": "1", "amount": [[1]]}]),
        json.dumps({"instances": [{"order_id": "1", "amount": {"x": 1}}]}),
    ],
)
def test_nesting_below_the_recursion_limit_is_refused_too(body: str) -> None:
    with pytest.raises(PayloadError, match="levels deep; at most 3"):
        parse_request(body, "application/json", max_batch_size=10)


def test_brackets_inside_strings_do_not_count() -> None:
    body = json.dumps({"instances": [{"order_id": "[[[[{{", "note": 'a"]]]]'}]})
    frame = parse_request(body, "application/json", max_batch_size=10)
    assert frame.to_dict("records") == [{"order_id": "[[[[{{", "note": 'a"]]]]'}]


def _gzip_of_zeros(header: tarfile.TarInfo, size: int) -> bytes:
    """A tar.gz whose one member holds ``size`` zero bytes, compressed in a stream."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip container
    header.size = size
    parts = [compressor.compress(header.tobuf(format=tarfile.GNU_FORMAT))]
    block = bytes(1 << 20)
    for _ in range(size >> 20):
        parts.append(compressor.compress(block))
    parts.append(compressor.compress(bytes(size % (1 << 20) + 1024)))  # pad + EOF
    parts.append(compressor.flush())
    return b"".join(parts)


def test_archive_bomb_is_refused_by_default_before_reading_it(
    tmp_path: Path,
) -> None:
    size = DEFAULT_MAX_BYTES + (1 << 20)
    bomb = _gzip_of_zeros(tarfile.TarInfo("weights.safetensors"), size)
    assert len(bomb) < 2_000_000  # about 300 KB expanding past the limit
    path = tmp_path / "model.tar.gz"
    path.write_bytes(bomb)
    message = f"archive {path} expands to more than {DEFAULT_MAX_BYTES} bytes"
    with pytest.raises(ArchiveTooLargeError, match=message):
        read_tar_gz(path)
    with pytest.raises(ArchiveTooLargeError, match=message):
        safe_extract(path, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_archive_limits_are_configurable() -> None:
    files = {f"code/f{i}.py": b"x" * 100 for i in range(5)}
    archive = tar_gz_bytes(files)
    assert read_tar_gz(archive, max_bytes=500, max_members=5) == files
    with pytest.raises(
        ArchiveTooLargeError,
        match="archive model_package expands to more than 499 bytes",
    ):
        read_tar_gz(archive, name="model_package", max_bytes=499)
    with pytest.raises(
        ArchiveTooLargeError, match="archive bytes holds more than 4 members"
    ):
        read_tar_gz(archive, max_members=4)


def _archive_with_duplicate(path: Path) -> Path:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for content in (b"first", b"second"):
            info = tarfile.TarInfo("code/inference.py")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    path.write_bytes(gzip.compress(raw.getvalue()))
    return path


def test_duplicate_member_names_are_refused(tmp_path: Path) -> None:
    archive = _archive_with_duplicate(tmp_path / "dup.tar.gz")
    message = "holds member 'code/inference.py' more than once"
    with pytest.raises(UnsafeArchiveError, match=f"archive {archive} {message}"):
        read_tar_gz(archive)
    with pytest.raises(UnsafeArchiveError, match=message):
        safe_extract(archive, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []
