"""Trains the stand-in model on tiny planted data in its own process.

Used by the tests that need real processes: the kill-and-resume test, ``torchrun`` and
the simulated SageMaker hosts. Writes ``weights.safetensors`` and ``result.json`` into
``--out`` from rank 0 only, and one marker file per rank and epoch.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import signal
from pathlib import Path

import torch
from safetensors.torch import save_file

from tests.model_params import model_params
from tests.training.standin import VOCAB_SIZE, TinyTSA, make_bundle
from tsa_kedro.pipelines.train.nodes import build_model, make_model_config
from tsa_kedro.training.distributed import DistributedSettings, is_main_process
from tsa_kedro.training.loop import TrainingSettings, fit


class EpochMarker:
    """Leaves ``rank<r>.epoch<e>`` in a folder; kills its own process after an epoch."""

    def __init__(self, folder: str, kill_after: int | None):
        self.folder = folder
        self.kill_after = kill_after

    def __call__(self, epoch: int, record: dict) -> None:
        rank = os.environ.get("RANK", "0")
        Path(self.folder, f"rank{rank}.epoch{epoch}").write_text(json.dumps(record))
        if self.kill_after is not None and epoch == self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    """Parse arguments, train, write rank 0's outputs."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rows", type=int, default=600)
    parser.add_argument("--checkpoint-dir")
    parser.add_argument("--kill-after", type=int)
    parser.add_argument("--resource-config", default="/nonexistent/resourceconfig.json")
    parser.add_argument("--master-addr")
    parser.add_argument("--master-port", type=int, default=29500)
    parser.add_argument("--procs-per-host", type=int)
    parser.add_argument(
        "--tsa-without-ccid-history",
        action="store_true",
        help="train the real TSA model (small preset) on data without ccid history, "
        "so the ccid stack gets no gradient (DDP must tolerate unused parameters)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = TrainingSettings(
        epochs=args.epochs,
        batch_size=32,
        lr=5e-3,
        max_lr=5e-2,
        patience=10,
        seed=7,
        checkpoint_dir=args.checkpoint_dir,
        num_threads=1,
        progress=False,
    )
    distributed = DistributedSettings(
        resource_config=args.resource_config,
        master_addr=args.master_addr,
        master_port=args.master_port,
        backend="gloo",
        procs_per_host=args.procs_per_host,
        timeout_s=120,
    )
    train, vali = make_bundle(args.rows, seed=0), make_bundle(args.rows // 2, seed=1)
    model_builder = TinyTSA
    if args.tsa_without_ccid_history:
        for bundle in (train, vali):
            bundle["X_seq_cat_ccid"][:, :-1] = 0
            bundle["X_seq_num_ccid"][:, :-1] = 0
        config = make_model_config(
            train, {"f": {"v": VOCAB_SIZE - 1}}, model_params("small")
        )
        model_builder = functools.partial(build_model, config.to_dict())
    result = fit(
        model_builder,
        train,
        vali,
        settings,
        distributed=distributed,
        on_epoch_end=EpochMarker(str(out), args.kill_after),
    )
    if is_main_process(distributed):
        save_file(result.weights, str(out / "weights.safetensors"))
        summary = {
            "history": result.history,
            "best_epoch": result.best_epoch,
            "best_metric": result.best_metric,
            "resumed_from_epoch": result.resumed_from_epoch,
        }
        (out / "result.json").write_text(json.dumps(summary))


if __name__ == "__main__":
    main()
