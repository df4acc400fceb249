"""Benchmark of the TSA classifier against a plain implementation of the same model.

    python -m benchmarks.model [--threads 2] [--batch 64] [--rounds 5] [--no-compile]

Reports, for the production preset (widths 109 / 67 / 297, seq_len 51, a categorical
vocabulary of ``--vocab`` rows) and the small preset, each with the plain architecture
(``PLAIN_OPTIONS`` of ``baseline_tsa.py``: the small preset's periodic embedding,
history match rates, feature MLP path and time-delta feature off, so that both
implementations compute the same function):

* parameter counts (the plain model has the same parameters, loaded from the same
  state dict; the run checks that both give the same outputs);
* model FLOPs per sample (``torch.utils.flop_counter``; the CPU fused-attention kernels
  are registered with the usual SDPA formula);
* training samples/s (forward, backward, Adam step; batch ``--batch``);
* single-order inference latency (batch 1, eval mode, ``torch.inference_mode``);
* the same with ``torch.compile`` when it works here (``full`` inputs only; compiling
  takes minutes on two loaded cores);
* for a preset whose own options differ from the plain ones (small), the model as
  configured: parameters, FLOPs, training samples/s and inference ms, beside the plain
  configuration's in the same rounds (``as_configured``).

Two input mixes: ``full`` (every order has 51 real rows in both histories, the worst
case) and ``mixed`` (history lengths uniform in 1..51, 30 % of cards without history).
Timings of the model and the baseline are interleaved round by round and reported as
medians, ratio = median of the per-round ratios, so load from other processes on the
machine hits both alike. On a CUDA device training is also timed under bf16 autocast.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils import flop_counter

from benchmarks._output import write_results
from benchmarks._presets import preset_config
from benchmarks.baseline_tsa import PLAIN_OPTIONS, BaselineTSA
from tsa_kedro.models import TSAConfig, TwoSeqMoEOrderFeatureAttentionClassifier

PRODUCTION_WIDTHS = {
    "n_cat_features": 109,
    "n_num_features": 67,
    "n_eng_features": 297,
    "seq_len": 51,
}
Inputs = tuple[torch.Tensor, ...]


def _register_cpu_attention_flops() -> None:
    """Count the CPU fused-attention kernels like the CUDA ones (4 * B * H * Tq * Tk * D)."""
    ops = torch.ops.aten
    forward = ops._scaled_dot_product_flash_attention_for_cpu
    backward = ops._scaled_dot_product_flash_attention_for_cpu_backward

    def forward_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_flop_count(query, key, value)

    def backward_flops(grad, query, key, value, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_backward_flop_count(grad, query, key, value)

    if forward not in flop_counter.flop_registry:
        flop_counter.register_flop_formula(forward)(forward_flops)
    if backward not in flop_counter.flop_registry:
        flop_counter.register_flop_formula(backward)(backward_flops)


def make_inputs(
    config: TSAConfig, batch: int, mix: str, generator: torch.Generator
) -> Inputs:
    """Random model inputs laid out like the tensor bundles (left-padded, zeros)."""
    L = config.seq_len

    def lengths(empty_fraction: float) -> torch.Tensor:
        if mix == "full":
            return torch.full((batch,), L)
        drawn = torch.randint(1, L + 1, (batch,), generator=generator)
        empty = torch.rand(batch, generator=generator) < empty_fraction
        return torch.where(empty, 1, drawn)

    def sequence(n_real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        steps_back = (L - 1 - torch.arange(L)).float()  # (L,)
        real = steps_back[None] < n_real[:, None]  # (B, L)
        cat = torch.randint(
            1, config.vocab_size, (batch, L, config.n_cat_features), generator=generator
        )
        num = torch.rand(batch, L, config.n_num_features + 2, generator=generator)
        num[..., -2] = steps_back * 3 * 86_400.0
        num[..., -1] = 1.0
        return (
            (cat * real[..., None]).to(torch.int32),
            num * real[..., None],
        )

    cat_cid, num_cid = sequence(lengths(0.0))
    cat_ccid, num_ccid = sequence(lengths(0.3))
    x_num = torch.rand(batch, config.n_eng_features, generator=generator)
    return cat_cid, num_cid, cat_ccid, num_ccid, x_num


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops_per_sample(model: torch.nn.Module, inputs: Inputs, train: bool) -> float:
    """Forward (or forward + backward) FLOPs divided by the batch size."""
    model.train(train)
    counter = flop_counter.FlopCounterMode(display=False)
    with counter:
        if train:
            model(*inputs).sum().backward()
        else:
            with torch.no_grad():
                model(*inputs)
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / inputs[0].shape[0]


def training_step(model: torch.nn.Module, inputs: Inputs) -> Callable[[], None]:
    """One optimiser step on ``inputs`` (bf16 autocast on CUDA), with the optimiser
    the imported ``tsa_kedro`` trains with (plain Adam for trees without
    ``make_optimizer``)."""
    device = inputs[0].device
    try:
        from tsa_kedro.training.loop import make_optimizer  # noqa: PLC0415
    except ImportError:
        optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    else:
        optimiser = make_optimizer(model.parameters(), lr=1e-4, weight_decay=0.0)
    labels = torch.arange(inputs[0].shape[0], device=device) % 2

    def step() -> None:
        with torch.autocast(
            device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"
        ):
            loss = torch.nn.functional.cross_entropy(model(*inputs), labels)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    return step


def inference_call(model: torch.nn.Module, inputs: Inputs) -> Callable[[], None]:
    def call() -> None:
        with torch.inference_mode():
            model(*inputs)

    return call


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_call(fn: Callable[[], None], repeats: int, device: torch.device) -> float:
    """Median seconds per call over ``repeats`` calls (after one warm-up call)."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved(
    calls: dict[str, Callable[[], None]],
    rounds: int,
    repeats: int,
    device: torch.device,
) -> dict[str, list[float]]:
    """Seconds per call of each candidate, measured in turns, one list per candidate."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            times[name].append(time_call(fn, repeats, device))
    return times


def try_compile(
    model: torch.nn.Module, probe: Callable[[torch.nn.Module], None]
) -> tuple[torch.nn.Module | None, str]:
    """``torch.compile(model)`` and one probe call; (None, reason) when it fails."""
    try:
        compiled = torch.compile(model)
        probe(compiled)
        return compiled, "ok"
    except Exception as error:  # noqa: BLE001 -- any compiler failure is reported
        return None, f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"


def build_pair(
    preset: str, vocab: int, seed: int = 0
) -> tuple[TwoSeqMoEOrderFeatureAttentionClassifier, BaselineTSA]:
    config = preset_config(
        preset, **PRODUCTION_WIDTHS, vocab_size=vocab, **PLAIN_OPTIONS
    )
    torch.manual_seed(seed)
    model = TwoSeqMoEOrderFeatureAttentionClassifier(config)
    baseline = BaselineTSA(config)
    baseline.load_state_dict(model.state_dict())
    return model, baseline


def check_same_function(model, baseline, inputs: Inputs) -> float:
    """Largest absolute logit difference between model and baseline (eval mode)."""
    model.eval()
    baseline.eval()
    with torch.no_grad():
        return float((model(*inputs) - baseline(*inputs)).abs().max())


def _median_ratio(slow: list[float], fast: list[float]) -> float:
    return statistics.median(s / f for s, f in zip(slow, fast, strict=True))


def benchmark_preset(
    preset: str, args: argparse.Namespace, device: torch.device
) -> dict:
    model, baseline = build_pair(preset, args.vocab)
    model.to(device)
    baseline.to(device)
    g = torch.Generator().manual_seed(1)
    result: dict = {
        "preset": preset,
        "parameters": count_parameters(model),
        "parameters_without_embedding": count_parameters(model)
        - model.embedding.table.weight.numel(),
        "baseline_parameters": count_parameters(baseline),
    }
    inputs = {
        mix: (
            tuple(t.to(device) for t in make_inputs(model.config, args.batch, mix, g)),
            tuple(t.to(device) for t in make_inputs(model.config, 1, mix, g)),
        )
        for mix in ("full", "mixed")
    }
    # Before any training step changes either model's weights.
    result["max_abs_logit_difference"] = max(
        check_same_function(model, baseline, batch) for batch, _ in inputs.values()
    )
    mixes = {}
    for mix, (train_inputs, one) in inputs.items():
        entry: dict = {
            "forward_flops_per_sample": {
                "model": flops_per_sample(model, train_inputs, train=False),
                "baseline": flops_per_sample(baseline, train_inputs, train=False),
            },
            "training_flops_per_sample": {
                "model": flops_per_sample(model, train_inputs, train=True),
                "baseline": flops_per_sample(baseline, train_inputs, train=True),
            },
        }
        train_times, infer_times = time_pair(
            {"model": model, "baseline": baseline}, train_inputs, one, args, device
        )
        entry["training_samples_per_s"] = {
            name: args.batch / statistics.median(t) for name, t in train_times.items()
        }
        entry["training_speedup"] = _median_ratio(
            train_times["baseline"], train_times["model"]
        )
        entry["inference_ms"] = {
            name: 1000 * statistics.median(t) for name, t in infer_times.items()
        }
        entry["inference_speedup"] = _median_ratio(
            infer_times["baseline"], infer_times["model"]
        )
        print(json.dumps({preset: {mix: entry}}, indent=1), flush=True)
        if args.compile and mix == "full":
            entry["compiled"] = compiled_figures(model, train_inputs, one, args, device)
            print(json.dumps({preset: {"compiled": entry["compiled"]}}), flush=True)
        mixes[mix] = entry
    result["mixes"] = mixes
    configured = preset_config(preset, **PRODUCTION_WIDTHS, vocab_size=args.vocab)
    if configured != model.config:
        result["as_configured"] = as_configured_figures(
            configured, model, inputs["full"], args, device
        )
        print(json.dumps({preset: result["as_configured"]}, indent=1), flush=True)
    return result


def time_pair(
    models: dict[str, torch.nn.Module],
    train_inputs: Inputs,
    one: Inputs,
    args: argparse.Namespace,
    device: torch.device,
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Interleaved training-step and single-order inference times of two models."""
    phases = (
        (True, training_step, train_inputs, args.train_repeats),
        (False, inference_call, one, args.infer_repeats),
    )
    times = []
    for training, make_call, inputs, repeats in phases:
        for model in models.values():
            model.train(training)
        calls = {name: make_call(m, inputs) for name, m in models.items()}
        times.append(interleaved(calls, args.rounds, repeats, device))
    return times[0], times[1]


