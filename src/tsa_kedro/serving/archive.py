"""Reproducible ``model.tar.gz`` archives, their manifest, and safe extraction.

Standard library only: the serving bundle ships this module, and the package and
register stages use it to build and inspect bundles.

A bundle built twice from the same files is byte-identical: members are sorted, every
member has the same owner, mode and modification time, and the gzip header carries no
time or file name. Only ``manifest.json`` changes between builds (its creation time).

Reading or extracting an archive refuses, member by member as the archive streams
past: absolute names and names with ``..``, links, devices and FIFOs, a name that
appears twice, more than ``max_members`` members and more than ``max_bytes`` bytes of
content in all (checked on each member's header, before its content is read), so a
small archive that expands to gigabytes is stopped before it fills memory or disk.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import posixpath
import tarfile
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from tsa_kedro.files import write_bytes_atomically

MANIFEST_NAME = "manifest.json"
# 1980-01-01: a fixed time that every archive tool accepts (zip cannot go earlier).
FIXED_MTIME = 315532800
_FILE_MODE = 0o644
_CHUNK = 1 << 20
# A production bundle holds about 60 files and 15 to 60 MiB (the weights dominate).
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_MAX_MEMBERS = 2000


class UnsafeArchiveError(ValueError):
    """An archive member would land outside the extraction folder, or is not a plain
    file or folder."""


class ArchiveTooLargeError(UnsafeArchiveError):
    """An archive holds more members or more bytes than the reader allows."""


class ManifestError(ValueError):
    """A bundle's files disagree with its manifest."""


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of the file at ``path``, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_member_name(name: str) -> str:
    """Normalise an archive member name; refuse absolute or escaping names."""
    if not name or "\\" in name or "\x00" in name:
        raise UnsafeArchiveError(f"archive member name {name!r} is not allowed")
    if name.startswith("/") or PurePosixPath(name).is_absolute():
        raise UnsafeArchiveError(f"archive member {name!r} has an absolute path")
    normalised = posixpath.normpath(name)
    if normalised == ".." or normalised.startswith("../") or normalised == ".":
        raise UnsafeArchiveError(
            f"archive member {name!r} points outside the extraction folder"
        )
    if ".." in PurePosixPath(name).parts:
        raise UnsafeArchiveError(f"archive member {name!r} contains '..'")
    return normalised


def build_manifest(
    files: Mapping[str, bytes], metadata: Mapping[str, Any]
) -> dict[str, Any]:
    """The manifest of a bundle: metadata plus size and SHA-256 of every file.

    Args:
        files: Archive path to content; must not contain ``manifest.json`` itself.
        metadata: Extra top-level fields (package version, git commit, run id, ...).

    Returns:
        A JSON-serialisable mapping with ``files`` sorted by path.
    """
    if MANIFEST_NAME in files:
        raise ValueError(f"{MANIFEST_NAME} is written by build_manifest, not passed in")
    return {
        **dict(metadata),
        "files": {
            name: {"sha256": sha256_bytes(files[name]), "size": len(files[name])}
            for name in sorted(files)
        },
    }


