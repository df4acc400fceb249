"""Requests on a GPU: the eager model replayed as CUDA graphs.

Scoring one order eagerly on a GPU launches about a thousand small kernels, and the
launches, not the arithmetic, set the latency: 31 ms p50 for one production-width
order on an H200 against 1.9 ms for the same forward pass captured once as a CUDA graph
and replayed (``python -m benchmarks.gpu``, docs/source/benchmarks.md).

A graph has fixed shapes, so ``CudaGraphModel`` keeps one graph per batch-size bucket
(1, 2, 4, ... up to ``max_batch``), each captured on its first use. A batch is padded to
its bucket by repeating its first order (always a valid order, unlike zeros: the last
history row must be real), and the padded rows' logits are dropped. Larger batches
run eagerly: at that size the launches are a small part of the time.

Every capture is checked: the replayed logits of the batch that triggered it must equal
the eager model's within ``CHECK_TOLERANCE``. A capture that fails (a model with a
host synchronisation in its forward pass, such as data-dependent expert routing) or
disagrees turns graphs off for the predictor's lifetime, with the reason logged, and
the eager model answers; nothing is ever answered from an unchecked graph.

Replays share static input buffers, so calls are serialised by a lock.
"""

from __future__ import annotations

import logging
import threading

import torch

from tsa_kedro.models.tsa import class1_probability

logger = logging.getLogger(__name__)

# Largest difference of class-1 probabilities tolerated between a replayed graph and
# the eager model on the capturing batch (the same kernels run, so they agree to
# rounding).
CHECK_TOLERANCE = 1e-5
WARM_UP_CALLS = 3


def bucket_size(n_rows: int, max_batch: int) -> int | None:
    """The graph bucket of a batch of ``n_rows``: the next power of two, or None
    (run eagerly) above ``max_batch`` or for an empty batch."""
    if n_rows < 1 or n_rows > max_batch:
        return None
    return 1 << (n_rows - 1).bit_length()


def pad_rows(tensor: torch.Tensor, size: int) -> torch.Tensor:
    """``tensor`` with its first row repeated up to ``size`` rows."""
    missing = size - tensor.shape[0]
    if missing <= 0:
        return tensor
    return torch.cat([tensor, tensor[:1].expand(missing, *tensor.shape[1:])])


class _Captured:
    """One bucket's graph: its static inputs and the output the replay writes."""

    def __init__(self, model: torch.nn.Module, inputs: tuple[torch.Tensor, ...]):
        self.inputs = tuple(t.clone() for t in inputs)
        side = torch.cuda.Stream(inputs[0].device)
        side.wait_stream(torch.cuda.current_stream(inputs[0].device))
        with torch.cuda.stream(side):
            for _ in range(WARM_UP_CALLS):  # lazy initialisation outside the capture
                model(*self.inputs)
        torch.cuda.current_stream(inputs[0].device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.output = model(*self.inputs)

    def __call__(self, inputs: tuple[torch.Tensor, ...], n_rows: int) -> torch.Tensor:
        for static, value in zip(self.inputs, inputs, strict=True):
            static.copy_(value)
        self.graph.replay()
        return self.output[:n_rows].clone()


class CudaGraphModel:
    """The eager model's call signature, answered from CUDA graphs where they apply.

    Args:
        model: The eager model, in eval mode, on a CUDA device.
        max_batch: The largest batch replayed from a graph (0: never; every call
            runs eagerly).

    Raises:
        ValueError: ``model`` is not on a CUDA device, or ``max_batch`` is negative.
    """

    def __init__(self, model: torch.nn.Module, max_batch: int = 32) -> None:
        device = next(model.parameters()).device
        if device.type != "cuda":
            raise ValueError(
                f"CUDA graphs need the model on a CUDA device; it is on {device}"
            )
        if max_batch < 0:
            raise ValueError(f"cuda_graph_max_batch must be >= 0, got {max_batch}")
        self.model = model
        self.max_batch = int(max_batch)
        self.graphs: dict[int, _Captured] = {}
        self.disabled_reason: str | None = None
        self._lock = threading.Lock()

    @torch.inference_mode()
    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        """The five model inputs (on the model's device) -> logits (B, 2)."""
        n_rows = inputs[0].shape[0]
        size = bucket_size(n_rows, self.max_batch)
        if size is None or self.disabled_reason is not None:
            return self.model(*inputs)
        padded = tuple(pad_rows(t, size) for t in inputs)
        with self._lock:
            captured = self.graphs.get(size)
            if captured is None:
                captured = self._capture(size, padded, inputs)
                if captured is None:
                    return self.model(*inputs)
            return captured(padded, n_rows)

    def _capture(
        self, size: int, padded: tuple[torch.Tensor, ...], inputs: tuple
    ) -> _Captured | None:
        """Capture and check bucket ``size``; None (graphs off) if either fails."""
        try:
            captured = _Captured(self.model, padded)
            replayed = captured(padded, inputs[0].shape[0])
        except Exception as error:  # noqa: BLE001 -- any capture failure: go eager
            self._disable(f"capturing batch size {size} failed: {error}")
            return None
        eager = self.model(*inputs)
        difference = float(
            (class1_probability(replayed) - class1_probability(eager)).abs().max()
        )
        if difference > CHECK_TOLERANCE:
            self._disable(
                f"the graph of batch size {size} differs from the eager model by "
                f"{difference:.2e} (tolerance {CHECK_TOLERANCE:.0e})"
            )
            return None
        self.graphs[size] = captured
        logger.info("captured the CUDA graph of batch size %d", size)
        return captured

    def _disable(self, reason: str) -> None:
        self.disabled_reason = reason
        self.graphs.clear()
        logger.warning("CUDA graphs off, serving the eager model: %s", reason)
