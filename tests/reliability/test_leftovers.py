"""What killed runs leave behind (scratch folders, named semaphores) is removed by the
next run; what live processes use is kept."""

from __future__ import annotations

import _multiprocessing
import contextlib
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT
from tsa_kedro.run_guard import (
    SCRATCH_PREFIX,
    RunGuardHook,
    ScratchFolder,
    remove_stale_scratch,
    remove_stale_semaphores,
)

SHARED_MEMORY = Path("/dev/shm")


def _killed_python(code: str) -> str:
    """Run ``code`` in a Python process that then SIGKILLs itself; its stdout."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            f"{code}\nimport os, signal, sys\nsys.stdout.flush()\n"
            "os.kill(os.getpid(), signal.SIGKILL)",
        ],
        cwd=PROJECT_ROOT,
        env={"PYTHONPATH": str(PROJECT_ROOT / "src")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    return result.stdout.strip()


def _scratch_of_a_killed_run(base: Path) -> Path:
    folder = Path(
        _killed_python(
            "from tsa_kedro.run_guard import ScratchFolder\n"
            f"scratch = ScratchFolder({str(base)!r})\n"
            "(scratch.path / 'tsa-chunks-left').mkdir()\n"
            "print(scratch.path)"
        )
    )
    assert folder.is_dir() and folder.name.startswith(SCRATCH_PREFIX)
    return folder


def test_scratch_folders_of_killed_runs_are_removed_and_live_ones_kept(tmp_path):
    dead = _scratch_of_a_killed_run(tmp_path)
    live = ScratchFolder(tmp_path)
    try:
        assert remove_stale_scratch(tmp_path) == [dead]
        assert not dead.exists()
        assert live.path.is_dir()
    finally:
        live.close()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not SHARED_MEMORY.is_dir(), reason="needs /dev/shm (Linux)")
def test_semaphores_of_killed_processes_are_removed_and_open_ones_kept():
    token = uuid.uuid4().hex[:10]
    stale_name, live_name = f"/mp-stale{token}", f"/mp-live{token}"
    _killed_python(
        "import _multiprocessing\n"
        f"semaphore = _multiprocessing.SemLock(1, 1, 1, {stale_name!r}, False)"
    )
    stale = SHARED_MEMORY / f"sem.{stale_name[1:]}"
    live = SHARED_MEMORY / f"sem.{live_name[1:]}"
    assert stale.exists()
    semaphore = _multiprocessing.SemLock(1, 1, 1, live_name, False)
    try:
        removed = remove_stale_semaphores()
        assert stale in removed and not stale.exists()
        assert live not in removed and live.exists()
    finally:
        del semaphore
        with contextlib.suppress(FileNotFoundError):
            _multiprocessing.sem_unlink(live_name)


def test_a_run_sweeps_first_then_works_in_its_own_scratch_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = _scratch_of_a_killed_run(tmp_path)
    handler_before = signal.getsignal(signal.SIGTERM)
    hook = RunGuardHook()
    hook.before_pipeline_run()
    try:
        assert not dead.exists()
        spill = Path(tempfile.mkdtemp(prefix="tsa-chunks-"))
        (scratch,) = tmp_path.iterdir()
        assert scratch.name.startswith(SCRATCH_PREFIX) and spill.parent == scratch
        assert signal.getsignal(signal.SIGTERM) is not handler_before
    finally:
        hook.after_pipeline_run()
    assert list(tmp_path.iterdir()) == []
    assert tempfile.gettempdir() == str(tmp_path)
    assert signal.getsignal(signal.SIGTERM) is handler_before
