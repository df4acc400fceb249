"""Training and inference on one CUDA GPU at production widths: where the step's time goes.

    python -m benchmarks.gpu --output benchmarks/results/gpu_h200.json \
        [--batches 640 2048 8192] [--budget-s 420] [--profile-output profile.txt] \
        [--bundle UNPACKED_MODEL_DIR] [--skip SECTION ...]

Sections, each written to ``--output`` as soon as it is measured (a run cut short
keeps what it finished), in this order:

* ``ceiling``: an 8192^3 bf16 matrix product, the rate this card reaches on random
  data (model FLOP utilisation is given against it and against the datasheet's
  989 TFLOP/s dense bf16);
* ``eager``: training samples/s of one optimiser step (bf16 autocast, fused Adam, the
  training loop's settings) per batch size, inputs already on the GPU, with FLOPs per
  sample from ``torch.utils.flop_counter``;
* ``profile``: the largest batch that fit, one step under ``torch.profiler``: the top
  kernels by GPU time and the GPU-busy share of the step's wall time;
* ``inference``: one order, p50/p99 ms, eager and replayed as a CUDA graph (bf16, by
  hand), and float32 as the serving handler runs it: eager against
  ``serving.cuda_graph.CudaGraphModel``, for one and for eight orders;
* ``serving`` (with ``--bundle``): ``TSAPredictor.predict`` of one order of a packaged
  bundle's sample payload, end to end (parsing, normalising, tensors, model,
  calibration), on the GPU with and without CUDA graphs and on the CPU; and the
  payload's scores on the GPU against the CPU;
* ``input_pipeline``: steps fed from memory-mapped bundles on local disk, batches
  gathered in the step's thread (``to_device(gather_batch(...))``) against
  ``training.data.BatchPrefetcher``; samples/s against on-GPU inputs gives the share
  of the step the GPU waits for data;
* ``temporal_bf16``: the same step with the temporal attention run in bf16 instead
  of float32 (speed and largest logit change; a measurement, not the model's code);
* ``embedding_gather``: the step with the categorical rows gathered in float32 (as
  before) against the autocast dtype (as now), in turns;
* ``training_loop``: epochs of ``training.loop`` itself (compiled on CUDA, prefetched
  from memory-mapped files) against the same compiled step on on-GPU inputs, for a
  short and a longer epoch, and the time to the first batch of an epoch (gathered,
  pinned and copied before the prefetcher runs ahead), so that the wait of an
  epoch's start is told apart from the wait of every step;
* ``batch_scoring``: ``models.predict.score_bundle`` (the loop that batch scoring,
  the handler and validation share) over a memory-mapped bundle on the GPU, float32 as
  it runs and under bf16 autocast: orders/s of the model stage of batch scoring;
* ``reducer_variants``: the feature-axis reducers of the order attention computed
  three ways, eager and compiled, in turns: ``plain`` (the code before the two
  changes below), ``aligned`` (feature counts and layer widths padded with zeros to
  multiples of 8, so every matrix product has 16-byte aligned rows) and ``model``
  (the model's code: aligned, and the numerical path's first layer one product of the
  values with the layer's weights folded into the embedding rows, instead of the
  (n_num, B*L, E) value-times-row tensor); largest logit difference against plain;
* ``ddp_compiled``: ``training.loop.fit`` with two ranks (gloo) sharing the GPU, the
  network compiled and not: the DDP and ``torch.compile`` code path runs, and both
  end with finite losses and nearby weights (a correctness check, not a speed);
* ``compiled``: ``torch.compile`` of the model at the fastest batch, samples/s and
  its profile's GPU-busy share.

Without a CUDA device the script says so and exits: these figures mean nothing on a CPU
(``benchmarks.model`` measures the CPU).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from benchmarks._presets import preset_config
from benchmarks.model import PRODUCTION_WIDTHS, flops_per_sample, make_inputs
from tsa_kedro.features.contract import gather_batch, model_arguments
from tsa_kedro.models import TwoSeqMoEOrderFeatureAttentionClassifier
from tsa_kedro.models import attention as attention_module
from tsa_kedro.models.feature_reduction import FeatureReducer, aligned
from tsa_kedro.models.predict import to_device
from tsa_kedro.models.tsa import class1_probability
from tsa_kedro.serving.cuda_graph import CudaGraphModel
from tsa_kedro.training.data import BatchPrefetcher
from tsa_kedro.training.loop import make_optimizer

DATASHEET_BF16_FLOPS = 989e12
FEATURES = ("X_seq_cat_cid", "X_seq_num_cid", "X_seq_cat_ccid", "X_seq_num_ccid")


class Budget:
    """Seconds left for the run; sections that would not fit are skipped."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()


