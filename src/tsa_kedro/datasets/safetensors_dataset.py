"""``SafetensorsDataset``: a ``dict[str, torch.Tensor]`` as one safetensors file.

kedro-datasets 7.0.0 has no safetensors dataset among its stable datasets; the
experimental one writes through ``safetensors.save_file(data, fs_file.name)``, which
writes to a local path named like the remote key instead of through fsspec, so it cannot
write to S3. This one serialises to bytes and writes them through fsspec: on a local
disk to a temporary file that is renamed into place, on an object store in one PUT.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import fsspec
import torch
from kedro.io.core import AbstractDataset, DatasetError, get_protocol_and_path
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from tsa_kedro.files import write_bytes_atomically


class SafetensorsDataset(
    AbstractDataset[dict[str, torch.Tensor], dict[str, torch.Tensor]]
):
    """Loads and saves a model's ``state_dict`` as a safetensors file (no pickle).

    Rejected on save: anything but a mapping of names to tensors. Tensors are saved
    contiguous and on the CPU; tensors that share memory are copied first (safetensors
    refuses shared storage). Loading returns CPU tensors.

    Example (``conf/base/catalog_train.yml``):

    .. code-block:: yaml

        model_weights:
          type: tsa_kedro.datasets.safetensors_dataset.SafetensorsDataset
          filepath: ${globals:data_root}/06_models/model.safetensors
          metadata_fields:
            format: pt
    """

    def __init__(
        self,
        *,
        filepath: str,
        metadata_fields: dict[str, str] | None = None,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ):
        """Point the dataset at one file.

        Args:
            filepath: Local path or fsspec URL (``s3://bucket/key.safetensors``).
            metadata_fields: String key/values stored in the file's header.
            credentials: Passed to the fsspec filesystem.
            fs_args: Extra arguments of the fsspec filesystem.
            metadata: Free-form, ignored by Kedro.
        """
        protocol, path = get_protocol_and_path(filepath)
        self._protocol = protocol
        self._filepath = PurePosixPath(path)
        self._fs = fsspec.filesystem(protocol, **(credentials or {}), **(fs_args or {}))
        self._metadata_fields = dict(metadata_fields or {})
        self.metadata = metadata

    def _full_path(self) -> str:
        return str(self._filepath)

    def load(self) -> dict[str, torch.Tensor]:
        """Read every tensor of the file."""
        try:
            payload = self._fs.cat_file(self._full_path())
            return load_safetensors(payload)
        except FileNotFoundError:
            raise
        except Exception as error:
            raise DatasetError(
                f"{self._describe()['filepath']}: not a readable safetensors file "
                f"({error})"
            ) from error

    def save(self, data: dict[str, torch.Tensor]) -> None:
        """Write the tensors (temporary file and rename locally, one PUT remotely)."""
        if not isinstance(data, dict) or not all(
            isinstance(value, torch.Tensor) for value in data.values()
        ):
            raise DatasetError(
                f"{self._full_path()}: SafetensorsDataset saves a dict of tensors, "
                f"got {type(data).__name__}"
            )
        tensors = {
            name: tensor.detach().to("cpu").contiguous().clone()
            for name, tensor in data.items()
        }
        payload = save_safetensors(tensors, metadata=self._metadata_fields or None)
        path = self._full_path()
        if self._protocol != "file":
            self._fs.pipe_file(path, payload)
            return
        write_bytes_atomically(path, payload)

    def _exists(self) -> bool:
        return self._fs.exists(self._full_path())

    def _describe(self) -> dict[str, Any]:
        location = (
            str(self._filepath)
            if self._protocol == "file"
            else f"{self._protocol}://{self._filepath}"
        )
        return {"filepath": location, "protocol": self._protocol}
