"""Reproducible archives, manifests and safe extraction."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from tsa_kedro.serving.archive import (
    MANIFEST_NAME,
    ManifestError,
    UnsafeArchiveError,
    build_manifest,
    read_tar_gz,
    safe_extract,
    sha256_bytes,
    tar_gz_bytes,
    verify_manifest,
    write_tar_gz,
)

FILES = {
    "model_config.json": b'{"dim": 4}',
    "code/inference.py": b"print('hi')\n",
    "code/tsa_kedro/__init__.py": b"",
    "weights.bin": bytes(range(256)) * 10,
}


def _hostile_archive(
    path: Path, member: tarfile.TarInfo, content: bytes = b"x"
) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        ok = tarfile.TarInfo("fine.txt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        if member.isfile():
            member.size = len(content)
            tar.addfile(member, io.BytesIO(content))
        else:
            tar.addfile(member)
    return path


def test_same_files_give_same_bytes_in_any_order() -> None:
    first = tar_gz_bytes(FILES)
    second = tar_gz_bytes(dict(reversed(list(FILES.items()))))
    assert first == second
    assert tar_gz_bytes({**FILES, "weights.bin": b"other"}) != first


def test_members_sorted_with_fixed_metadata(tmp_path: Path) -> None:
    archive = write_tar_gz(FILES, tmp_path / "model.tar.gz")
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == sorted(FILES)
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {
        (315532800, 0, 0, "", "", 0o644)
    }
    assert not list(tmp_path.glob(".model.tar.gz.*"))


def test_round_trip_and_manifest_verification(tmp_path: Path) -> None:
    manifest = build_manifest(FILES, {"package_version": "1.2.3"})
    assert manifest["files"]["weights.bin"]["sha256"] == sha256_bytes(
        FILES["weights.bin"]
    )
    files = {**FILES, MANIFEST_NAME: json.dumps(manifest).encode()}
    archive = write_tar_gz(files, tmp_path / "model.tar.gz")
    assert read_tar_gz(archive) == files
    assert read_tar_gz(archive.read_bytes()) == files
    out = tmp_path / "out"
    extracted = safe_extract(archive, out)
    assert sorted(p.relative_to(out).as_posix() for p in extracted) == sorted(files)
    assert verify_manifest(out)["package_version"] == "1.2.3"
    (out / "code" / "inference.py").write_text("tampered")
    with pytest.raises(ManifestError, match="code/inference.py"):
        verify_manifest(out)
    (out / "code" / "inference.py").unlink()
    with pytest.raises(ManifestError, match="missing"):
        verify_manifest(out)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("../escape.txt", "outside|'\\.\\.'"),
        ("code/../../escape.txt", "outside|'\\.\\.'"),
        ("/etc/evil.txt", "absolute"),
    ],
)
def test_extraction_refuses_paths_outside_target(
    tmp_path: Path, name: str, message: str
) -> None:
    archive = _hostile_archive(tmp_path / "bad.tar.gz", tarfile.TarInfo(name))
    target = tmp_path / "deep" / "target"
    with pytest.raises(UnsafeArchiveError, match=message):
        safe_extract(archive, target)
    assert not (tmp_path / "deep" / "escape.txt").exists()
    assert not (tmp_path / "escape.txt").exists()
    assert list(target.iterdir()) == []  # nothing extracted, not even the fine member
    with pytest.raises(UnsafeArchiveError):
        read_tar_gz(archive)


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE])
def test_extraction_refuses_links(tmp_path: Path, kind: bytes) -> None:
    link = tarfile.TarInfo("code/link")
    link.type = kind
    link.linkname = "/etc/passwd"
    archive = _hostile_archive(tmp_path / "link.tar.gz", link)
    with pytest.raises(UnsafeArchiveError, match="link"):
        safe_extract(archive, tmp_path / "target")
    assert not (tmp_path / "target" / "code").exists()


def test_extraction_refuses_devices(tmp_path: Path) -> None:
    fifo = tarfile.TarInfo("pipe")
    fifo.type = tarfile.FIFOTYPE
    archive = _hostile_archive(tmp_path / "fifo.tar.gz", fifo)
    with pytest.raises(UnsafeArchiveError, match="not a regular file"):
        safe_extract(archive, tmp_path / "target")


def test_extraction_refuses_writing_through_existing_symlink(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (target / "code").symlink_to(outside)
    archive = write_tar_gz({"code/x.py": b"x"}, tmp_path / "ok.tar.gz")
    with pytest.raises(UnsafeArchiveError, match="outside"):
        safe_extract(archive, target)
    assert list(outside.iterdir()) == []


def test_archive_names_must_be_relative() -> None:
    with pytest.raises(UnsafeArchiveError):
        tar_gz_bytes({"/abs.txt": b""})
    with pytest.raises(UnsafeArchiveError):
        tar_gz_bytes({"a/../../b": b""})