def cuda_seconds(fn: Callable[[], None], repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls, timed with CUDA events."""
    times = []
    for _ in range(repeats):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return times


def build_model(vocab: int) -> TwoSeqMoEOrderFeatureAttentionClassifier:
    config = preset_config("production", **PRODUCTION_WIDTHS, vocab_size=vocab)
    torch.manual_seed(0)
    return TwoSeqMoEOrderFeatureAttentionClassifier(config).cuda()


def make_step(model, optimiser, inputs, labels) -> Callable[[], None]:
    """One optimiser step as the training loop takes it (bf16 autocast, fused Adam,
    gradient clipping)."""

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(*inputs)
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()

    return step


def gpu_inputs(model, batch: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    inputs = tuple(t.cuda() for t in make_inputs(model.config, batch, "full", g))
    labels = (torch.arange(batch, device="cuda") % 2).long()
    return inputs, labels


def samples_per_s(step, batch: int, warm_up: int = 3, repeats: int = 8) -> float:
    for _ in range(warm_up):
        step()
    torch.cuda.synchronize()
    return batch / statistics.median(cuda_seconds(step, repeats))


def ceiling() -> dict:
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    seconds = statistics.mean(cuda_seconds(lambda: a @ b, 10))
    return {"bf16_matmul_tflops": 2 * 8192**3 / seconds / 1e12}


def eager_sweep(model, batches: list[int], budget: Budget) -> dict:
    optimiser = make_optimizer(model.parameters(), lr=1e-4, weight_decay=0.0)
    small, _ = gpu_inputs(model, 64)
    result: dict = {
        "training_flops_per_sample": flops_per_sample(model, small, train=True),
        "samples_per_s": {},
    }
    model.train()
    for batch in batches:
        if budget.left() < 60:
            result["samples_per_s"][str(batch)] = "skipped: time budget"
            continue
        try:
            inputs, labels = gpu_inputs(model, batch)
            step = make_step(model, optimiser, inputs, labels)
            result["samples_per_s"][str(batch)] = samples_per_s(step, batch)
            result["peak_memory_gib_" + str(batch)] = (
                torch.cuda.max_memory_allocated() / 2**30
            )
        except torch.cuda.OutOfMemoryError:
            result["samples_per_s"][str(batch)] = "out of memory"
        finally:
            inputs = labels = step = None
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        print(json.dumps({"eager": result}), flush=True)
    return result


def profile_step(step, top: int = 25) -> tuple[dict, str]:
    """GPU-busy share of one profiled step and a table of its top kernels."""
    from torch.profiler import ProfilerActivity, profile  # noqa: PLC0415

    step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        started = time.perf_counter()
        step()
        torch.cuda.synchronize()
        wall = time.perf_counter() - started
    kernels = [e for e in prof.events() if e.device_type.name == "CUDA"]
    intervals = sorted(
        (e.time_range.start, e.time_range.end) for e in kernels if e.time_range
    )
    busy, end = 0.0, -1.0
    for start, stop in intervals:  # union of kernel intervals, microseconds
        if stop <= end:
            continue
        busy += stop - max(start, end)
        end = stop
    table = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=top)
    return {
        "wall_ms": 1000 * wall,
        "gpu_busy_ms": busy / 1000,
        "gpu_busy_share": busy / 1e6 / wall,
        "kernels_launched": len(kernels),
    }, table


def inference(model, repeats: int = 200) -> dict:
    """One order: eager (bf16 autocast) and a captured CUDA graph replayed."""
    model.eval()
    one, _ = gpu_inputs(model, 1, seed=5)

    def eager() -> None:
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            model(*one)

    for _ in range(20):
        eager()
    result = {"eager_ms": _percentiles(cuda_seconds(eager, repeats))}
    static = tuple(t.clone() for t in one)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.inference_mode():
        for _ in range(3):
            with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
                model(*static)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(graph):
        with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
            out = model(*static)

    def replay() -> None:
        for dst, src in zip(static, one, strict=True):
            dst.copy_(src)
        graph.replay()

    for _ in range(20):
        replay()
    result["cuda_graph_ms"] = _percentiles(cuda_seconds(replay, repeats))
    with torch.inference_mode():
        reference = model(*one)
    result["graph_max_abs_logit_difference"] = float(
        (out.float() - reference.float()).abs().max()
    )
    result["served_float32"] = served_float32(model, repeats)
    model.train()
    return result


def served_float32(model, repeats: int) -> dict:
    """float32, as the handler scores on a GPU: eager against ``CudaGraphModel``."""
    graphs = CudaGraphModel(model, max_batch=8)
    result: dict = {}
    for rows in (1, 8):
        inputs, _ = gpu_inputs(model, rows, seed=rows)

        def eager(inputs=inputs) -> None:
            with torch.inference_mode():
                model(*inputs)

        def replayed(inputs=inputs) -> None:
            graphs(*inputs)

        for fn in (eager, replayed):
            for _ in range(10):
                fn()
        with torch.inference_mode():
            difference = (
                (
                    class1_probability(graphs(*inputs))
                    - class1_probability(model(*inputs))
                )
                .abs()
                .max()
            )
        result[f"{rows}_orders"] = {
            "eager_ms": _percentiles(cuda_seconds(eager, repeats)),
            "cuda_graph_ms": _percentiles(cuda_seconds(replayed, repeats)),
            "max_probability_difference": float(difference),
        }
    result["graphs_captured"] = sorted(graphs.graphs)
    result["disabled_reason"] = graphs.disabled_reason
    return result


def serving(folder: Path, repeats: int = 100) -> dict:
    """``TSAPredictor.predict`` of one order, end to end, on the GPU with and without
    CUDA graphs and on the CPU; the sample payload's scores on the GPU against the CPU."""
    import pandas as pd  # noqa: PLC0415

    from tsa_kedro.serving.handler import TSAPredictor  # noqa: PLC0415

    payload = pd.DataFrame(json.loads((folder / "sample_payload.json").read_text()))
    one = payload.iloc[[0]]
    result: dict = {"orders_in_payload": len(payload)}
    scores = {}
    for name, device, graphs in (
        ("gpu_cuda_graphs", "cuda", True),
        ("gpu_eager", "cuda", False),
        ("cpu", "cpu", None),
    ):
        predictor = TSAPredictor.from_model_dir(folder, device=device)
        if graphs is False:
            predictor.compiled = None
        for _ in range(10):
            predictor.predict(one)
        seconds = []
        for _ in range(repeats):
            started = time.perf_counter()
            predictor.predict(one)
            seconds.append(time.perf_counter() - started)
        result[f"{name}_predict_ms"] = _percentiles(seconds)
        scores[name] = np.array([r["score"] for r in predictor.predict(payload)])
        if graphs:
            result["graphs_captured"] = sorted(predictor.compiled.graphs)
            result["disabled_reason"] = predictor.compiled.disabled_reason
    result["max_score_difference_graphs_vs_cpu"] = float(
        np.abs(scores["gpu_cuda_graphs"] - scores["cpu"]).max()
    )
    return result


def _percentiles(seconds: list[float]) -> dict:
    ms = sorted(1000 * s for s in seconds)
    return {"p50": ms[len(ms) // 2], "p99": ms[min(len(ms) - 1, int(0.99 * len(ms)))]}


def memory_mapped_bundle(
    model, batch: int, n_batches: int, folder: Path, distinct_rows: int | None = None
) -> dict:
    """A bundle of ``n_batches * batch`` rows in .npy files, opened memory-mapped.

    ``distinct_rows``: draw only that many random rows and repeat them (a large
    bundle in less time; the values do not matter to the speed)."""
    g = torch.Generator().manual_seed(7)
    rows = batch * n_batches
    chunk = min(batch, 4096)
    drawn: list[tuple] = []
    pieces: dict[str, list[np.ndarray]] = {key: [] for key in (*FEATURES, "X_num", "Y")}
    for start in range(0, rows, chunk):
        if distinct_rows is not None and start >= distinct_rows:
            tensors = drawn[(start // chunk) % len(drawn)]
        else:
            tensors = make_inputs(model.config, chunk, "full", g)
            drawn.append(tensors)
        for key, tensor in zip((*FEATURES, "X_num"), tensors, strict=True):
            pieces[key].append(tensor.numpy())
        pieces["Y"].append((np.arange(chunk) % 2).astype(np.int8))
    bundle = {}
    for key, parts in pieces.items():
        path = folder / f"{key}.npy"
        np.save(path, np.concatenate(parts)[:rows])
        bundle[key] = np.load(path, mmap_mode="r")
    return bundle


def input_pipeline(model, batch: int, budget: Budget) -> dict:
    """Steps fed from memory-mapped files: gathered in the step's thread against
    prefetched; and the same steps on inputs already on the GPU."""
    optimiser = make_optimizer(model.parameters(), lr=1e-4, weight_decay=0.0)
    n_batches = 6
    with tempfile.TemporaryDirectory() as folder:
        bundle = memory_mapped_bundle(model, batch, n_batches, Path(folder))
        batches = [
            np.sort(np.random.default_rng(i).permutation(batch * n_batches)[:batch])
            for i in range(n_batches)
        ]
        device = torch.device("cuda")

        def run(feed) -> float:
            torch.cuda.synchronize()
            started = time.perf_counter()
            for batch_tensors in feed():
                labels = batch_tensors["Y"]
                make_step(model, optimiser, model_arguments(batch_tensors), labels)()
            torch.cuda.synchronize()
            return batch * n_batches / (time.perf_counter() - started)

        def in_thread():
            for indices in batches:
                yield to_device(gather_batch(bundle, indices), device)

        def prefetched():
            for _, tensors in BatchPrefetcher(bundle, batches, device):
                yield tensors

        resident = [to_device(gather_batch(bundle, i), device) for i in batches]
        result: dict = {"batch": batch, "rows": batch * n_batches}
        run(lambda: iter(resident))  # warm-up
        for name, feed in (
            ("on_gpu", lambda: iter(resident)),
            ("gathered_in_step_thread", in_thread),
            ("prefetched", prefetched),
        ):
            if budget.left() < 30:
                result[name] = "skipped: time budget"
                continue
            result[name] = statistics.median(run(feed) for _ in range(2))
        for name in ("gathered_in_step_thread", "prefetched"):
            if isinstance(result.get(name), float):
                result[f"{name}_gpu_wait_share"] = 1 - result[name] / result["on_gpu"]
    return result


def temporal_bf16(model, batch: int) -> dict:
    """The step with the temporal attention's SDPA in bf16 (queries and keys rescaled
    in float32, then cast), against the model's float32 attention."""
    original = attention_module.temporal_attention

    def bf16_attention(q, k, v, mask, q_factor, k_factor):
        dtype = torch.bfloat16
        return torch.nn.functional.scaled_dot_product_attention(
            (q.float() * q_factor).to(dtype),
            (k.float() * k_factor).to(dtype),
            v.to(dtype),
            attn_mask=mask,
        ).float()

    optimiser = make_optimizer(model.parameters(), lr=1e-4, weight_decay=0.0)
    inputs, labels = gpu_inputs(model, batch)
    step = make_step(model, optimiser, inputs, labels)
    result = {"float32": samples_per_s(step, batch)}
    model.eval()
    one, _ = gpu_inputs(model, 256, seed=9)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        before = model(*one).float()
        attention_module.temporal_attention = bf16_attention
        try:
            after = model(*one).float()
        finally:
            attention_module.temporal_attention = original
    model.train()
    attention_module.temporal_attention = bf16_attention
    try:
        result["bf16"] = samples_per_s(step, batch)
    finally:
        attention_module.temporal_attention = original
    result["max_abs_logit_difference"] = float((before - after).abs().max())
    return result


def profiled(model, batch: int, tables: list[str]) -> dict:
    """One eager step at ``batch`` under the profiler."""
    optimiser = make_optimizer(model.parameters(), lr=1e-4, weight_decay=0.0)
    inputs, labels = gpu_inputs(model, batch)
    busy, table = profile_step(make_step(model, optimiser, inputs, labels))
    tables.append(f"eager, batch {batch}\n{table}")
    return {"batch": batch, **busy}


def embedding_gather(model, batch: int) -> dict:
    """The eager step with the categorical rows gathered in float32 and cast by the
    feature-axis MLP (the code before ``SharedEmbedding`` gathered in the autocast
    dtype) against the model as it is; largest logit difference under autocast."""
    from torch.nn import functional  # noqa: PLC0415

    from tsa_kedro.models.embedding import SharedEmbedding  # noqa: PLC0415

    current = SharedEmbedding.categorical_feature_major

    def float32_rows(self, idx):
        return functional.embedding(idx.t(), self.table.weight, padding_idx=0)

    optimiser = make_optimizer(model.parameters(), lr=1e-4, weight_decay=0.0)
    inputs, labels = gpu_inputs(model, batch)
    step = make_step(model, optimiser, inputs, labels)
    model.eval()
    one, _ = gpu_inputs(model, 256, seed=9)
    outputs = {}
    for name, method in (("float32_rows", float32_rows), ("autocast_rows", current)):
        SharedEmbedding.categorical_feature_major = method
        try:
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
                outputs[name] = model(*one).float()
        finally:
            SharedEmbedding.categorical_feature_major = current
    model.train()
    times: dict[str, list[float]] = {"float32_rows": [], "autocast_rows": []}
    for _ in range(2):  # in turns
        for name, method in (
            ("float32_rows", float32_rows),
            ("autocast_rows", current),
        ):
            SharedEmbedding.categorical_feature_major = method
            try:
                times[name].append(samples_per_s(step, batch, warm_up=2, repeats=5))
            finally:
                SharedEmbedding.categorical_feature_major = current
    result: dict = {k: statistics.median(v) for k, v in times.items()}
    result["speedup"] = result["autocast_rows"] / result["float32_rows"]
    result["max_abs_logit_difference"] = float(
        (outputs["float32_rows"] - outputs["autocast_rows"]).abs().max()
    )
    return result


def training_loop(model, batch: int, budget: Budget) -> dict:
    """Epochs of the training loop itself (``training.loop``: compiled on CUDA,
    batches prefetched from memory-mapped files, OneCycle, clipping, loss kept on
    the device) against the same compiled step on inputs already on the GPU, for
    epochs of 8 and of 24 batches; and the seconds to an epoch's first batch."""
    from tqdm import tqdm  # noqa: PLC0415

    from tsa_kedro.training.distributed import DistContext  # noqa: PLC0415
    from tsa_kedro.training.loop import TrainingSettings, _Run  # noqa: PLC0415

    context = DistContext(device=torch.device("cuda"))
    result: dict = {"batch": batch}
    with tempfile.TemporaryDirectory() as folder:
        bundle = memory_mapped_bundle(
            model, batch, 24, Path(folder), distinct_rows=2 * batch
        )
        started = time.perf_counter()
        for _, tensors in BatchPrefetcher(bundle, [np.arange(batch)], context.device):
            torch.cuda.synchronize()
            result["first_batch_s"] = time.perf_counter() - started
            del tensors
        for n_batches in (8, 24):
            if budget.left() < 40:
                result[f"epoch_of_{n_batches}"] = "skipped: time budget"
                continue
            rows = batch * n_batches
            view = {key: value[:rows] for key, value in bundle.items()}
            run = None  # the previous run's memory goes before the next one's
            gc.collect()
            torch.cuda.empty_cache()
            settings = TrainingSettings(
                epochs=3, batch_size=batch, progress=False, compile_on_gpu=True
            )
            run = _Run(context, lambda: build_model(5000), rows, settings)
            epochs = []
            for epoch in range(1, 4):
                if epoch > 1 and budget.left() < 20:
                    break
                run.epoch = epoch
                torch.cuda.synchronize()
                started = time.perf_counter()
                run.train_epoch(view, tqdm(disable=True))
                torch.cuda.synchronize()
                epochs.append(time.perf_counter() - started)
            record: dict = {"first_epoch_s": epochs[0]}  # compiles
            if len(epochs) > 1:
                record["loop_samples_per_s"] = rows / min(epochs[1:])
            result[f"epoch_of_{n_batches}"] = record
        resident = to_device(gather_batch(bundle, np.arange(batch)), context.device)
        step = make_step(
            run.network, run.optimizer, model_arguments(resident), resident["Y"]
        )
        result["on_gpu_samples_per_s"] = samples_per_s(step, batch)
        for n_batches in (8, 24):
            record = result.get(f"epoch_of_{n_batches}")
            if isinstance(record, dict) and "loop_samples_per_s" in record:
                record["gpu_wait_share"] = (
                    1 - record["loop_samples_per_s"] / result["on_gpu_samples_per_s"]
                )
                step_s = batch / result["on_gpu_samples_per_s"]
                epoch_s = batch * n_batches / record["loop_samples_per_s"]
                record["wait_beyond_the_steps_s"] = epoch_s - n_batches * step_s
    return result


def batch_scoring(model, batch: int = 4096, n_batches: int = 8) -> dict:
    """Orders/s of ``score_bundle`` from memory-mapped files, float32 and bf16."""
    from tsa_kedro.models.predict import score_bundle  # noqa: PLC0415

    model.eval()
    device = torch.device("cuda")
    result: dict = {"batch": batch, "rows": batch * n_batches}
    with tempfile.TemporaryDirectory() as folder:
        bundle = memory_mapped_bundle(
            model, batch, n_batches, Path(folder), distinct_rows=batch
        )
        scores = {}
        for name, autocast in (
            ("float32", contextlib.nullcontext),
            ("bf16", lambda: torch.autocast("cuda", dtype=torch.bfloat16)),
        ):
            score_bundle(model, bundle, batch, device, np.arange(batch), autocast)
            times = []
            for _ in range(2):
                torch.cuda.synchronize()
                started = time.perf_counter()
                scores[name] = score_bundle(
                    model, bundle, batch, device, autocast=autocast
                )
                times.append(time.perf_counter() - started)
            result[f"{name}_orders_per_s"] = batch * n_batches / min(times)
        result["bf16_max_score_difference"] = float(
            np.abs(scores["bf16"] - scores["float32"]).max()
        )
    model.train()
    return result


def _embed_steps_before(aligned_products: bool):
    """``OrderAttention.embed_steps`` as it was before the numerical first layer was
    folded into the rows (the (n_num, B*L, E) embeddings built), with the products
    unpadded (``aligned_products`` False: the code before both changes) or aligned;
    linear numeric embedding only."""

    def embed_steps(self, embedding, x_cat, x_num, real):
        B, L, n_cat = x_cat.shape
        values = x_num[..., : self.n_num]
        if self.time_delta_feature:
            recency = torch.log1p(x_num[..., -2:-1].clamp(min=0.0)) / 16.0
            values = torch.cat([values, recency], dim=-1)
        idx = torch.where(real[..., None], x_cat, 0).reshape(B * L, n_cat)
        values = torch.where(real[..., None], values, 0.0).reshape(B * L, -1)
        rows = embedding.sequence_numeric_rows  # (n_step_num, E)
        n_num = rows.shape[0]
        if aligned_products:  # zero rows up to aligned counts, as the model pads
            idx = torch.nn.functional.pad(idx, (0, aligned(n_cat) - n_cat))
            values = torch.nn.functional.pad(values, (0, aligned(n_num) - n_num))
            rows = torch.nn.functional.pad(rows, (0, 0, 0, aligned(n_num) - n_num))
        cat_embedded = embedding.categorical_feature_major(idx)  # (F, N, E)
        num_embedded = values.t()[:, :, None] * rows[:, None, :]  # (F, N, E)
        reduced = []
        for reducer, h in (
            (self.cat_reducer, cat_embedded),
            (self.num_reducer, num_embedded),
        ):
            n_rows, N, E = h.shape
            layers = (
                reducer.padded_layers(n_rows)
                if aligned_products
                else [(layer.weight, layer.bias) for layer in reducer.layers]
            )
            reduced.append(FeatureReducer.run(layers, h.reshape(n_rows, -1)).view(N, E))
        steps = self.norm(torch.cat(reduced, dim=-1))
        return steps.view(B, L, -1)

    return embed_steps


def reducer_variants(model, batch: int, budget: Budget) -> dict:
    """Eager, then compiled, steps of the reducer variants in turns (module doc)."""
    from tsa_kedro.models.order_attention import OrderAttention  # noqa: PLC0415

    if model.config.numeric_embedding != "linear":
        return {"skipped": "the variants are written for the linear numeric embedding"}
    original = OrderAttention.embed_steps
    variants = {
        "plain": _embed_steps_before(aligned_products=False),
        "aligned": _embed_steps_before(aligned_products=True),
        "model": original,  # aligned, numerical first layer folded into the rows
    }
    result: dict = {"batch": batch}
    model.eval()
    probe, _ = gpu_inputs(model, 256, seed=9)
    outputs = {}
    try:
        for name, method in variants.items():
            OrderAttention.embed_steps = method
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
                outputs[name] = model(*probe).float()
        for name in ("aligned", "model"):
            result[f"{name}_max_abs_logit_difference"] = float(
                (outputs[name] - outputs["plain"]).abs().max()
            )
        model.train()
        optimiser = make_optimizer(model.parameters(), lr=1e-4, weight_decay=0.0)
        inputs, labels = gpu_inputs(model, batch)
        step = make_step(model, optimiser, inputs, labels)
        eager: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(2):
            for name, method in variants.items():
                OrderAttention.embed_steps = method
                eager[name].append(samples_per_s(step, batch, warm_up=2, repeats=5))
        result["eager_samples_per_s"] = {n: max(v) for n, v in eager.items()}
        compiled_rates = {}
        for name in ("plain", "model"):
            if budget.left() < 150:
                compiled_rates[name] = "skipped: time budget"
                continue
            OrderAttention.embed_steps = variants[name]
            torch._dynamo.reset()
            compiled_model = torch.compile(model, dynamic=False)
            compiled_step = make_step(compiled_model, optimiser, inputs, labels)
            compiled_step()
            compiled_rates[name] = samples_per_s(compiled_step, batch)
        result["compiled_samples_per_s"] = compiled_rates
    finally:
        OrderAttention.embed_steps = original
        torch._dynamo.reset()
        model.train()
    return result


def ddp_compiled() -> dict:
    """``fit`` with two gloo ranks sharing the GPU, the network compiled and eager."""
    from tsa_kedro.training.distributed import DistributedSettings  # noqa: PLC0415
    from tsa_kedro.training.loop import TrainingSettings, fit  # noqa: PLC0415

    config = preset_config(
        "small",
        n_cat_features=12,
        n_num_features=6,
        n_eng_features=10,
        seq_len=16,
        vocab_size=400,
    )
    g = torch.Generator().manual_seed(11)

    def bundle(rows: int) -> dict:
        tensors = make_inputs(config, rows, "mixed", g)
        arrays = {
            key: t.numpy() for key, t in zip((*FEATURES, "X_num"), tensors, strict=True)
        }
        arrays["Y"] = (np.arange(rows) % 3 == 0).astype(np.int8)
        return arrays

    train, vali = bundle(4096), bundle(1024)
    builder = functools.partial(TwoSeqMoEOrderFeatureAttentionClassifier, config)
    result: dict = {}
    weights = {}
    for name, compile_on_gpu in (("compiled", True), ("eager", False)):
        started = time.perf_counter()
        trained = fit(
            builder,
            train,
            vali,
            TrainingSettings(
                epochs=2,
                batch_size=512,
                progress=False,
                compile_on_gpu=compile_on_gpu,
                find_unused_parameters=True,
            ),
            distributed=DistributedSettings(procs_per_host=2, backend="gloo"),
        )
        weights[name] = trained.weights
        result[name] = {
            "seconds": time.perf_counter() - started,
            "history": trained.history,
        }
    result["max_weight_difference"] = max(
        float(
            (weights["compiled"][k].float() - weights["eager"][k].float()).abs().max()
        )
        for k in weights["eager"]
    )
    return result


def compiled(model, batch: int, tables: list[str], flops: float | None) -> dict:
    """``torch.compile(model)``: compile time, samples/s and the profiled step."""
    started = time.perf_counter()
    compiled_model = torch.compile(model, dynamic=False)
    optimiser = make_optimizer(model.parameters(), lr=1e-4, weight_decay=0.0)
    inputs, labels = gpu_inputs(model, batch)
    step = make_step(compiled_model, optimiser, inputs, labels)
    step()
    torch.cuda.synchronize()
    result = {"compile_s": time.perf_counter() - started}
    result["samples_per_s"] = samples_per_s(step, batch)
    busy, table = profile_step(step)
    tables.append(f"compiled, batch {batch}\n{table}")
    result["profile"] = busy
    result["batch"] = batch
    if flops:
        result["model_flop_utilisation"] = (
            result["samples_per_s"] * flops / DATASHEET_BF16_FLOPS
        )
    return result


def fastest_batch(rates: dict, asked: list[int]) -> int:
    """The batch size with the most samples/s (the smallest asked for if none fitted)."""
    fitted = [int(b) for b, v in rates.items() if isinstance(v, float)]
    return max(fitted, key=lambda b: rates[str(b)]) if fitted else min(asked)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[640, 2048, 8192])
    parser.add_argument("--vocab", type=int, default=5000)
    parser.add_argument("--budget-s", type=float, default=420)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--profile-output", type=Path)
    parser.add_argument(
        "--bundle", type=Path, help="an unpacked model bundle for the serving section"
    )
    parser.add_argument(
        "--skip", nargs="*", default=[], help="sections to leave out, by name"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to measure (benchmarks.model measures CPUs)")
        return {}
    budget = Budget(args.budget_s)
    results: dict = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "datasheet_bf16_tflops": DATASHEET_BF16_FLOPS / 1e12,
    }
    tables: list[str] = []

    def save() -> None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=1) + "\n")
        if args.profile_output:
            args.profile_output.write_text("\n\n".join(tables))

    def section(name: str, fn: Callable[[], dict], min_left: float = 30) -> None:
        if name in args.skip:
            return
        if budget.left() < min_left:
            results[name] = "skipped: time budget"
            save()
            return
        torch.cuda.empty_cache()
        started = time.perf_counter()
        try:
            results[name] = fn()
        except Exception as error:  # noqa: BLE001 -- reported, the run goes on
            results[name] = f"failed: {type(error).__name__}: {error}"[:2000]
        if isinstance(results[name], dict):
            results[name]["section_s"] = time.perf_counter() - started
        print(json.dumps({name: results[name]}), flush=True)
        save()

    model = build_model(args.vocab)
    section("ceiling", ceiling)
    section("eager", lambda: eager_sweep(model, args.batches, budget))
    eager = results.get("eager") if isinstance(results.get("eager"), dict) else {}
    rates = eager.get("samples_per_s", {})
    best = fastest_batch(rates, args.batches)
    flops = eager.get("training_flops_per_sample")
    if flops:
        eager["model_flop_utilisation"] = {
            b: r * flops / DATASHEET_BF16_FLOPS
            for b, r in rates.items()
            if isinstance(r, float)
        }
    section("profile", lambda: profiled(model, best, tables))
    section("inference", lambda: inference(model))
    if args.bundle:
        section("serving", lambda: serving(args.bundle))
    section("input_pipeline", lambda: input_pipeline(model, best, budget), 60)
    section("temporal_bf16", lambda: temporal_bf16(model, best), 45)
    section("embedding_gather", lambda: embedding_gather(model, best), 45)
    section("training_loop", lambda: training_loop(model, best, budget), 150)
    section("compiled", lambda: compiled(model, best, tables, flops), 150)
    section("reducer_variants", lambda: reducer_variants(model, best, budget), 60)
    section("batch_scoring", lambda: batch_scoring(model), 60)
    section("ddp_compiled", ddp_compiled, 90)
    save()
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
