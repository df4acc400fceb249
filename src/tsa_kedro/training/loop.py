"""The training loop: Adam + OneCycle, cross-entropy, early stopping on validation ROC
AUC, gradient clipping, mixed precision on CUDA, DDP, per-epoch checkpoints and resume.

Entry point: :func:`fit`. It runs on CPU, on one GPU, under ``torchrun`` or across
SageMaker hosts (see :mod:`tsa_kedro.training.distributed`); every rank trains on its
shard of the rows, rank 0 alone writes the checkpoint, and every rank ends with rank 0's
result.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from tsa_kedro.features.contract import (
    LABEL_KEY,
    ORDER_ID_KEY,
    Bundle,
    bundle_widths,
    model_arguments,
)
from tsa_kedro.models.predict import score_bundle
from tsa_kedro.training.checkpoint import (
    CheckpointError,
    CheckpointStore,
    capture_rng_state,
    check_resumable,
    describe_change,
    portable_identity,
    restore_rng_state,
)
from tsa_kedro.training.data import (
    BatchPrefetcher,
    ShardedBatchSampler,
    attach_bundle,
    detach_bundle,
    labels_of,
    shard_range,
)
from tsa_kedro.training.distributed import (
    DistContext,
    DistributedSettings,
    barrier,
    broadcast_from_main,
    gather_to_all,
    run_distributed,
)
from tsa_kedro.training.metrics import roc_auc

logger = logging.getLogger(__name__)

ModelBuilder = Callable[[], nn.Module]
EpochCallback = Callable[[int, dict[str, Any]], None]


@dataclass(frozen=True)
class TrainingSettings:
    """Hyper-parameters and housekeeping of one training run.

    Attributes:
        epochs: Most epochs to run.
        batch_size: Rows per optimiser step and process (under DDP each rank takes
            this many rows per step).
        eval_batch_size: Rows per forward pass when scoring.
        lr: Adam's initial learning rate; OneCycle starts here (``div_factor`` is
            ``max_lr / lr``).
        max_lr: OneCycle's peak learning rate.
        patience: Epochs without a better validation ROC AUC before stopping.
        grad_clip_norm: Global gradient-norm clip.
        weight_decay: Adam's L2 penalty.
        seed: Seeds model initialisation, shuffling and dropout.
        checkpoint_dir: Folder (local or fsspec URL) of the per-epoch checkpoint;
            ``None`` disables checkpoints.
        resume: Continue an unfinished run found in ``checkpoint_dir``.
        num_threads: torch CPU threads per process (``None`` leaves torch's default).
        progress: Show a progress bar per epoch on rank 0 (only on a terminal).
        find_unused_parameters: Let DDP tolerate parameters without a gradient in a
            step (the model skips the ccid stack for batches without ccid history, and
            a mixture-of-experts layer may route no token to an expert).
        compile_on_gpu: ``torch.compile`` the training forward and backward on a CUDA
            device, with static shapes (an epoch's last, smaller batch compiles once
            more). Inductor fuses the step's layer norms, dropouts and casts: 1.95x
            the eager step's samples/s at batch 8192 on an H200
            (docs/source/benchmarks.md). Ignored on the CPU, where compiling takes
            minutes and gains little; validation scoring stays eager.
    """

    epochs: int = 10
    batch_size: int = 256
    eval_batch_size: int = 1024
    lr: float = 1e-3
    max_lr: float = 3e-3
    patience: int = 3
    grad_clip_norm: float = 1.0
    weight_decay: float = 0.0
    seed: int = 0
    checkpoint_dir: str | None = None
    resume: bool = True
    num_threads: int | None = None
    progress: bool = True
    find_unused_parameters: bool = True
    compile_on_gpu: bool = True

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainingSettings:
        """Build from a parameters block; unknown keys and bad values name the key.

        Raises:
            ValueError: On an unknown key or a value out of range.
        """
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown training parameters: {sorted(unknown)}")
        settings = cls(**values)
        positive = (
            "epochs",
            "batch_size",
            "eval_batch_size",
            "lr",
            "max_lr",
            "patience",
        )
        for key in positive:
            if not getattr(settings, key) > 0:
                raise ValueError(
                    f"training parameter {key} must be > 0, got {values[key]}"
                )
        if settings.max_lr < settings.lr:
            raise ValueError(
                f"training parameter max_lr ({settings.max_lr}) must be >= lr "
                f"({settings.lr})"
            )
        if not settings.grad_clip_norm > 0:
            raise ValueError("training parameter grad_clip_norm must be > 0")
        return settings

    def run_identity(self) -> dict[str, Any]:
        """The settings that identify a run; of these, only those in
        :data:`tsa_kedro.training.checkpoint.RESUMABLE_CHANGES` may change when an
        unfinished run is resumed."""
        identity = asdict(self)
        for key in (
            "checkpoint_dir",
            "resume",
            "num_threads",
            "progress",
            "eval_batch_size",
            "find_unused_parameters",
            "compile_on_gpu",
        ):
            identity.pop(key)
        return identity


@dataclass
class TrainingResult:
    """What a finished run hands back (rank 0's view, identical on every rank)."""

    weights: dict[str, torch.Tensor]
    history: list[dict[str, Any]]
    best_epoch: int
    best_metric: float
    validation_scores: np.ndarray
    stopped_early: bool
    resumed_from_epoch: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_payload(self) -> dict[str, Any]:
        """A ``weights_only``-loadable form (tensors, numbers, strings, lists, dicts)."""
        payload = asdict(self)
        payload["validation_scores"] = torch.from_numpy(self.validation_scores)
        return payload

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> TrainingResult:
        """Inverse of :meth:`to_payload`."""
        values = dict(payload)
        values["validation_scores"] = values["validation_scores"].numpy()
        return cls(**values)


@dataclass(frozen=True)
class Precision:
    """Autocast dtype (``None`` = float32) and whether a gradient scaler is needed."""

    dtype: torch.dtype | None
    use_scaler: bool

    @classmethod
    def for_device(cls, device: torch.device) -> Precision:
        """bf16 on CUDA where supported, fp16 + scaler on older GPUs, float32 on CPU."""
        if device.type != "cuda":
            return cls(dtype=None, use_scaler=False)
        if torch.cuda.is_bf16_supported():
            return cls(dtype=torch.bfloat16, use_scaler=False)
        return cls(dtype=torch.float16, use_scaler=True)

    def autocast(self, device: torch.device) -> torch.autocast:
        """The autocast context for forward passes."""
        return torch.autocast(
            device.type,
            dtype=self.dtype or torch.float32,
            enabled=self.dtype is not None,
        )


def fingerprint(identity: Mapping[str, Any]) -> str:
    """A stable hash of what identifies a run (config, settings, data shapes)."""
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def fit(
    model_builder: ModelBuilder,
    train: Bundle,
    vali: Bundle,
    settings: TrainingSettings,
    *,
    distributed: DistributedSettings | None = None,
    run_identity: Mapping[str, Any] | None = None,
    on_epoch_end: EpochCallback | None = None,
    names: tuple[str, str] = ("train.model_input", "vali.model_input"),
) -> TrainingResult:
    """Train a model and return its best weights (by validation ROC AUC).

    Args:
        model_builder: Picklable callable returning a fresh model whose ``forward``
            takes the five model inputs and returns logits ``(B, 2)``.
        train: Training tensor bundle (memory-mapped arrays are fine and stay mapped
            in worker processes).
        vali: Validation tensor bundle.
        settings: Training hyper-parameters and checkpointing.
        distributed: How to find other ranks (``None``: defaults; a single process
            unless ``torchrun`` or a SageMaker host configuration says otherwise).
        run_identity: Facts that identify the run besides ``settings`` (for example the
            model configuration); a checkpoint of a different run is not resumed
            (``epochs`` and ``patience`` may differ, see
            :data:`tsa_kedro.training.checkpoint.RESUMABLE_CHANGES`).
        on_epoch_end: Called on every rank as ``on_epoch_end(epoch, record)`` after the
            epoch's checkpoint is written; must be picklable for spawned workers.
        names: Dataset names used in error messages.

    Returns:
        The training result.

    Raises:
        TensorContractError: Empty splits, bad layouts or a single-class validation set.
        CheckpointError: A corrupt checkpoint, or an unfinished one of another run
            (the message names what differs).
    """
    train_widths = bundle_widths(train, names[0])
    vali_widths = bundle_widths(vali, names[1])
    labels_of(vali, names[1])
    identity = {
        "settings": settings.run_identity(),
        "run": dict(run_identity or {}),
        "train_rows": train_widths.n_samples,
        "vali_rows": vali_widths.n_samples,
        "train_digest": _data_digest(train),
        "vali_digest": _data_digest(vali),
    }
    job = _RankJob(
        model_builder=model_builder,
        train=detach_bundle(train),
        vali=detach_bundle(vali),
        settings=settings,
        identity=identity,
        on_epoch_end=on_epoch_end,
        names=names,
    )
    payload = run_distributed(_train_rank, (job,), distributed or DistributedSettings())
    return TrainingResult.from_payload(payload)


def _data_digest(bundle: Bundle) -> str:
    """A cheap content hash (labels and order ids), so that a checkpoint is not resumed
    on other data of the same size."""
    digest = hashlib.sha256()
    for key in (LABEL_KEY, ORDER_ID_KEY):
        if key in bundle:
            digest.update(np.ascontiguousarray(bundle[key]).tobytes())
    return digest.hexdigest()


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_optimizer(
    parameters: Iterable[nn.Parameter], lr: float, weight_decay: float
) -> torch.optim.Adam:
    """Adam, in its fused implementation (CPU and CUDA).

    The fused update is one pass over all parameters instead of about ten operators per
    parameter tensor (the production model has 277): 20 ms against 226 ms per step
    for the production model on 2 CPU threads, the same update to rounding
    (docs/source/benchmarks.md).
    """
    return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay, fused=True)


def predict_scores(
    model: nn.Module,
    bundle: Bundle,
    context: DistContext,
    batch_size: int,
    precision: Precision | None = None,
) -> np.ndarray:
    """Class-1 probabilities for every row of ``bundle``, in row order, on every rank.

    Each rank scores a contiguous shard (``score_bundle``); the shards are gathered
    in rank order.
    """
    precision = precision or Precision.for_device(context.device)
    n_rows = bundle["X_num"].shape[0]
    start, stop = shard_range(n_rows, context.rank, context.world_size)
    was_training = model.training
    model.eval()
    local = score_bundle(
        model,
        bundle,
        batch_size,
        context.device,
        rows=np.arange(start, stop),
        autocast=lambda: precision.autocast(context.device),
    )
    model.train(was_training)
    return np.concatenate(gather_to_all(context, local)).astype(np.float32)


def _log_loss(labels: np.ndarray, scores: np.ndarray) -> float:
    clipped = np.clip(scores.astype(np.float64), 1e-7, 1 - 1e-7)
    return float(-np.mean(labels * np.log(clipped) + (1 - labels) * np.log1p(-clipped)))


def _state_on_cpu(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


class _Run:
    """State of one rank's run; exists to keep :func:`_train_rank` readable."""

    def __init__(
        self,
        context: DistContext,
        model_builder: ModelBuilder,
        n_train: int,
        settings: TrainingSettings,
    ):
        self.context = context
        self.settings = settings
        _seed_everything(settings.seed)
        self.model = model_builder().to(context.device)
        if context.is_distributed:
            device_ids = (
                [context.device.index] if context.device.type == "cuda" else None
            )
            self.network: nn.Module = DistributedDataParallel(
                self.model,
                device_ids=device_ids,
                find_unused_parameters=settings.find_unused_parameters,
            )
        else:
            self.network = self.model
        if settings.compile_on_gpu and context.device.type == "cuda":
            self.network = torch.compile(self.network, dynamic=False)
        self.precision = Precision.for_device(context.device)
        self.sampler = ShardedBatchSampler(
            n_train,
            settings.batch_size,
            rank=context.rank,
            world_size=context.world_size,
            seed=settings.seed,
        )
        self.optimizer = make_optimizer(
            self.model.parameters(), settings.lr, settings.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer,
            max_lr=settings.max_lr,
            total_steps=settings.epochs * len(self.sampler),
            div_factor=settings.max_lr / settings.lr,
        )
        self.scaler = torch.amp.GradScaler(
            context.device.type, enabled=self.precision.use_scaler
        )
        self.epoch = 0
        self.best_metric = -math.inf
        self.best_epoch = 0
        self.best_weights = _state_on_cpu(self.model)
        self.best_scores = np.empty(0, dtype=np.float32)
        self.epochs_without_improvement = 0
        self.history: list[dict[str, Any]] = []
        self.completed = False
        # Dropout differs between ranks; initialisation above was identical.
        _seed_everything(settings.seed + 1 + context.rank)

    def state(self, identity: Mapping[str, Any]) -> dict[str, Any]:
        """The checkpoint payload (RNG states of every rank; call on every rank)."""
        rng_states = gather_to_all(self.context, capture_rng_state())
        return {
            "fingerprint": fingerprint(identity),
            "identity": portable_identity(identity),
            "epoch": self.epoch,
            "completed": self.completed,
            "world_size": self.context.world_size,
            "model": _state_on_cpu(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "best_weights": self.best_weights,
            "best_scores": torch.from_numpy(self.best_scores),
            "epochs_without_improvement": self.epochs_without_improvement,
            "history": self.history,
            "sampler": self.sampler.state_dict(),
            "rng": rng_states,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint written by :meth:`state`."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        scheduler_state = dict(state["scheduler"])
        if scheduler_state.get("total_steps") != self.scheduler.total_steps:
            # ``epochs`` changed: keep this run's schedule length (and OneCycle's
            # phases, computed from it) and continue from the saved step.
            scheduler_state.pop("total_steps")
            scheduler_state.pop("_schedule_phases", None)
        self.scheduler.load_state_dict(scheduler_state)
        self.scaler.load_state_dict(state["scaler"])
        self.sampler.load_state_dict(state["sampler"])
        self.epoch = int(state["epoch"])
        self.best_metric = float(state["best_metric"])
        self.best_epoch = int(state["best_epoch"])
        self.best_weights = state["best_weights"]
        self.best_scores = state["best_scores"].numpy()
        self.epochs_without_improvement = int(state["epochs_without_improvement"])
        self.history = list(state["history"])
        restore_rng_state(state["rng"][self.context.rank])

    def progress_bar(self) -> tqdm:
        """The epoch's progress bar: rank 0 only, and only on a terminal."""
        show = self.settings.progress and self.context.is_main
        return tqdm(
            total=len(self.sampler),
            desc=f"epoch {self.epoch}/{self.settings.epochs}",
            disable=None if show else True,
            unit="batch",
        )

    def train_epoch(self, train: Bundle, bar: tqdm) -> float:
        """One pass over this rank's shard; returns the mean loss over all ranks."""
        context, settings = self.context, self.settings
        self.sampler.set_epoch(self.epoch)
        self.network.train()
        loss_sum = torch.zeros((), device=context.device, dtype=torch.float64)
        rows = torch.zeros((), device=context.device, dtype=torch.float64)
        batches = BatchPrefetcher(train, self.sampler, context.device)
        for step, (indices, batch) in enumerate(batches):
            with self.precision.autocast(context.device):
                logits = self.network(*model_arguments(batch))
            loss = F.cross_entropy(logits.float(), batch[LABEL_KEY])
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), settings.grad_clip_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            loss_sum += loss.detach().double() * indices.size
            rows += indices.size
            bar.update()
            if not bar.disable and step % 20 == 0:
                bar.set_postfix(loss=f"{(loss_sum / rows).item():.4f}")
        if context.is_distributed:
            torch.distributed.all_reduce(loss_sum)
            torch.distributed.all_reduce(rows)
        return float(loss_sum / rows)

    def end_epoch(
        self,
        train_loss: float,
        scores: np.ndarray,
        labels: np.ndarray,
        seconds: float,
        names: tuple[str, str],
    ) -> dict[str, Any]:
        """Early-stopping bookkeeping and the history record of the epoch."""
        auc = roc_auc(labels, scores, name=names[1])
        improved = auc > self.best_metric
        if improved:
            self.best_metric, self.best_epoch = auc, self.epoch
            self.best_weights = _state_on_cpu(self.model)
            self.best_scores = scores
            self.epochs_without_improvement = 0
        else:
            self.epochs_without_improvement += 1
        record = {
            "epoch": self.epoch,
            "train_loss": train_loss,
            "vali_loss": _log_loss(labels, scores),
            "vali_roc_auc": auc,
            "lr": float(self.scheduler.get_last_lr()[0]),
            "seconds": seconds,
            "improved": improved,
        }
        self.history.append(record)
        return record


@dataclass(frozen=True)
class _RankJob:
    """Everything a rank needs; picklable, so spawned workers can receive it."""

    model_builder: ModelBuilder
    train: Mapping[str, Any]
    vali: Mapping[str, Any]
    settings: TrainingSettings
    identity: dict[str, Any]
    on_epoch_end: EpochCallback | None
    names: tuple[str, str]


def _train_rank(context: DistContext, job: _RankJob) -> dict[str, Any]:
    """One rank's whole run; returns rank 0's result payload on every rank."""
    train, vali = attach_bundle(job.train), attach_bundle(job.vali)
    settings, names, on_epoch_end = job.settings, job.names, job.on_epoch_end
    if settings.num_threads:
        torch.set_num_threads(settings.num_threads)
    identity = {**job.identity, "world_size": context.world_size}
    labels = labels_of(vali, names[1])
    run = _Run(context, job.model_builder, train["X_num"].shape[0], settings)
    store = (
        CheckpointStore(settings.checkpoint_dir) if settings.checkpoint_dir else None
    )
    resumed_from = _maybe_resume(run, store, identity, context)
    while run.epoch < settings.epochs and not run.completed:
        run.epoch += 1
        started = time.perf_counter()
        with run.progress_bar() as bar:
            train_loss = run.train_epoch(train, bar)
            scores = predict_scores(
                run.model, vali, context, settings.eval_batch_size, run.precision
            )
            record = run.end_epoch(
                train_loss, scores, labels, time.perf_counter() - started, names
            )
            bar.set_postfix(
                loss=f"{train_loss:.4f}", auc=f"{record['vali_roc_auc']:.4f}"
            )
        if context.is_main:
            logger.info(
                "epoch %d: train loss %.4f, validation ROC AUC %.4f (best %.4f, epoch %d)",
                run.epoch,
                train_loss,
                record["vali_roc_auc"],
                run.best_metric,
                run.best_epoch,
            )
        run.completed = (
            run.epochs_without_improvement >= settings.patience
            or run.epoch == settings.epochs
        )
        _write_checkpoint(run, store, identity)
        if on_epoch_end is not None:
            on_epoch_end(run.epoch, record)
    stopped_early = run.epoch < settings.epochs
    if context.is_main and stopped_early:
        logger.info(
            "early stop after epoch %d (patience %d)", run.epoch, settings.patience
        )
    result = TrainingResult(
        weights=run.best_weights,
        history=run.history,
        best_epoch=run.best_epoch,
        best_metric=run.best_metric,
        validation_scores=run.best_scores,
        stopped_early=stopped_early,
        resumed_from_epoch=resumed_from,
    )
    return broadcast_from_main(context, result.to_payload())


def _write_checkpoint(
    run: _Run, store: CheckpointStore | None, identity: Mapping[str, Any]
) -> None:
    if store is None:
        return
    state = run.state(identity)
    if run.context.is_main:
        store.save(state)
    barrier(run.context)


def _maybe_resume(
    run: _Run,
    store: CheckpointStore | None,
    identity: Mapping[str, Any],
    context: DistContext,
) -> int | None:
    """Restore an unfinished run of the same identity; returns the epoch resumed at.

    Rank 0 reads the checkpoint and shares it, so hosts need not see the same disk.
    A resumed run that the new ``epochs`` or ``patience`` already ends is marked
    finished (and its checkpoint rewritten as such) without training further.
    """
    if store is None or not run.settings.resume:
        return None
    state = None
    error = None
    if context.is_main:
        try:
            state = store.load()
        except CheckpointError as failure:
            error = str(failure)
    state, error = broadcast_from_main(context, (state, error))
    if error is not None:
        raise CheckpointError(error)
    if state is None:
        return None
    if state["completed"]:
        if context.is_main:
            logger.info(
                "checkpoint %s is of a finished run; training afresh", store.url
            )
        return None
    changes = {}
    if state["fingerprint"] != fingerprint(identity):
        if "identity" not in state:  # written before identities were stored
            raise CheckpointError(
                f"checkpoint {store.url} belongs to an unfinished run with another "
                "model configuration, training parameters, data or world size. Delete "
                "it (or set resume: false) to train afresh, or restore the run's "
                "settings."
            )
        changes = check_resumable(store.url, state["identity"], identity)
    run.restore(state)
    settings = run.settings
    run.completed = (
        run.epochs_without_improvement >= settings.patience
        or run.epoch >= settings.epochs
    )
    if context.is_main:
        for key, (saved, current) in changes.items():
            logger.info(
                "resuming with a changed %s", describe_change(key, saved, current)
            )
        logger.info(
            "resuming from %s: epoch %d done, %s",
            store.url,
            run.epoch,
            "nothing left to train"
            if run.completed
            else f"continuing with epoch {run.epoch + 1}",
        )
    if run.completed:
        _write_checkpoint(run, store, identity)
    return run.epoch + 1
