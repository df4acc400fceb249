"""Single-order CPU inference of the production preset: where the time goes, compiled.

Run from the project root (by hand, never in CI; compiling takes about a minute per
variant on two cores)::

    PYTHONPATH=src .venv/bin/python -m benchmarks.inference [--threads 2] [--rounds 5]

At production widths (``benchmarks/model.py``), one order with full histories, eval
mode, ``torch.inference_mode``. Timed in turns, round by round (medians, ms; ratios are
medians of per-round ratios against eager in the same round):

- ``eager``: the whole forward pass (the cid and ccid blocks paired, ``paired.py``;
  the feature attention on a side thread beside them, ``branches.py``);
- ``eager_unpaired``: the same with ``pair_sequences`` off, the stacks one after the
  other;
- ``eager_serial``: the same with ``parallel_branches`` off, the feature attention
  after the stacks on the same thread (``branches.py``; the forward pass before it);
- ``feature_attention`` and ``sequences`` (both order-attention stacks with their step
  embeddings and the gate summaries, paired; ``sequences_unpaired``: one after the
  other): the branches on their own, eager;
- ``compiled``: ``torch.compile`` with default options;
- ``compiled_frozen``: ``torch.compile`` with inductor's ``freezing`` (weights folded
  as constants, packed for the CPU GEMM kernels) and ``cpp_wrapper`` (the generated
  graph called from C++ instead of Python).

``pairing_by_batch``: the forward pass with the stacks paired and unpaired, in turns,
at several batch sizes of full-history orders (pairing forced on at every size), which
is what ``PAIR_MAX_ORDERS`` in ``models/tsa.py`` is chosen from.

``parallel_by_history``: single orders with drawn cid and ccid history lengths (one per
seed, ``--mixes``), the forward pass with the branches at once and one after the other,
in turns.

Also reported: forward FLOPs per order and the machine's float32 matrix-product rate
(a 2048 x 2048 product, same threads), whose ratio is the latency floor of a forward
pass run entirely at that rate.
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

from benchmarks._output import switched, write_results
from benchmarks.model import (
    PRODUCTION_WIDTHS,
    _register_cpu_attention_flops,
    flops_per_sample,
    make_inputs,
)
from tsa_kedro.models import TSAConfig, TwoSeqMoEOrderFeatureAttentionClassifier
from tsa_kedro.models import tsa as tsa_module

FROZEN_OPTIONS = {"freezing": True, "cpp_wrapper": True}


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """Best float32 GFLOP/s of a ``size`` x ``size`` matrix product."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = min(_seconds(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def branch_calls(
    model: TwoSeqMoEOrderFeatureAttentionClassifier, inputs: tuple[torch.Tensor, ...]
) -> dict[str, Callable[[], object]]:
    """The forward pass and its two large branches, each a zero-argument call."""
    cat_cid, num_cid, cat_ccid, num_ccid, x_num = inputs
    n_num = model.config.n_num_features

    def feature_attention() -> torch.Tensor:
        return model.feature_attention(
            model.embedding, cat_cid[:, -1], num_cid[:, -1, :n_num], x_num
        )

    def unpaired() -> torch.Tensor:
        with switched(model, "pair_sequences", False):
            return model(*inputs)

    def serial() -> torch.Tensor:
        with switched(model, "parallel_branches", False):
            return model(*inputs)

    def sequences_unpaired() -> tuple:
        return (
            model._encode(model.order_cid, cat_cid, num_cid),
            model._encode(model.order_ccid, cat_ccid, num_ccid),
        )

    return {
        "eager": lambda: model(*inputs),
        "eager_unpaired": unpaired,
        "eager_serial": serial,
        "feature_attention": feature_attention,
        "sequences": lambda: model._encode_pair(cat_cid, num_cid, cat_ccid, num_ccid),
        "sequences_unpaired": sequences_unpaired,
    }


def compile_variant(
    model: torch.nn.Module, inputs: tuple[torch.Tensor, ...], options: dict | None
) -> tuple[Callable[[], object] | None, dict]:
    """A compiled call and its compile seconds / largest logit difference to eager."""
    try:
        compiled = torch.compile(model, options=options)
        start = time.perf_counter()
        logits = compiled(*inputs)
        seconds = time.perf_counter() - start
    except Exception as error:  # noqa: BLE001 -- any compiler failure is reported
        return None, {"status": f"{type(error).__name__}: {str(error)[:200]}"}
    difference = float((logits - model(*inputs)).abs().max())
    info = {
        "status": "ok",
        "compile_s": seconds,
        "max_abs_logit_difference": difference,
    }
    return (lambda: compiled(*inputs)), info


def on_off_times(
    model: TwoSeqMoEOrderFeatureAttentionClassifier,
    setting: str,
    inputs: tuple[torch.Tensor, ...],
    rounds: int,
    repeats: int,
) -> dict[bool, list[float]]:
    """Per round, the median forward seconds with the model's ``setting`` on and off,
    in turns."""
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(rounds):
        for on in (True, False):
            with switched(model, setting, on):
                model(*inputs)
                times[on].append(
                    statistics.median(
                        _seconds(lambda: model(*inputs)) for _ in range(repeats)
                    )
                )
    return times


