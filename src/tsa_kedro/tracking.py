"""Experiment tracking in MLflow beside kedro-mlflow.

kedro-mlflow (registered automatically when installed, configured by ``mlflow.yml``)
opens one MLflow run per ``kedro run`` and logs every node's parameters. This hook adds
what the plugin cannot know about:

* before kedro-mlflow connects, it creates the folder of a local SQLite tracking store
  (SQLite cannot create it, and a fresh data root has none), and checks an existing
  store file: a corrupt or locked one stops the run with one line naming the file and
  the switch ``TSA_MLFLOW_TRACKING=off``, instead of a database driver's traceback;
* after the node that produces ``training_history`` it logs every epoch's numbers as
  MLflow metrics with ``step`` = epoch, so the trainer needs no MLflow code;
* after the nodes that produce the main artefacts (metrics, model config, calibration
  parameters, the registration decision, and any matplotlib figure) it logs them to
  the run, and the metrics' numbers as run metrics;
* while the pipeline runs, an exit of the process (SIGTERM through
  :mod:`tsa_kedro.run_guard`, Ctrl-C, ``sys.exit``) ends the still-active MLflow run as
  ``KILLED`` (stopped by a signal) or ``FAILED``, not ``RUNNING`` forever and not
  ``FINISHED`` (what MLflow's own exit handler would record).

It does nothing when no MLflow run is active (tracking switched off). A failure to log
is reported as a warning: tracking never stops a training run.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import sqlite3
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import click
import mlflow
from kedro.framework.hooks import hook_impl
from mlflow.entities import RunStatus

from tsa_kedro.registry.metrics import flatten_numbers
from tsa_kedro.run_guard import stopped_by_signal

logger = logging.getLogger(__name__)

HISTORY_DATASET = "training_history"
METRIC_DATASETS = ("train_metrics", "calibration_metrics")
ARTEFACT_DATASETS = (
    "train_metrics",
    "calibration_metrics",
    "model_config",
    "bspline_parameters",
    "percentile_map",
    "registration_gate",
    "registration_decision",
)
TRACKING_SWITCH = "TSA_MLFLOW_TRACKING"
STORE_LOCK_TIMEOUT_S = 10.0


def history_records(history: Any) -> list[tuple[int, dict[str, float]]]:
    """Per-epoch ``(epoch, {metric: value})`` pairs from a training history.

    Accepted shapes: a list of per-epoch mappings (``epoch`` key optional), a mapping
    holding such a list under ``epochs`` or ``history``, a mapping of metric name to
    per-epoch list, or a pandas DataFrame with one row per epoch. Epochs without an
    ``epoch`` field are numbered from 1.

    Raises:
        TypeError: The history has none of these shapes.
    """
    if hasattr(history, "to_dict") and hasattr(history, "columns"):
        history = history.to_dict(orient="records")
    if isinstance(history, Mapping):
        for key in ("epochs", "history"):
            if isinstance(history.get(key), list):
                return history_records(history[key])
        lists = {k: v for k, v in history.items() if isinstance(v, list)}
        if lists:
            length = max(len(v) for v in lists.values())
            history = [
                {k: v[i] for k, v in lists.items() if i < len(v)} for i in range(length)
            ]
    if not isinstance(history, list):
        raise TypeError(
            f"training_history has an unsupported shape ({type(history).__name__})"
        )
    records = []
    for index, entry in enumerate(history, start=1):
        if not isinstance(entry, Mapping):
            raise TypeError(f"training_history epoch {index} is not a mapping")
        numbers = flatten_numbers(entry)
        epoch = int(numbers.pop("epoch", index))
        records.append((epoch, numbers))
    return records


def local_store_file(tracking_uri: str | None) -> Path | None:
    """The file of a local SQLite tracking store, or None for any other store."""
    if not tracking_uri or urlparse(tracking_uri).scheme != "sqlite":
        return None
    return Path(tracking_uri[len("sqlite:///") :])


def tracking_enabled() -> bool:
    """Whether experiment tracking is on (``TSA_MLFLOW_TRACKING`` is not ``off``)."""
    return os.environ.get(TRACKING_SWITCH, "on") != "off"


class TrackingStoreError(click.ClickException):
    """The local MLflow store cannot be used; the message names the file and the
    switch that turns tracking off."""


def check_local_store(path: Path, timeout: float = STORE_LOCK_TIMEOUT_S) -> None:
    """Check that an existing SQLite tracking store can be read and written.

    Opens the file, runs SQLite's ``quick_check`` and takes and releases the write
    lock. A missing file passes (MLflow creates it).

    Rejected: a file that is not an SQLite database or fails the check (corrupt,
    truncated), one that cannot be opened for writing, and one that another process
    keeps locked for longer than ``timeout`` seconds.

    Raises:
        TrackingStoreError: Naming the file, SQLite's reason and
            ``TSA_MLFLOW_TRACKING=off``.
    """
    if not path.exists():
        return
    try:
        connection = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=rw",
            uri=True,
            timeout=timeout,
            isolation_level=None,
        )
        try:
            verdict = connection.execute("PRAGMA quick_check").fetchone()[0]
            if verdict != "ok":
                raise sqlite3.DatabaseError(f"integrity check: {verdict}")
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("ROLLBACK")
        finally:
            connection.close()
    except sqlite3.Error as error:
        advice = (
            "another process keeps it locked: let that process finish or stop it"
            if isinstance(error, sqlite3.OperationalError) and "locked" in str(error)
            else "move the file aside (MLflow then creates a new one) or restore a copy"
        )
        raise TrackingStoreError(
            f"MLflow tracking store {path} cannot be used ({error}): {advice}; or run "
            f"with {TRACKING_SWITCH}=off to switch tracking off."
        ) from None


def end_interrupted_runs(owner_pid: int) -> None:
    """End every MLflow run still active as ``KILLED`` (a signal stopped the process)
    or ``FAILED`` (any other early exit).

    Args:
        owner_pid: The process that runs the pipeline. Processes forked from it
            inherit its exit handlers and a copy of its active runs; they must not
            end the parent's run when they exit.
    """
    if os.getpid() != owner_pid:
        return
    status = RunStatus.to_string(
        RunStatus.KILLED if stopped_by_signal() else RunStatus.FAILED
    )
    ended: list[str] = []  # kedro-mlflow re-enters the same run at every node
    while (run := mlflow.active_run()) is not None:
        try:
            mlflow.end_run(status)
        except Exception as exc:  # noqa: BLE001 - the process is exiting anyway
            logger.warning("Could not end MLflow run %s: %s", run.info.run_id, exc)
            return
        if run.info.run_id not in ended:
            ended.append(run.info.run_id)
            logger.warning("MLflow run %s ended as %s", run.info.run_id, status)


class MlflowTrackingHook:
    """Logs training history and the main artefacts to the active MLflow run."""

    def __init__(
        self,
        history_dataset: str = HISTORY_DATASET,
        metric_datasets: Iterable[str] = METRIC_DATASETS,
        artefact_datasets: Iterable[str] = ARTEFACT_DATASETS,
    ) -> None:
        """Choose the datasets to log by catalog name."""
        self.history_dataset = history_dataset
        self.metric_datasets = tuple(metric_datasets)
        self.artefact_datasets = tuple(artefact_datasets)

    @hook_impl(tryfirst=True)
    def after_context_created(self, context: Any) -> None:
        """Create the local SQLite store's folder and check an existing store file,
        before kedro-mlflow opens it.

        Raises:
            TrackingStoreError: Tracking is on and the store file is corrupt or locked.
        """
        patterns = context.config_loader.config_patterns
        patterns.setdefault("mlflow", ["mlflow*", "mlflow*/**", "**/mlflow*"])
        try:
            server = context.config_loader["mlflow"].get("server") or {}
        except Exception:  # noqa: BLE001 - no mlflow.yml: kedro-mlflow's defaults apply
            return
        for key in ("mlflow_tracking_uri", "mlflow_registry_uri"):
            store = local_store_file(server.get(key))
            if store is None:
                continue
            store.parent.mkdir(parents=True, exist_ok=True)
            if tracking_enabled():
                check_local_store(store)

    @hook_impl
    def before_pipeline_run(self) -> None:
        """From here on, an exit of the process ends the active run (see module)."""
        atexit.register(end_interrupted_runs, os.getpid())

    @hook_impl(trylast=True)
    def after_pipeline_run(self) -> None:
        """kedro-mlflow has ended the run."""
        atexit.unregister(end_interrupted_runs)

    @hook_impl(trylast=True)
    def on_pipeline_error(self) -> None:
        """kedro-mlflow has ended the run as ``FAILED``."""
        atexit.unregister(end_interrupted_runs)

    @hook_impl
    def after_node_run(self, node: Any, outputs: dict[str, Any]) -> None:
        """Log what this node produced, if tracking is on."""
        wanted = {self.history_dataset, *self.metric_datasets, *self.artefact_datasets}
        figures = [k for k, v in outputs.items() if hasattr(v, "savefig")]
        if not (wanted.intersection(outputs) or figures):
            return
        if mlflow.active_run() is None:
            return
        try:
            self._log(outputs)
        except Exception as exc:  # noqa: BLE001 - tracking must not stop a run
            logger.warning("MLflow tracking after node %s failed: %s", node.name, exc)

    def _log(self, outputs: dict[str, Any]) -> None:
        if self.history_dataset in outputs:
            records = history_records(outputs[self.history_dataset])
            for epoch, numbers in records:
                mlflow.log_metrics(numbers, step=epoch)
            logger.info("Logged %d epochs of training history to MLflow", len(records))
        for name in self.metric_datasets:
            if isinstance(outputs.get(name), Mapping):
                mlflow.log_metrics(flatten_numbers(outputs[name], f"{name}."))
        for name, data in outputs.items():
            if name in self.artefact_datasets or hasattr(data, "savefig"):
                _log_artefact(name, data)


def _log_artefact(name: str, data: Any) -> None:
    """Figures as PNG, mappings and lists as JSON, bytes as a file."""
    if hasattr(data, "savefig"):
        mlflow.log_figure(data, f"plots/{name}.png")
    elif isinstance(data, Mapping | list):
        mlflow.log_text(
            json.dumps(data, indent=2, default=str), f"artefacts/{name}.json"
        )
    elif isinstance(data, bytes):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_bytes(data)
            mlflow.log_artifact(str(path), artifact_path="artefacts")
