"""A ``kedro run`` stopped by SIGTERM in the middle of preprocessing: the MLflow run is
ended as KILLED and the run leaves no temporary folders, semaphores or workers."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import PROJECT_ROOT, kedro_env

SMALL_DEMO = ",".join(
    [
        "synthetic_profiles.default.n_customers=300",
        "ingest.ragged_tolerance=0.01",
        "ingest.chunk_size=400",  # several chunks per split, so a worker pool starts
        "preprocess.workers=2",
    ]
)
SHARED_MEMORY = Path("/dev/shm")


@dataclass
class KilledRun:
    pid: int
    returncode: int
    output: str
    data_root: Path
    tmpdir: Path
    semaphores_while_running: list[Path]
    semaphores_after: list[Path]
    survivors: list[str]


def _live_members(group: int) -> list[str]:
    """``pid state`` of the processes of a process group that are not zombies."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, pgrp = fields[0], int(fields[2])
        if pgrp == group and state != "Z":
            members.append(f"{stat.parent.name} {state}")
    return members


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory) -> KilledRun:
    root = tmp_path_factory.mktemp("sigterm")
    data_root, tmpdir, log = root / "data", root / "tmp", root / "kedro.log"
    tmpdir.mkdir()
    with open(log, "w") as output:
        process = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("kedro")),
                "run",
                "--pipeline=demo",
                f"--params={SMALL_DEMO}",
            ],
            cwd=PROJECT_ROOT,
            env=kedro_env(TSA_DATA_ROOT=str(data_root), TMPDIR=str(tmpdir)),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: workers can be found
        )
    deadline = time.monotonic() + 300
    while not any(tmpdir.rglob("tsa-chunks-*")):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no preprocessing spill folder appeared:\n{log.read_text()}")
        time.sleep(0.05)
    # The workers are starting: wait (up to 30 s) for the pool's semaphores, whose
    # clean-up is checked below, rather than a fixed time a slow machine can miss.
    deadline = time.monotonic() + 30
    semaphores = []
    while not semaphores and time.monotonic() < deadline:
        semaphores = sorted(SHARED_MEMORY.glob(f"sem.*{process.pid}*"))
        time.sleep(0.05)
    time.sleep(0.5)  # the workers are busy
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=180)
    deadline = time.monotonic() + 15
    while _live_members(process.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    survivors = _live_members(process.pid)
    semaphores_after = sorted(SHARED_MEMORY.glob(f"sem.*{process.pid}*"))
    if survivors:  # the test's own process group: do not leave them behind
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    return KilledRun(
        pid=process.pid,
        returncode=process.returncode,
        output=log.read_text(),
        data_root=data_root,
        tmpdir=tmpdir,
        semaphores_while_running=semaphores,
        semaphores_after=semaphores_after,
        survivors=survivors,
    )


@pytest.mark.slow
def test_sigterm_ends_the_mlflow_run_as_killed(killed_run) -> None:
    assert killed_run.returncode == 128 + signal.SIGTERM, killed_run.output[-4000:]
    client = MlflowClient(f"sqlite:///{killed_run.data_root}/09_registry/mlflow.db")
    runs = client.search_runs(
        [client.get_experiment_by_name("tsa_kedro").experiment_id]
    )
    assert [(r.data.tags["mlflow.runName"], r.info.status) for r in runs] == [
        ("demo", "KILLED")
    ]
    assert runs[0].info.end_time is not None
    assert f"MLflow run {runs[0].info.run_id} ended as KILLED" in killed_run.output


@pytest.mark.slow
def test_sigterm_leaves_no_temporary_folders_semaphores_or_workers(
    killed_run,
) -> None:
    assert killed_run.returncode == 128 + signal.SIGTERM, killed_run.output[-4000:]
    assert list(killed_run.tmpdir.iterdir()) == []
    assert killed_run.semaphores_while_running  # the check below can fail
    assert killed_run.semaphores_after == []
    assert killed_run.survivors == []
    data = killed_run.data_root
    assert sorted(p.name for p in data.rglob("*.__staging__*")) == []
    assert "Traceback" not in killed_run.output
