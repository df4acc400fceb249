"""Training checkpoints: one file per run, rewritten atomically after every epoch.

The checkpoint holds everything needed to continue a run exactly where it stopped:
model, optimiser, scheduler and gradient-scaler states, the finished epoch, the best
metric and best weights so far, the early-stopping counter, the history, the sampler
state and the random-number generator states of every rank (Python, NumPy, torch CPU and
CUDA). It is a ``torch.save`` file read back with ``weights_only=True`` (no arbitrary
pickle); NumPy's generator state is stored as plain lists for that reason.

The folder may be local or any fsspec URL (``s3://...``). Local writes go to a temporary
file in the same folder that is then renamed over the old checkpoint; object stores
replace an object in one PUT. A reader therefore sees the previous checkpoint or the new
one, never half of one.
"""

from __future__ import annotations

import io
import json
import logging
import os
import random
from collections.abc import Mapping
from typing import Any

import fsspec
import numpy as np
import torch

from tsa_kedro.files import write_bytes_atomically

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "training_state.pt"


class CheckpointError(RuntimeError):
    """A checkpoint that exists but cannot be used; names the file."""


class CheckpointStore:
    """Reads and writes the checkpoint file ``<directory>/training_state.pt``."""

    def __init__(self, directory: str):
        protocol, path = fsspec.core.split_protocol(str(directory))
        protocol = protocol or "file"
        if protocol == "file":
            path = os.path.abspath(path)
        self.protocol = protocol
        self.fs = fsspec.filesystem(protocol)
        self.directory = path
        self.path = f"{path.rstrip('/')}/{CHECKPOINT_NAME}"

    @property
    def url(self) -> str:
        """The checkpoint's location as written in messages."""
        return (
            self.path if self.protocol == "file" else f"{self.protocol}://{self.path}"
        )

    def exists(self) -> bool:
        """Whether a checkpoint file is present."""
        return self.fs.exists(self.path)

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` atomically (temporary file and rename, or one PUT)."""
        buffer = io.BytesIO()
        torch.save(state, buffer)
        payload = buffer.getvalue()
        if self.protocol != "file":
            self.fs.pipe_file(self.path, payload)
            return
        write_bytes_atomically(self.path, payload, durable=True)

    def load(self) -> dict[str, Any] | None:
        """The checkpoint's state, or ``None`` when there is no checkpoint.

        Raises:
            CheckpointError: If the file exists but cannot be read or lacks the fields
                of a training checkpoint (for example a truncated or foreign file).
        """
        if not self.exists():
            return None
        try:
            payload = self.fs.cat_file(self.path)
            state = torch.load(
                io.BytesIO(payload), weights_only=True, map_location="cpu"
            )
        except Exception as error:
            raise CheckpointError(
                f"checkpoint {self.url} is corrupt or unreadable ({type(error).__name__}: "
                f"{error}). Delete it to start training afresh, or restore a good copy."
            ) from error
        missing = [key for key in REQUIRED_FIELDS if key not in state]
        if not isinstance(state, dict) or missing:
            raise CheckpointError(
                f"checkpoint {self.url} is not a training checkpoint (missing {missing})"
            )
        return state


# Training parameters that may change when an unfinished run is resumed: neither the
# model nor the order in which batches are drawn depends on them (the sampler is seeded
# by ``seed`` and the epoch number). ``epochs`` stretches or shrinks the OneCycle
# learning-rate schedule from the step the run stopped at; ``patience`` is applied to
# the early-stopping counter saved in the checkpoint. Settings outside the identity
# (``checkpoint_dir``, ``resume``, ``num_threads``, ``progress``, ``eval_batch_size``,
# ``find_unused_parameters``, ``compile_on_gpu``) may change as well.
RESUMABLE_CHANGES = frozenset({"settings.epochs", "settings.patience"})

_IDENTITY_NAMES = {
    "settings": "training parameter",
    "run": "run setting",
    "train_rows": "rows of the training data",
    "vali_rows": "rows of the validation data",
    "train_digest": "content (labels, order ids) of the training data",
    "vali_digest": "content (labels, order ids) of the validation data",
    "world_size": "world size (processes)",
}


def portable_identity(identity: Mapping[str, Any]) -> dict[str, Any]:
    """``identity`` as plain JSON types, so that ``weights_only`` loading accepts it."""
    return json.loads(json.dumps(identity, sort_keys=True, default=str))


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def identity_changes(
    saved: Mapping[str, Any], current: Mapping[str, Any]
) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (saved value, current value)}`` for every field that differs."""
    before = _flatten(portable_identity(saved))
    after = _flatten(portable_identity(current))
    return {
        key: (before.get(key), after.get(key))
        for key in sorted(before.keys() | after.keys())
        if before.get(key) != after.get(key)
    }


def describe_change(key: str, saved: Any, current: Any) -> str:
    """One changed identity field in words, e.g. ``training parameter lr (checkpoint
    0.001, now 0.002)``."""
    head, _, rest = key.partition(".")
    name = _IDENTITY_NAMES.get(head, head)
    label = f"{name} {rest}" if rest else name
    if head.endswith("_digest"):
        return f"{label} (changed)"
    return f"{label} (checkpoint {saved!r}, now {current!r})"


def check_resumable(
    url: str, saved: Mapping[str, Any], current: Mapping[str, Any]
) -> dict[str, tuple[Any, Any]]:
    """The allowed changes between an unfinished run and the run about to resume it.

    Rejected: any difference besides :data:`RESUMABLE_CHANGES` (model configuration,
    other training parameters, the data, the world size).

    Returns:
        ``{dotted key: (saved value, current value)}`` of the allowed changes.

    Raises:
        CheckpointError: Naming the file and every field that may not change.
    """
    changes = identity_changes(saved, current)
    refused = {k: v for k, v in changes.items() if k not in RESUMABLE_CHANGES}
    if refused:
        details = "; ".join(describe_change(k, *v) for k, v in refused.items())
        raise CheckpointError(
            f"checkpoint {url} belongs to an unfinished run with other settings: "
            f"{details}. Delete it (or set resume: false) to train afresh, or restore "
            "those settings; only epochs and patience may change when resuming."
        )
    return changes


REQUIRED_FIELDS = (
    "fingerprint",
    "epoch",
    "completed",
    "model",
    "optimizer",
    "scheduler",
    "scaler",
    "best_metric",
    "best_epoch",
    "best_weights",
    "epochs_without_improvement",
    "history",
    "sampler",
    "rng",
)


def capture_rng_state() -> dict[str, Any]:
    """This process's random-number generator states, in ``weights_only`` types."""
    numpy_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": numpy_state["bit_generator"],
            "key": numpy_state["state"]["key"].tolist(),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    random.setstate(_as_tuples(state["python"]))
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["bit_generator"],
            np.asarray(numpy_state["key"], dtype=np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["gauss"],
        )
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value: Any) -> Any:
    """``random.setstate`` wants tuples where a round trip may give lists."""
    if isinstance(value, list | tuple):
        return tuple(_as_tuples(item) for item in value)
    return value
