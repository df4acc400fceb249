"""The bundle's compiled model: the trained network as an ONNX graph, run by ONNX Runtime.

The package stage exports the eager model (``bundle.export_onnx``) into
``model.onnx`` with a dynamic batch dimension. At load time the handler opens it with
ONNX Runtime's CPU provider and checks it against the eager model on a probe batch
(``probe_inputs``); a missing file, a file that does not load (``onnxruntime`` absent,
a corrupt graph) or scores that disagree leave the handler on the eager model, with
the reason logged. Imports neither Kedro nor R; ``onnxruntime`` is imported only when
an artefact is loaded.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from tsa_kedro.models.config import TSAConfig
from tsa_kedro.models.tsa import class1_probability

logger = logging.getLogger(__name__)

INPUT_NAMES = (
    "x_seq_cat_cid",
    "x_seq_num_cid",
    "x_seq_cat_ccid",
    "x_seq_num_ccid",
    "x_num",
)
OUTPUT_NAME = "logits"
# Largest difference of class-1 probabilities tolerated between artefact and eager
# model on the probe batch (measured differences are about 1e-7).
PROBE_TOLERANCE = 1e-5
_NUMPY_TYPES = {
    "tensor(float)": np.float32,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
}


class CompiledModel:
    """An ONNX Runtime session with the eager model's call signature (CPU).

    Args:
        path: The ``model.onnx`` file.
        threads: Intra-op threads; by default torch's current count, so the
            artefact uses the cores the eager model would.

    Raises:
        ImportError: ``onnxruntime`` is not installed.
        Exception: Whatever ONNX Runtime raises for a file it cannot load.
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime  # noqa: PLC0415 - optional: only bundles with an artefact

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        self.input_types = [
            _NUMPY_TYPES[node.type] for node in self.session.get_inputs()
        ]

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        """The five model inputs (CPU tensors) -> logits (B, 2), like the eager model."""
        feed = {
            name: tensor.numpy().astype(dtype, copy=False)
            for name, tensor, dtype in zip(
                INPUT_NAMES, inputs, self.input_types, strict=True
            )
        }
        (logits,) = self.session.run([OUTPUT_NAME], feed)
        return torch.from_numpy(logits)


def probe_inputs(config: TSAConfig, batch: int = 2, seed: int = 0) -> tuple:
    """A seeded batch of well-formed model inputs: histories of different lengths
    (one order without card history), categorical indices as int32.

    Used to export the model and to check an artefact against the eager model.
    """
    g = torch.Generator().manual_seed(seed)
    L = config.seq_len
    steps_back = torch.arange(L - 1, -1, -1).float()  # (L,)

    def sequence(lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        real = steps_back[None] < lengths[:, None]  # (B, L)
        cat = torch.randint(
            1, config.vocab_size, (batch, L, config.n_cat_features), generator=g
        )
        num = torch.rand(batch, L, config.n_num_features + 2, generator=g)
        num[..., -2] = steps_back * 86_400.0
        num[..., -1] = 1.0
        return (cat * real[..., None]).to(torch.int32), num * real[..., None]

    cid_lengths = torch.arange(batch) % L + 1
    ccid_lengths = (torch.arange(batch) * 3) % L + 1  # order 0: no card history
    x_num = torch.rand(batch, config.n_eng_features, generator=g)
    return (*sequence(cid_lengths), *sequence(ccid_lengths), x_num)


def load_checked(
    path: Path, model: torch.nn.Module, config: TSAConfig
) -> CompiledModel | None:
    """The artefact at ``path`` when it loads and scores like ``model``, else None.

    Every reason to fall back to the eager model is logged: no file, a file that
    ONNX Runtime cannot load, or probe scores that differ from the eager model's by
    more than ``PROBE_TOLERANCE``.
    """
    if not path.is_file():
        logger.info("no compiled model in the bundle (%s): serving eager", path.name)
        return None
    try:
        compiled = CompiledModel(path)
        probe = probe_inputs(config, batch=3)
        with torch.inference_mode():
            eager = class1_probability(model.eval()(*probe))
        scores = class1_probability(compiled(*probe))
        difference = float((scores - eager).abs().max())
    except Exception as error:  # noqa: BLE001 - any load failure means eager
        logger.warning(
            "compiled model %s does not load (%s: %s): serving eager",
            path.name,
            type(error).__name__,
            str(error).splitlines()[0][:300] if str(error) else "",
        )
        return None
    if not difference <= PROBE_TOLERANCE:
        logger.warning(
            "compiled model %s scores differ from the eager model by %.3g: serving "
            "eager",
            path.name,
            difference,
        )
        return None
    logger.info("serving the compiled model %s (ONNX Runtime, CPU)", path.name)
    return compiled