def pairing_by_batch(
    model: TwoSeqMoEOrderFeatureAttentionClassifier,
    batches: list[int],
    rounds: int,
    repeats: int,
) -> dict[str, dict[str, float]]:
    """Per batch size: paired and unpaired forward ms (medians) and their ratio."""
    before = tsa_module.PAIR_MAX_ORDERS
    tsa_module.PAIR_MAX_ORDERS = max(batches, default=0)
    out = {}
    try:
        for batch in batches:
            inputs = make_inputs(
                model.config, batch, "full", torch.Generator().manual_seed(batch)
            )
            times = on_off_times(model, "pair_sequences", inputs, rounds, repeats)
            out[str(batch)] = {
                "paired_ms": 1000 * statistics.median(times[True]),
                "unpaired_ms": 1000 * statistics.median(times[False]),
                "unpaired_over_paired": statistics.median(
                    u / p for u, p in zip(times[False], times[True], strict=True)
                ),
            }
            print(json.dumps({f"batch {batch}": out[str(batch)]}), flush=True)
    finally:
        tsa_module.PAIR_MAX_ORDERS = before
    return out


def parallel_by_history(
    model: TwoSeqMoEOrderFeatureAttentionClassifier,
    mixes: int,
    rounds: int,
    repeats: int,
) -> list[dict[str, float]]:
    """Single orders of drawn history lengths (the ``mixed`` inputs, one per seed):
    forward ms with the branches at once and one after the other, and their ratio."""
    out = []
    for seed in range(mixes):
        inputs = make_inputs(
            model.config, 1, "mixed", torch.Generator().manual_seed(seed)
        )
        times = on_off_times(model, "parallel_branches", inputs, rounds, repeats)
        row = {
            "cid_rows": int(inputs[1][0, :, -1].sum()),
            "ccid_rows": int(inputs[3][0, :, -1].sum()),
            "parallel_ms": 1000 * statistics.median(times[True]),
            "serial_ms": 1000 * statistics.median(times[False]),
            "serial_over_parallel": statistics.median(
                s / p for s, p in zip(times[False], times[True], strict=True)
            ),
        }
        out.append(row)
        print(json.dumps({f"history mix {seed}": row}), flush=True)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20, help="calls per round")
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument(
        "--batches",
        default="1,2,4,8,16",
        help="batch sizes of the paired/unpaired sweep (comma-separated; '' skips it)",
    )
    parser.add_argument(
        "--mixes",
        type=int,
        default=5,
        help="single orders of drawn history lengths for the parallel-branch sweep",
    )
    parser.add_argument("--output", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    _register_cpu_attention_flops()

    config = TSAConfig.preset("production", **PRODUCTION_WIDTHS, vocab_size=args.vocab)
    torch.manual_seed(0)
    model = TwoSeqMoEOrderFeatureAttentionClassifier(config).eval()
    inputs = make_inputs(config, 1, "full", torch.Generator().manual_seed(1))
    result: dict = {
        "threads": args.threads,
        "torch": torch.__version__,
        "forward_flops": flops_per_sample(model, inputs, train=False),
        "matmul_gflops": matmul_gflops(),
    }
    result["flop_floor_ms"] = result["forward_flops"] / result["matmul_gflops"] / 1e6
    with torch.inference_mode():
        calls = branch_calls(model, inputs)
        if args.compile:
            for name, options in (
                ("compiled", None),
                ("compiled_frozen", FROZEN_OPTIONS),
            ):
                call, result[name] = compile_variant(model, inputs, options)
                if call is not None:
                    calls[name] = call
                print(json.dumps({name: result[name]}), flush=True)
        times: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(args.rounds):
            for name, call in calls.items():
                call()
                times[name].append(
                    statistics.median(_seconds(call) for _ in range(args.repeats))
                )
    result["ms"] = {name: 1000 * statistics.median(t) for name, t in times.items()}
    result["speedup_over_eager"] = {
        name: statistics.median(e / c for e, c in zip(times["eager"], t, strict=True))
        for name, t in times.items()
        if name.startswith("compiled")
    }
    result["pairing_speedup"] = statistics.median(
        u / e for u, e in zip(times["eager_unpaired"], times["eager"], strict=True)
    )
    result["parallel_speedup"] = statistics.median(
        s / e for s, e in zip(times["eager_serial"], times["eager"], strict=True)
    )
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    with torch.inference_mode():
        result["pairing_by_batch"] = pairing_by_batch(
            model, batches, args.rounds, max(3, args.repeats // 4)
        )
        result["parallel_by_history"] = parallel_by_history(
            model, args.mixes, args.rounds, args.repeats
        )
    write_results(result, args.output)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
