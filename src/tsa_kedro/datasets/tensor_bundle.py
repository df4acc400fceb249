"""``TensorBundleDataset``: a named bundle of numpy arrays, one ``.npy`` per array.

Layout of a bundle directory::

    <filepath>/
        X_seq_cat_cid.npy  X_seq_num_cid.npy  ...  order_id.npy
        manifest.json      # written last: {"arrays": {name: {file, dtype, shape, sha256}}}

The manifest is the commit mark: a directory without it is "not saved". Locally a save
writes into a sibling temporary directory and renames it into place; on object stores
(``s3://``) the old manifest is deleted first and the new one written after every array.

A save is two steps that may run in different processes: ``stage`` writes the arrays
(under the staging directory locally, under the bundle's own prefix on object stores,
where no manifest makes them visible) and returns a small, picklable ``StagedBundle``
(paths, dtypes, shapes, checksums); ``save`` of that ``StagedBundle`` writes the manifest
and, locally, renames the staging directory into place. Saving arrays does both in one
process, so both routes leave the same bytes on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator, Mapping
from copy import deepcopy
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import PurePosixPath
from typing import Any

import fsspec
import numpy as np
from kedro.io.core import AbstractDataset, DatasetError, get_protocol_and_path

MANIFEST = "manifest.json"
FORMAT = "tsa-tensor-bundle"
FORMAT_VERSION = 1
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class _HashingWriter:
    """A write-only file wrapper that hashes what passes through it."""

    def __init__(self, stream: Any):
        self._stream = stream
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self._stream.write(data)


@dataclass(frozen=True)
class StagedBundle:
    """Arrays written by ``TensorBundleDataset.stage``, not yet committed.

    Attributes:
        target: The bundle directory they were staged for (without protocol).
        location: Where the array files are (the staging directory locally, the
            bundle directory itself on object stores).
        entries: The manifest entries of the arrays (file, dtype, shape, sha256).
        info: Free-form small metadata travelling with the staged arrays (e.g. a
            chunk's counts); not written anywhere by the dataset.
    """

    target: str
    location: str
    entries: Mapping[str, Mapping[str, Any]]
    info: Mapping[str, Any] = field(default_factory=dict)

    @property
    def shapes(self) -> dict[str, list[int]]:
        """The staged arrays' shapes by name."""
        return {name: list(entry["shape"]) for name, entry in self.entries.items()}


class TensorBundle(Mapping):
    """Read-only mapping of array name to array, read on first access.

    Local arrays are memory-mapped (``mmap_mode``); remote ones are downloaded when first
    used, so reading one small array of a bundle on S3 does not fetch the others. Every
    array is checked against the manifest's dtype and shape when it is read.
    """

    def __init__(self, dataset: TensorBundleDataset, manifest: Mapping[str, Any]):
        self._dataset = dataset
        self._manifest = manifest
        self._arrays: dict[str, np.ndarray] = {}

    @property
    def manifest(self) -> Mapping[str, Any]:
        """The bundle's manifest (names, files, dtypes, shapes, checksums)."""
        return self._manifest

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._manifest["arrays"]:
            raise KeyError(name)
        if name not in self._arrays:
            self._arrays[name] = self._dataset._read_array(
                name, self._manifest["arrays"][name]
            )
        return self._arrays[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._manifest["arrays"])

    def __len__(self) -> int:
        return len(self._manifest["arrays"])

    def __repr__(self) -> str:
        shapes = {k: v["shape"] for k, v in self._manifest["arrays"].items()}
        return f"TensorBundle({shapes})"


class TensorBundleDataset(AbstractDataset[Mapping[str, np.ndarray], TensorBundle]):
    """Saves a ``dict[str, numpy.ndarray]`` as ``.npy`` files plus ``manifest.json``.

    Loading returns a ``TensorBundle`` (a read-only mapping). Arrays never go through
    pickle: object arrays are rejected on save and ``allow_pickle=False`` on load.

    ``filepath`` is the bundle directory; a path ending in ``/manifest.json`` names the
    same directory, which lets ``partitions.PartitionedDataset`` list bundles by their
    manifests (``filename_suffix: /manifest.json``): a chunk whose save did not finish
    has no manifest and is not listed.

    Rejected: array names that are not plain file names, object (pickled) dtypes, a
    missing or corrupt manifest, and files whose dtype or shape differ from the
    manifest (or whose checksum differs, when ``verify_checksums`` is on); each error
    names the file.

    Example catalog entries:

    .. code-block:: yaml

        train.model_input:
          type: tsa_kedro.datasets.TensorBundleDataset
          filepath: ${globals:data_root}/05_model_input/train/model_input
          load_args:
            mmap_mode: r            # null reads arrays into memory
            verify_checksums: false

        train.tensor_chunks:
          type: partitions.PartitionedDataset
          path: ${globals:data_root}/05_model_input/train/tensor_chunks
          dataset: tsa_kedro.datasets.TensorBundleDataset
          filename_suffix: /manifest.json
          overwrite: true

    Example in Python:

    .. code-block:: python

        import numpy as np
        from tsa_kedro.datasets import TensorBundleDataset

        dataset = TensorBundleDataset(filepath="data/bundle")
        dataset.save(
            {"X": np.zeros((2, 3), np.float32), "Y": np.array([0, 1], np.int8)}
        )
        assert dataset.load()["X"].shape == (2, 3)
    """

    DEFAULT_LOAD_ARGS: dict[str, Any] = {"mmap_mode": "r", "verify_checksums": False}
    DEFAULT_SAVE_ARGS: dict[str, Any] = {"checksums": True}

    def __init__(
        self,
        *,
        filepath: str,
        load_args: dict[str, Any] | None = None,
        save_args: dict[str, Any] | None = None,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ):
        """Create a bundle dataset.

        Args:
            filepath: Bundle directory, local or any fsspec URL (``s3://bucket/x``).
            load_args: ``mmap_mode`` (``"r"`` by default, local files only; ``None``
                reads into memory) and ``verify_checksums`` (False by default).
            save_args: ``checksums`` (True by default): store each file's sha256.
            credentials: Passed to the fsspec filesystem (e.g. ``key``, ``secret``).
            fs_args: Extra arguments of the fsspec filesystem.
            metadata: Free-form metadata, ignored by the dataset (Kedro convention).
        """
        if filepath.rstrip("/").endswith("/" + MANIFEST):
            filepath = filepath.rstrip("/")[: -len(MANIFEST) - 1]
        protocol, path = get_protocol_and_path(filepath)
        self._protocol = protocol
        self._filepath = PurePosixPath(path)
        self._fs = fsspec.filesystem(
            protocol, **deepcopy(credentials or {}), **deepcopy(fs_args or {})
        )
        self._load_args = {**self.DEFAULT_LOAD_ARGS, **(load_args or {})}
        self._save_args = {**self.DEFAULT_SAVE_ARGS, **(save_args or {})}
        unknown = set(self._load_args) - set(self.DEFAULT_LOAD_ARGS)
        unknown |= set(self._save_args) - set(self.DEFAULT_SAVE_ARGS)
        if unknown:
            raise DatasetError(
                f"TensorBundleDataset: unknown arguments {sorted(unknown)}"
            )
        self.metadata = metadata

    @property
    def _is_local(self) -> bool:
        return self._protocol == "file"

    def _path(self, name: str) -> str:
        return str(self._filepath / name)

    def _describe(self) -> dict[str, Any]:
        return {
            "filepath": str(self._filepath),
            "protocol": self._protocol,
            "load_args": self._load_args,
            "save_args": self._save_args,
        }

    def _exists(self) -> bool:
        return self._fs.exists(self._path(MANIFEST))

    def _read_manifest(self) -> dict[str, Any]:
        path = self._path(MANIFEST)
        if not self._fs.exists(path):
            raise DatasetError(
                f"no tensor bundle at {self._filepath}: {path} is missing (never "
                f"saved, or its save did not finish)"
            )
        try:
            with self._fs.open(path, "rb") as stream:
                manifest = json.loads(stream.read())
            arrays = manifest["arrays"]
            if manifest.get("format") != FORMAT or not isinstance(arrays, dict):
                raise ValueError(f"not a {FORMAT} manifest")
            for name, entry in arrays.items():
                np.dtype(entry["dtype"])
                entry["shape"] = [int(d) for d in entry["shape"]]
                if not _NAME.match(name) or entry["file"] != f"{name}.npy":
                    raise ValueError(f"bad entry for array {name!r}")
        except (ValueError, KeyError, TypeError) as exc:
            raise DatasetError(f"corrupt tensor bundle manifest {path}: {exc}") from exc
        return manifest

    def _read_array(self, name: str, entry: Mapping[str, Any]) -> np.ndarray:
        path = self._path(entry["file"])
        if not self._fs.exists(path):
            raise DatasetError(f"tensor bundle file {path} is missing")
        verify = self._load_args["verify_checksums"] and entry.get("sha256")
        if verify:
            digest = hashlib.sha256()
            with self._fs.open(path, "rb") as stream:
                for block in iter(lambda: stream.read(1 << 24), b""):
                    digest.update(block)
            if digest.hexdigest() != entry["sha256"]:
                raise DatasetError(f"checksum mismatch for tensor bundle file {path}")
        mmap_mode = self._load_args["mmap_mode"]
        try:
            if self._is_local and mmap_mode and all(entry["shape"]):
                array = np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
            else:
                with self._fs.open(path, "rb") as stream:
                    array = np.load(BytesIO(stream.read()), allow_pickle=False)
        except ValueError as exc:
            raise DatasetError(f"cannot read tensor bundle file {path}: {exc}") from exc
        if array.dtype != np.dtype(entry["dtype"]):
            raise DatasetError(
                f"tensor bundle file {path} holds dtype {array.dtype}, manifest says "
                f"{entry['dtype']}"
            )
        if list(array.shape) != entry["shape"]:
            raise DatasetError(
                f"tensor bundle file {path} has shape {list(array.shape)}, manifest "
                f"says {entry['shape']}"
            )
        return array

    def load(self) -> TensorBundle:
        """Read the manifest and return the bundle (arrays read on first access)."""
        return TensorBundle(self, self._read_manifest())

    def _write_arrays(
        self, arrays: Mapping[str, np.ndarray], directory: str
    ) -> dict[str, dict[str, Any]]:
        entries = {}
        for name, array in arrays.items():
            path = f"{directory}/{name}.npy"
            try:
                with self._fs.open(path, "wb") as stream:
                    writer = _HashingWriter(stream)
                    np.save(writer, array, allow_pickle=False)
            except OSError as exc:
                raise DatasetError(
                    f"cannot write tensor bundle file {path}: {exc}"
                ) from exc
            entries[name] = {
                "file": f"{name}.npy",
                "dtype": array.dtype.str,
                "shape": list(array.shape),
            }
            if self._save_args["checksums"]:
                entries[name]["sha256"] = writer.digest.hexdigest()
        return entries

    @staticmethod
    def _checked_arrays(data: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        arrays = {}
        for name, value in data.items():
            if not isinstance(name, str) or not _NAME.match(name):
                raise DatasetError(
                    f"tensor bundle array name {name!r} is not a plain file name"
                )
            array = np.asarray(value)
            if array.dtype.hasobject:
                raise DatasetError(
                    f"tensor bundle array {name!r} has dtype object; convert it to a "
                    f"numeric or fixed-width string dtype (no pickle)"
                )
            arrays[name] = array
        return arrays

    def stage(
        self, data: Mapping[str, np.ndarray], info: Mapping[str, Any] | None = None
    ) -> StagedBundle:
        """Write every array without committing: nothing is visible until ``save``
        of the returned ``StagedBundle`` writes the manifest.

        Locally the arrays go to a new sibling staging directory
        (``<filepath>.tmp-<hex>``); on object stores the bundle's manifest is deleted
        first, stale files of other names removed, and the arrays written under the
        bundle's own prefix. On failure whatever was written is removed.

        Args:
            data: The arrays by name.
            info: Small metadata carried by the ``StagedBundle`` (not written).

        Raises:
            DatasetError: Rejected names or object arrays (as ``save``), or a file
                that could not be written (naming it).
        """
        arrays = self._checked_arrays(data)
        target = str(self._filepath)
        if self._is_local:
            self._fs.makedirs(str(self._filepath.parent), exist_ok=True)
            location = f"{target}.tmp-{uuid.uuid4().hex}"
            self._fs.makedirs(location, exist_ok=True)
        else:
            location = target
            manifest = self._path(MANIFEST)
            if self._fs.exists(manifest):
                self._fs.rm(manifest)
            if self._fs.exists(target):
                stale = [
                    p
                    for p in self._fs.find(target)
                    if PurePosixPath(p).name not in {f"{n}.npy" for n in arrays}
                ]
                if stale:
                    self._fs.rm(stale)
        try:
            entries = self._write_arrays(arrays, location)
        except BaseException:
            self.discard(StagedBundle(target, location, dict.fromkeys(arrays, {})))
            raise
        return StagedBundle(target, location, entries, dict(info or {}))

    def _remove_files(self, location: str, names: Mapping[str, Any]) -> None:
        for name in names:
            path = f"{location}/{name}.npy"
            if self._fs.exists(path):
                self._fs.rm(path)

    def discard(self, staged: StagedBundle) -> None:
        """Remove what ``stage`` wrote and was not committed (local staging
        directory, or the arrays under an object store prefix without manifest)."""
        if self._is_local:
            shutil.rmtree(staged.location, ignore_errors=True)
        elif not self._fs.exists(f"{staged.location}/{MANIFEST}"):
            self._remove_files(staged.location, staged.entries)

    def _commit(self, staged: StagedBundle) -> None:
        target = str(self._filepath)
        if staged.target != target:
            self.discard(staged)
            raise DatasetError(
                f"tensor bundle staged for {staged.target} cannot be saved to {target}"
            )
        manifest = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "arrays": dict(staged.entries),
        }
        if not self._is_local:
            with self._fs.open(f"{target}/{MANIFEST}", "w") as stream:
                json.dump(manifest, stream, indent=2)
            return
        retired = None
        try:
            with self._fs.open(f"{staged.location}/{MANIFEST}", "w") as stream:
                json.dump(manifest, stream, indent=2)
            if os.path.exists(target):
                retired = f"{target}.old-{uuid.uuid4().hex}"
                os.rename(target, retired)
            os.rename(staged.location, target)
        finally:
            shutil.rmtree(staged.location, ignore_errors=True)
        if retired:
            shutil.rmtree(retired, ignore_errors=True)

    def save(self, data: Mapping[str, np.ndarray] | StagedBundle) -> None:
        """Write every array, then the manifest; or, given a ``StagedBundle`` of
        ``stage``, only commit it (manifest, and the rename into place locally).

        Raises:
            DatasetError: When a name is not a plain file name, an array holds Python
                objects (which would need pickle), a file cannot be written, or a
                ``StagedBundle`` was staged for another bundle directory (it is
                discarded).
        """
        staged = data if isinstance(data, StagedBundle) else self.stage(data)
        self._commit(staged)