def write_tar_gz(files: Mapping[str, bytes], destination: str | os.PathLike) -> Path:
    """Write ``files`` as a reproducible gzip-compressed tar archive.

    The archive is written to a temporary name beside ``destination`` and renamed
    into place, so a failed build never leaves a partial archive behind.

    Args:
        files: Archive path (POSIX, relative) to content.
        destination: Path of the ``.tar.gz`` to write.

    Returns:
        The destination path.

    Raises:
        UnsafeArchiveError: A path is absolute or contains ``..``.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    payload = tar_gz_bytes(files)
    return write_bytes_atomically(destination, payload)


def tar_gz_bytes(files: Mapping[str, bytes]) -> bytes:
    """The bytes of a reproducible ``.tar.gz`` holding ``files`` (see module doc)."""
    names = {_check_member_name(name): name for name in files}
    if len(names) != len(files):
        raise UnsafeArchiveError("two archive paths normalise to the same member")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for member_name in sorted(names):
            content = files[names[member_name]]
            info = tarfile.TarInfo(member_name)
            info.size = len(content)
            info.mtime = FIXED_MTIME
            info.mode = _FILE_MODE
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(content))
    compressed = io.BytesIO()
    with gzip.GzipFile(
        filename="", mode="wb", fileobj=compressed, mtime=0, compresslevel=6
    ) as gz:
        gz.write(raw.getvalue())
    return compressed.getvalue()


def read_tar_gz(
    source: str | os.PathLike | bytes,
    *,
    name: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_members: int = DEFAULT_MAX_MEMBERS,
) -> dict[str, bytes]:
    """Every regular file of a ``.tar.gz`` (path or bytes), kept in memory.

    The archive is read in one streaming pass; each member is checked (see the module
    docstring) before its content is read.

    Args:
        source: Path of the archive, or its bytes.
        name: What error messages call the archive (default: the path, or
            ``archive bytes``).
        max_bytes: Most bytes of member content in all.
        max_members: Most members (files and folders).

    Returns:
        Member path (normalised) to content.

    Raises:
        ArchiveTooLargeError: More members or more bytes than allowed.
        UnsafeArchiveError: A member is unsafe or appears twice.
    """
    if isinstance(source, bytes):
        label = name or "archive bytes"
        opened = tarfile.open(fileobj=io.BytesIO(source), mode="r|gz")
    else:
        label = name or str(source)
        opened = tarfile.open(source, mode="r|gz")
    files: dict[str, bytes] = {}
    with opened as tar:
        for member in _checked_members(tar, label, None, max_bytes, max_members):
            if member.isfile():
                files[_check_member_name(member.name)] = tar.extractfile(member).read()
    return files


def _checked_members(
    tar: tarfile.TarFile,
    label: str,
    target: Path | None,
    max_bytes: int,
    max_members: int,
) -> Iterator[tarfile.TarInfo]:
    """The members of ``tar`` one by one, each after refusing anything unsafe (checked
    against ``target``'s real path too when one is given). Iterating a stream-mode
    archive reads one header at a time, so the limits stop it early."""
    seen: set[str] = set()
    total = 0
    for count, member in enumerate(tar, start=1):
        if count > max_members:
            raise ArchiveTooLargeError(
                f"archive {label} holds more than {max_members} members (the limit, "
                "max_members)"
            )
        total += member.size
        if total > max_bytes:
            raise ArchiveTooLargeError(
                f"archive {label} expands to more than {max_bytes} bytes (the limit, "
                f"max_bytes; member {member.name!r} alone declares {member.size})"
            )
        name = _check_member_name(member.name)
        if name in seen:
            raise UnsafeArchiveError(
                f"archive {label} holds member {member.name!r} more than once"
            )
        seen.add(name)
        if member.issym() or member.islnk():
            raise UnsafeArchiveError(
                f"archive member {member.name!r} is a link ({member.linkname!r}); "
                "links are not allowed in a model bundle"
            )
        if not (member.isfile() or member.isdir()):
            raise UnsafeArchiveError(
                f"archive member {member.name!r} is not a regular file or folder"
            )
        if target is not None:
            root = os.path.realpath(target)
            resolved = os.path.realpath(os.path.join(root, name))
            if os.path.commonpath([root, resolved]) != root:
                raise UnsafeArchiveError(
                    f"archive member {member.name!r} would be written outside {target}"
                )
        yield member


def safe_extract(
    archive: str | os.PathLike,
    target: str | os.PathLike,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_members: int = DEFAULT_MAX_MEMBERS,
) -> list[Path]:
    """Extract a ``.tar.gz`` into ``target``, refusing unsafe members.

    Rejected before anything is written: absolute member paths, paths with ``..``,
    paths that resolve outside ``target`` (also through an existing symlink in
    ``target``), symbolic and hard links, devices, FIFOs, a member name that appears
    twice, more than ``max_members`` members or more than ``max_bytes`` bytes of content.

    Args:
        archive: Path of the ``.tar.gz``.
        target: Folder to extract into (created if missing).
        max_bytes: Most bytes of member content in all.
        max_members: Most members (files and folders).

    Returns:
        The extracted regular files.

    Raises:
        ArchiveTooLargeError: More members or more bytes than allowed; nothing has
            been extracted.
        UnsafeArchiveError: A member is unsafe; nothing has been extracted.
    """
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    extracted: list[Path] = []
    with tarfile.open(archive, mode="r:gz") as tar:
        members = list(
            _checked_members(tar, str(archive), target, max_bytes, max_members)
        )
        for member in members:
            path = target / _check_member_name(member.name)
            if member.isdir():
                path.mkdir(parents=True, exist_ok=True)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as source, open(path, "wb") as sink:
                for block in iter(lambda s=source: s.read(_CHUNK), b""):
                    sink.write(block)
            extracted.append(path)
    return extracted


def verify_manifest(model_dir: str | os.PathLike) -> dict[str, Any]:
    """Check every file listed in ``model_dir/manifest.json`` against its SHA-256.

    Returns:
        The manifest.

    Raises:
        ManifestError: The manifest is missing or unreadable, or a file is missing or
            differs from its checksum.
    """
    model_dir = Path(model_dir)
    manifest_path = model_dir / MANIFEST_NAME
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ManifestError(
            f"cannot read bundle manifest {manifest_path}: {exc}"
        ) from exc
    for name, entry in files.items():
        path = model_dir / name
        if not path.is_file():
            raise ManifestError(
                f"bundle file {name} listed in {manifest_path} is missing"
            )
        actual = sha256_file(path)
        if actual != entry["sha256"]:
            raise ManifestError(
                f"bundle file {name} does not match {manifest_path}: sha256 {actual} "
                f"!= {entry['sha256']}"
            )
    return manifest
