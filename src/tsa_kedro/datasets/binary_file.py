"""A Kedro dataset for one opaque binary file (the ``model.tar.gz`` bundle)."""

from __future__ import annotations

from copy import deepcopy
from pathlib import PurePosixPath
from typing import Any

import fsspec
from kedro.io.core import AbstractDataset, DatasetError, get_protocol_and_path

from tsa_kedro.files import write_bytes_atomically


class BinaryFileDataset(AbstractDataset[bytes, bytes]):
    """Loads and saves the raw bytes of one file, locally or on any fsspec filesystem.

    Local saves go to a temporary name in the target folder and are renamed into
    place, so a failed save never leaves a truncated file under the final name.
    Saving anything but ``bytes`` is refused.

    Example catalog entry:

    .. code-block:: yaml

        model_package:
          type: tsa_kedro.datasets.binary_file.BinaryFileDataset
          filepath: ${globals:data_root}/06_models/model.tar.gz
    """

    def __init__(
        self,
        *,
        filepath: str,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Create the dataset.

        Args:
            filepath: Path or URI (``s3://...``) of the file.
            credentials: Passed to the fsspec filesystem.
            fs_args: Extra filesystem arguments.
            metadata: Free-form metadata, ignored by Kedro.
        """
        protocol, path = get_protocol_and_path(filepath)
        self._protocol = protocol
        self._filepath = PurePosixPath(path)
        self._fs = fsspec.filesystem(
            protocol, **deepcopy(credentials or {}), **deepcopy(fs_args or {})
        )
        self.metadata = metadata

    def _full_path(self) -> str:
        if self._protocol == "file":
            return str(self._filepath)
        return f"{self._protocol}://{self._filepath}"

    def load(self) -> bytes:
        """The file's bytes."""
        with self._fs.open(self._full_path(), "rb") as handle:
            return handle.read()

    def save(self, data: bytes) -> None:
        """Write ``data`` to the file (atomically when local)."""
        if not isinstance(data, bytes | bytearray):
            raise DatasetError(
                f"BinaryFileDataset({self._full_path()}) saves bytes, got "
                f"{type(data).__name__}"
            )
        if self._protocol == "file":
            write_bytes_atomically(self._filepath, bytes(data))
            return
        with self._fs.open(self._full_path(), "wb") as handle:
            handle.write(bytes(data))

    def _exists(self) -> bool:
        return self._fs.exists(self._full_path())

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._full_path()}
