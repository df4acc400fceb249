"""A corrupt or locked MLflow store stops a run with one line that names the file and
the switch that turns tracking off, before any node runs."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tsa_kedro.tracking import TrackingStoreError, check_local_store

TINY_SYNTHETIC = "--params=synthetic_profiles.default.n_customers=40"


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory) -> Path:
    """A real, small MLflow SQLite store."""
    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").create_experiment("tsa_kedro")
    return path


@pytest.mark.slow
def test_a_corrupt_store_stops_the_run_in_one_line(kedro_cli):
    store = kedro_cli.data_root / "09_registry" / "mlflow.db"
    store.parent.mkdir(parents=True)
    garbage = b"not an sqlite file " * 200
    store.write_bytes(garbage)

    result = kedro_cli("run", "--pipeline=synthetic", TINY_SYNTHETIC, check=False)

    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: MLflow tracking store {store} cannot be used (file is not a "
        "database): move the file aside (MLflow then creates a new one) or restore a "
        "copy; or run with TSA_MLFLOW_TRACKING=off to switch tracking off."
    ]
    assert "Traceback" not in result.stdout
    assert store.read_bytes() == garbage
    assert not (kedro_cli.data_root / "01_raw").exists()  # no node ran

    # the switch the message names works
    kedro_cli(
        "run",
        "--pipeline=synthetic",
        TINY_SYNTHETIC,
        env={"TSA_MLFLOW_TRACKING": "off"},
    )
    assert any((kedro_cli.data_root / "01_raw" / "orders").iterdir())


def test_a_truncated_store_is_named(mlflow_store, tmp_path):
    truncated = tmp_path / "mlflow.db"
    payload = mlflow_store.read_bytes()
    truncated.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(TrackingStoreError) as caught:
        check_local_store(truncated)
    assert caught.value.message == (
        f"MLflow tracking store {truncated} cannot be used (database disk image is "
        "malformed): move the file aside (MLflow then creates a new one) or restore "
        "a copy; or run with TSA_MLFLOW_TRACKING=off to switch tracking off."
    )


def test_a_store_locked_by_another_writer_is_named(mlflow_store, tmp_path):
    store = tmp_path / "mlflow.db"
    shutil.copy(mlflow_store, store)
    check_local_store(store, timeout=0.2)
    holder = sqlite3.connect(store, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(TrackingStoreError) as caught:
            check_local_store(store, timeout=0.2)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert caught.value.message == (
        f"MLflow tracking store {store} cannot be used (database is locked): another "
        "process keeps it locked: let that process finish or stop it; or run with "
        "TSA_MLFLOW_TRACKING=off to switch tracking off."
    )
    check_local_store(store, timeout=0.2)  # usable again once released
