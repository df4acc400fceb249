"""Scoring a tensor bundle with the model: the one loop that every job uses.

Training (validation after each epoch, the calibration scores), the serving handler
and batch scoring all turn a bundle (docs/source/architecture.md) into class-1
probabilities here, so they batch, move to the device and read the logits alike.
``choose_device`` is the one place where "use the GPU when there is one" is decided.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from tsa_kedro.features.contract import DENSE_KEY, gather_batch, model_arguments
from tsa_kedro.models.tsa import class1_probability

logger = logging.getLogger(__name__)

DEVICE_VARIABLE = "TSA_DEVICE"


def choose_device(requested: str | None = None) -> torch.device:
    """The device to score or train on.

    ``requested`` (else the ``TSA_DEVICE`` environment variable, else ``auto``):
    ``auto`` is the first GPU when CUDA is available, the CPU otherwise; ``cpu``,
    ``cuda`` or ``cuda:<n>`` name one. A CUDA device asked for where CUDA is not
    available falls back to the CPU with a warning (CI and laptops run the same
    configuration as a GPU host).
    """
    choice = (requested or os.environ.get(DEVICE_VARIABLE) or "auto").lower()
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice.startswith("cuda") and not torch.cuda.is_available():
        logger.warning(
            "device %s requested but CUDA is not available; using CPU", choice
        )
        return torch.device("cpu")
    return torch.device(choice)


def to_device(
    batch: Mapping[str, torch.Tensor], device: torch.device
) -> dict[str, torch.Tensor]:
    """``batch`` on ``device`` (the same tensors on the CPU)."""
    if device.type == "cpu":
        return dict(batch)
    # pinned host memory lets the copy overlap the previous batch's compute
    return {
        key: value.pin_memory().to(device, non_blocking=True)
        for key, value in batch.items()
    }


def score_bundle(
    model: Callable[..., torch.Tensor],
    bundle: Mapping[str, Any],
    batch_size: int,
    device: torch.device,
    rows: np.ndarray | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> np.ndarray:
    """Class-1 probabilities of ``rows`` of ``bundle`` (all rows by default), in order.

    Args:
        model: The eager model (put in eval mode by the caller) or anything called
            like it, such as the serving bundle's compiled artefact.
        bundle: The tensor bundle (arrays by the contract's names).
        batch_size: Rows per forward pass.
        device: Where the batches go (the model must already be there).
        rows: Row positions to score; None scores every row.
        autocast: A context for each forward pass (mixed precision on a GPU).

    Returns:
        float32 array, one probability per row scored.
    """
    if rows is None:
        rows = np.arange(len(bundle[DENSE_KEY]))
    parts = []
    with torch.inference_mode():
        for first in range(0, rows.size, batch_size):
            batch = gather_batch(bundle, rows[first : first + batch_size])
            with autocast():
                logits = model(*model_arguments(to_device(batch, device)))
            parts.append(class1_probability(logits).cpu().numpy())
    return (
        np.concatenate(parts).astype(np.float32) if parts else np.empty(0, np.float32)
    )
