"""CUDA graphs for requests on a GPU (``serving/cuda_graph.py``).

The bucketing and padding run everywhere; the graphs themselves need a CUDA device
and are skipped without one. They import nothing from the test configuration files,
so on a GPU host they run alone: ``pytest --noconftest tests/serving/test_cuda_graph.py``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pandas as pd
import pytest
import torch

from tests.models.conftest import make_batch, tiny_config
from tsa_kedro.models import TwoSeqMoEOrderFeatureAttentionClassifier
from tsa_kedro.models.tsa import class1_probability
from tsa_kedro.serving.cuda_graph import CudaGraphModel, bucket_size, pad_rows
from tsa_kedro.serving.handler import TSAPredictor

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="CUDA graphs need a CUDA device")
CONFIG = tiny_config(time_delta_feature=True, history_match_features=True)


@pytest.mark.parametrize(
    ("rows", "bucket"),
    [(1, 1), (2, 2), (3, 4), (5, 8), (8, 8), (9, 16), (32, 32), (33, None), (0, None)],
)
def test_a_batch_goes_to_the_next_power_of_two_up_to_the_largest(rows, bucket):
    assert bucket_size(rows, max_batch=32) == bucket


def test_no_bucket_when_graphs_are_off():
    assert bucket_size(1, max_batch=0) is None


def test_padding_repeats_the_first_order():
    batch = make_batch(CONFIG, [3, 7, 1], [1, 2, 7], seed=1)
    padded = [pad_rows(t, 4) for t in batch]
    for original, grown in zip(batch, padded, strict=True):
        assert grown.shape[0] == 4
        torch.testing.assert_close(grown[:3], original, rtol=0, atol=0)
        torch.testing.assert_close(grown[3], original[0], rtol=0, atol=0)
    assert pad_rows(batch[0], 3) is batch[0]


def test_a_model_on_the_cpu_is_refused_by_name():
    model = TwoSeqMoEOrderFeatureAttentionClassifier(CONFIG).eval()
    with pytest.raises(ValueError, match="CUDA device; it is on cpu"):
        CudaGraphModel(model)


@pytest.fixture(scope="module")
def gpu_model():
    if not CUDA:
        pytest.skip("CUDA graphs need a CUDA device")
    torch.manual_seed(0)
    return TwoSeqMoEOrderFeatureAttentionClassifier(CONFIG).cuda().eval()


def _on_gpu(batch):
    return tuple(t.cuda() for t in batch)


@needs_cuda
def test_negative_largest_batch_is_refused(gpu_model):
    with pytest.raises(ValueError, match="cuda_graph_max_batch"):
        CudaGraphModel(gpu_model, max_batch=-1)


@needs_cuda
@pytest.mark.parametrize("rows", [1, 3, 8, 9])
def test_replayed_graphs_score_like_the_eager_model(gpu_model, rows):
    graphs = CudaGraphModel(gpu_model, max_batch=16)
    lengths = [(i % CONFIG.seq_len) + 1 for i in range(rows)]
    for seed in (1, 2):  # the second call replays the graph captured by the first
        batch = _on_gpu(make_batch(CONFIG, lengths, lengths[::-1], seed=seed))
        with torch.inference_mode():
            eager = class1_probability(gpu_model(*batch))
        replayed = class1_probability(graphs(*batch))
        assert replayed.shape == (rows,)
        torch.testing.assert_close(replayed, eager, rtol=0, atol=1e-5)
    assert list(graphs.graphs) == [bucket_size(rows, 16)]
    assert graphs.disabled_reason is None


@needs_cuda
def test_batches_above_the_largest_bucket_run_eagerly(gpu_model):
    graphs = CudaGraphModel(gpu_model, max_batch=4)
    batch = _on_gpu(make_batch(CONFIG, [2] * 5, [1] * 5, seed=3))
    with torch.inference_mode():
        eager = class1_probability(gpu_model(*batch))
    torch.testing.assert_close(
        class1_probability(graphs(*batch)), eager, rtol=0, atol=0
    )
    assert graphs.graphs == {}


class _SyncsTheHost(torch.nn.Module):
    """A forward pass that reads a value back to the host: it cannot be captured."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        logits = self.model(*inputs)
        if logits.sum().item() > float("inf"):  # never true; the read is the point
            return -logits
        return logits


@needs_cuda
def test_a_forward_pass_that_cannot_be_captured_falls_back_to_eager(gpu_model, caplog):
    graphs = CudaGraphModel(_SyncsTheHost(gpu_model), max_batch=8)
    batch = _on_gpu(make_batch(CONFIG, [4, 2], [1, 3], seed=4))
    with torch.inference_mode():
        eager = class1_probability(gpu_model(*batch))
    with caplog.at_level(logging.WARNING, logger="tsa_kedro.serving.cuda_graph"):
        scores = class1_probability(graphs(*batch))
    torch.testing.assert_close(scores, eager, rtol=0, atol=0)
    assert "capturing batch size 2 failed" in graphs.disabled_reason
    assert "CUDA graphs off" in caplog.text
    # and it stays eager, also for other sizes
    first = tuple(t[:1] for t in batch)
    with torch.inference_mode():
        eager_first = class1_probability(gpu_model(*first))
    torch.testing.assert_close(
        class1_probability(graphs(*first)), eager_first, rtol=0, atol=0
    )
    assert graphs.graphs == {}


@needs_cuda
def test_the_handler_on_a_gpu_answers_like_the_cpu(request):
    """A packaged bundle served on the GPU through graphs and on the CPU: the same
    scores for its sample payload. The bundle is the tiny one of the serving tests,
    or the unpacked folder that ``TSA_GPU_BUNDLE`` names (with ``--noconftest``)."""
    folder = os.environ.get("TSA_GPU_BUNDLE") or request.getfixturevalue("model_dir")
    payload = pd.DataFrame(json.loads(Path(folder, "sample_payload.json").read_text()))
    gpu = TSAPredictor.from_model_dir(folder, device="cuda")
    cpu = TSAPredictor.from_model_dir(folder, device="cpu")
    assert isinstance(gpu.compiled, CudaGraphModel)
    on_gpu = gpu.predict(payload)
    on_cpu = cpu.predict(payload)
    assert gpu.compiled.graphs and gpu.compiled.disabled_reason is None
    for a, b in zip(on_gpu, on_cpu, strict=True):
        assert a["order_id"] == b["order_id"]
        assert a["score"] == pytest.approx(b["score"], abs=1e-5)