def as_configured_figures(
    config: TSAConfig,
    plain: TwoSeqMoEOrderFeatureAttentionClassifier,
    inputs: tuple[Inputs, Inputs],
    args: argparse.Namespace,
    device: torch.device,
) -> dict:
    """The preset with its own options against the plain configuration (full inputs)."""
    torch.manual_seed(0)
    model = TwoSeqMoEOrderFeatureAttentionClassifier(config).to(device)
    train_inputs, one = inputs
    figures: dict = {
        "options": {k: getattr(config, k) for k in PLAIN_OPTIONS},
        "parameters": count_parameters(model),
        "training_flops_per_sample": flops_per_sample(model, train_inputs, train=True),
    }
    train_times, infer_times = time_pair(
        {"configured": model, "plain": plain}, train_inputs, one, args, device
    )
    figures["training_samples_per_s"] = {
        k: args.batch / statistics.median(v) for k, v in train_times.items()
    }
    figures["inference_ms"] = {
        k: 1000 * statistics.median(v) for k, v in infer_times.items()
    }
    return figures


def compiled_figures(model, train_inputs, one, args, device) -> dict:
    """Training samples/s and inference ms of ``torch.compile(model)`` vs eager."""
    figures: dict = {}
    model.eval()
    compiled, status = try_compile(model, lambda m: inference_call(m, one)())
    figures["inference_status"] = status
    if compiled is not None:
        times = interleaved(
            {
                "eager": inference_call(model, one),
                "compiled": inference_call(compiled, one),
            },
            args.rounds,
            args.infer_repeats,
            device,
        )
        figures["inference_ms"] = {
            k: 1000 * statistics.median(v) for k, v in times.items()
        }
    model.train()
    compiled, status = try_compile(model, lambda m: training_step(m, train_inputs)())
    figures["training_status"] = status
    if compiled is not None:
        times = interleaved(
            {
                "eager": training_step(model, train_inputs),
                "compiled": training_step(compiled, train_inputs),
            },
            args.rounds,
            args.train_repeats,
            device,
        )
        figures["training_samples_per_s"] = {
            k: args.batch / statistics.median(v) for k, v in times.items()
        }
    return figures


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64, help="training batch size")
    parser.add_argument(
        "--vocab", type=int, default=5000, help="categorical vocabulary rows"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--train-repeats", type=int, default=3)
    parser.add_argument("--infer-repeats", type=int, default=20)
    parser.add_argument("--presets", nargs="+", default=["production", "small"])
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--output", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    _register_cpu_attention_flops()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "threads": args.threads,
        "batch": args.batch,
        "vocab_size": args.vocab,
        "torch": torch.__version__,
        "presets": [benchmark_preset(p, args, device) for p in args.presets],
    }
    if device.type == "cpu":
        results["gpu"] = "no CUDA device here: bf16 GPU figures not measured"
    write_results(results, args.output)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
