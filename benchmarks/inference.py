"""Single-order CPU inference and CPU training speed, this code against an earlier one.

Run from the project root, by hand (never in CI)::

    git worktree add /tmp/core-base <commit>      # the code to compare against
    PYTHONPATH=src .venv/bin/python -m benchmarks.inference --base /tmp/core-base \\
        --threads 2 --rounds 5 --output benchmarks/results/inference_cpu2.json

Production preset at production widths (109 / 67 / 297 features, seq_len 51, a
categorical vocabulary of ``--vocab`` rows), seeded random weights, orders with full
histories. Each round runs one worker process per code tree, in turns (this tree, then
``--base``), so load from other processes on the machine hits both alike; a worker
imports ``tsa_kedro`` from its tree and measures, with ``--threads`` intra-op threads:

- ``eager``: one order through the eager model (eval mode, ``torch.inference_mode``),
  ``--calls`` calls, each timed;
- ``training``: Adam steps (forward, backward, update) on a batch of ``--batch``
  orders, ``--steps`` steps after one warm-up step;
- ``artefact`` (this tree only, a third process): the same order through the packaged
  artefact, ``model.onnx`` exported once by ``serving.bundle.export_onnx`` and run by
  ONNX Runtime (``serving.compiled.CompiledModel``).

Reported: p50 and p99 of the single-order latencies pooled over rounds (ms), training
samples/s (batch over the median step time), and ratios as medians of per-round
ratios (same round, so comparable under load).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks._output import write_results
from benchmarks._presets import preset_fields
from benchmarks.model import PRODUCTION_WIDTHS, make_inputs, training_step

ROOT = Path(__file__).resolve().parents[1]
# Untimed calls before the timed ones: the first calls of a fresh process (allocator
# and ONNX Runtime arenas growing, caches) are several times slower than a serving
# process's steady state, which is what the latency targets are about.
WARM_UP_CALLS = 20


def _config(vocab: int):
    from tsa_kedro.models import TSAConfig  # noqa: PLC0415 - the worker's tree

    return TSAConfig(
        **preset_fields("production"), **PRODUCTION_WIDTHS, vocab_size=vocab
    )


def _model(vocab: int) -> torch.nn.Module:
    from tsa_kedro.models import (  # noqa: PLC0415 - the worker's tree
        TwoSeqMoEOrderFeatureAttentionClassifier,
    )

    torch.manual_seed(0)
    return TwoSeqMoEOrderFeatureAttentionClassifier(_config(vocab))


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def worker(args: argparse.Namespace) -> dict:
    """One tree's measurements of one round (runs in its own process): the eager
    model's single-order latencies and training steps, or with ``--artefact`` the
    artefact's single-order latencies only (ONNX Runtime's threads and torch's never
    share a process here)."""
    import tsa_kedro  # noqa: PLC0415

    torch.set_num_threads(args.threads)
    model = _model(args.vocab).eval()
    g = torch.Generator().manual_seed(1)
    one = make_inputs(model.config, 1, "full", g)
    call = model
    if args.artefact:
        from tsa_kedro.serving.compiled import CompiledModel  # noqa: PLC0415

        call = CompiledModel(args.artefact, threads=args.threads)
    latencies = []
    with torch.inference_mode():
        for _ in range(WARM_UP_CALLS):
            call(*one)
        for _ in range(args.calls):
            start = time.perf_counter()
            call(*one)
            latencies.append(time.perf_counter() - start)
    figures = {"tsa_kedro": str(Path(tsa_kedro.__file__).parent)}
    if args.artefact:
        return {**figures, "latency_s": {"artefact": latencies}}
    model.train()
    step = training_step(model, make_inputs(model.config, args.batch, "full", g))
    step()  # warm-up
    steps = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        steps.append(time.perf_counter() - start)
    return {**figures, "latency_s": {"eager": latencies}, "training_step_s": steps}


def run_worker(tree: Path, args: argparse.Namespace, artefact: Path | None) -> dict:
    """``worker`` in a fresh interpreter importing ``tsa_kedro`` from ``tree``."""
    command = [
        sys.executable,
        "-m",
        "benchmarks.inference",
        "--worker",
        *("--threads", str(args.threads), "--vocab", str(args.vocab)),
        *("--calls", str(args.calls), "--batch", str(args.batch)),
        *("--steps", str(args.steps)),
        *(("--artefact", str(artefact)) if artefact else ()),
    ]
    env = {**os.environ, "PYTHONPATH": f"{tree / 'src'}{os.pathsep}{ROOT}"}
    result = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"worker for {tree} failed:\n{result.stderr[-3000:]}")
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    if not figures["tsa_kedro"].startswith(str(tree)):
        raise RuntimeError(f"worker for {tree} imported {figures['tsa_kedro']}")
    return figures


def summary(rounds: list[dict[str, dict]], batch: int) -> dict:
    """Pooled p50 / p99 latencies, training samples/s and per-round ratios."""
    figures: dict = {}
    for tree in rounds[0]:
        entry: dict = {}
        for name in rounds[0][tree]["latency_s"]:
            pooled = [t for r in rounds for t in r[tree]["latency_s"][name]]
            entry[f"{name}_ms"] = {
                "p50": 1000 * _percentile(pooled, 0.50),
                "p99": 1000 * _percentile(pooled, 0.99),
                "calls": len(pooled),
            }
        steps = [t for r in rounds for t in r[tree]["training_step_s"]]
        entry["training_samples_per_s"] = batch / statistics.median(steps)
        figures[tree] = entry

    def ratio(slow: tuple[str, str], fast: tuple[str, str]) -> float:
        return statistics.median(
            statistics.median(r[slow[0]]["latency_s"][slow[1]])
            / statistics.median(r[fast[0]]["latency_s"][fast[1]])
            for r in rounds
        )

    figures["ratios"] = {
        "eager_over_artefact_p50": ratio(("this", "eager"), ("this", "artefact"))
    }
    if "base" in rounds[0]:
        figures["ratios"] |= {
            "base_eager_over_artefact_p50": ratio(
                ("base", "eager"), ("this", "artefact")
            ),
            "base_eager_over_this_eager_p50": ratio(
                ("base", "eager"), ("this", "eager")
            ),
            "training_this_over_base": statistics.median(
                statistics.median(r["base"]["training_step_s"])
                / statistics.median(r["this"]["training_step_s"])
                for r in rounds
            ),
        }
    return figures


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, help="worktree of the code to compare")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=100, help="per variant, round")
    parser.add_argument("--batch", type=int, default=32, help="training batch size")
    parser.add_argument("--steps", type=int, default=5, help="training steps, round")
    parser.add_argument("--output", type=Path, help="also write the results as JSON")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--artefact", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return {}

    from tsa_kedro.serving.bundle import export_onnx  # noqa: PLC0415

    trees = {"this": ROOT, **({"base": args.base.resolve()} if args.base else {})}
    with tempfile.TemporaryDirectory() as folder:
        artefact = Path(folder) / "model.onnx"
        model = _model(args.vocab)
        start = time.perf_counter()
        artefact.write_bytes(export_onnx(model, model.config))
        export_s = time.perf_counter() - start
        rounds = []
        for index in range(args.rounds):
            figures = {
                name: run_worker(tree, args, None) for name, tree in trees.items()
            }
            compiled = run_worker(ROOT, args, artefact)
            figures["this"]["latency_s"] |= compiled["latency_s"]
            rounds.append(figures)
            print(f"round {index + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    results = {
        "device": "cpu",
        "threads": args.threads,
        "torch": torch.__version__,
        "vocab_size": args.vocab,
        "batch": args.batch,
        "rounds": args.rounds,
        "trees": {name: str(tree) for name, tree in trees.items()},
        "export_s": export_s,
        "load_average_end": os.getloadavg(),
        **summary(rounds, args.batch),
    }
    write_results(results, args.output)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
