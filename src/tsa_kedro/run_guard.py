"""A stopped ``kedro run`` cleans up after itself; the next run cleans up after one that
could not.

* SIGTERM (``kill``, ``docker stop``, a scheduler cancelling a job) stops a run the way
  Ctrl-C does: Python unwinds the stack, so ``finally`` blocks and exit handlers run
  (preprocessing's worker pool is shut down, staging folders and temporary folders are
  removed, :mod:`tsa_kedro.tracking` ends the MLflow run as ``KILLED``), and the
  process exits with status 143 (128 + SIGTERM). A second SIGTERM during that clean-up
  gets the previous handler (by default: the process ends at once).
* While the pipeline runs, Python's temporary folder (``tempfile.gettempdir()``) is a
  scratch folder of the run, ``<tmp>/tsa-run-<pid>-<random>``, which the run holds an
  ``flock`` on and removes at the end. Everything the run's code creates with
  ``tempfile`` (preprocessing's ``tsa-chunks-*`` spill folders, training's
  ``tsa-dist-*``) lands there. ``TMPDIR`` itself is left alone, so child programs and R
  keep the system's temporary folder.
* Before a pipeline runs, leftovers of runs that died without cleaning up (SIGKILL, out
  of memory, power loss) are removed: scratch folders whose lock is free (the kernel
  releases an ``flock`` when its holder dies, whatever killed it) and multiprocessing
  semaphores in ``/dev/shm`` (``sem.mp-*``, and ``sem.loky-*`` once scikit-learn's
  joblib has renamed them) that belong to this user and that no live process has open.

Works on Linux (``flock``, ``/proc``, ``/dev/shm``); elsewhere the sweep of semaphores
does nothing.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import logging
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from kedro.framework.hooks import hook_impl

logger = logging.getLogger(__name__)

SCRATCH_PREFIX = "tsa-run-"
SIGTERM_EXIT_STATUS = 128 + signal.SIGTERM
SEMAPHORE_PATTERNS = ("sem.mp-*", "sem.loky-*")
SHARED_MEMORY = Path("/dev/shm")

_stopped_by: int | None = None
_handlers_before: dict[int, Any] = {}


class RunTerminated(SystemExit):
    """Raised in the main thread when the process receives SIGTERM."""


def stopped_by_signal() -> int | None:
    """The signal that stopped this process's run, or None."""
    return _stopped_by


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    global _stopped_by  # noqa: PLW0603 - one process, one signal
    _stopped_by = signum
    signal.signal(signal.SIGTERM, _handlers_before.get(signal.SIGTERM, signal.SIG_DFL))
    raise RunTerminated(SIGTERM_EXIT_STATUS)


def stop_on_sigterm() -> bool:
    """Make SIGTERM raise :class:`RunTerminated` in the main thread.

    Returns:
        Whether the handler was installed (only the main thread can install one).
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    if previous is not _raise_terminated:
        _handlers_before[signal.SIGTERM] = previous
    return True


def restore_sigterm() -> None:
    """Put back the SIGTERM handler that :func:`stop_on_sigterm` replaced."""
    previous = _handlers_before.pop(signal.SIGTERM, None)
    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, previous)


def _try_lock(folder: Path) -> int | None:
    """An open descriptor holding an exclusive ``flock`` on ``folder``, or None when
    another open descriptor (a live run) holds it."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    return descriptor


class ScratchFolder:
    """A run's own temporary folder, locked while the run lives.

    The folder is created under a name the sweep ignores, locked, then renamed, so a
    sweep in another process never sees it unlocked.
    """

    def __init__(self, base: str | os.PathLike[str] | None = None):
        """Create and lock ``<base>/tsa-run-<pid>-<random>``.

        Args:
            base: Where to create it (default: ``tempfile.gettempdir()``).
        """
        base = Path(base or tempfile.gettempdir())
        pending = Path(tempfile.mkdtemp(prefix=f".{SCRATCH_PREFIX}", dir=base))
        self._descriptor = _try_lock(pending)
        self.path = base / f"{SCRATCH_PREFIX}{os.getpid()}-{pending.name[-8:]}"
        pending.rename(self.path)
        self._owner = os.getpid()
        self._tempdir_before: str | None = None
        self._active = False

    def activate(self) -> None:
        """Make the folder Python's temporary folder (``tempfile.tempdir``)."""
        self._tempdir_before = tempfile.tempdir
        tempfile.tempdir = str(self.path)
        self._active = True

    def close(self) -> None:
        """Restore the temporary folder, remove the scratch folder, release the lock.

        Does nothing in a process forked from the owner (it inherits the exit
        handlers; the folder is still the owner's).
        """
        if os.getpid() != self._owner:
            return
        if self._active:
            tempfile.tempdir = self._tempdir_before
            self._active = False
        shutil.rmtree(self.path, ignore_errors=True)
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None


def remove_stale_scratch(base: str | os.PathLike[str] | None = None) -> list[Path]:
    """Remove the scratch folders of runs that are no longer alive.

    Kept: folders whose ``flock`` is held (their run, or a child it forked, is alive).

    Args:
        base: The folder holding scratch folders (default: ``tempfile.gettempdir()``).

    Returns:
        The folders removed.
    """
    removed = []
    for folder in Path(base or tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*"):
        if not folder.is_dir() or folder.is_symlink():
            continue
        try:
            descriptor = _try_lock(folder)
        except OSError:  # gone meanwhile, or not ours to open
            continue
        if descriptor is None:
            continue
        try:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        finally:
            os.close(descriptor)
    return removed


def _inode(status: os.stat_result) -> tuple[int, int, int]:
    return os.major(status.st_dev), os.minor(status.st_dev), status.st_ino


def _mapped_inodes(folder: Path) -> set[tuple[int, int, int]]:
    """``(major, minor, inode)`` of the files under ``folder`` that some process we can
    inspect has mapped. Inodes, not names: glibc maps a semaphore under a temporary
    name before linking it to its real one, and ``/proc/<pid>/maps`` keeps the
    temporary name."""
    prefix = f"{folder}/"
    mapped = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        with contextlib.suppress(OSError):
            for line in maps.read_text().splitlines():
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[5].startswith(prefix):
                    major, minor = (int(part, 16) for part in fields[3].split(":"))
                    mapped.add((major, minor, int(fields[4])))
    return mapped


def remove_stale_semaphores(folder: Path = SHARED_MEMORY) -> list[Path]:
    """Remove this user's multiprocessing semaphores that no live process has open.

    A named semaphore is a small file in ``/dev/shm`` that every process using it has
    mapped (``/proc/<pid>/maps``); one that nobody maps was left by processes that
    died before unlinking it. Kept: other users' semaphores, semaphores of other
    libraries, and any semaphore a live process maps. Processes in another PID
    namespace (another container sharing ``/dev/shm``) are not visible here.

    Args:
        folder: The shared-memory folder.

    Returns:
        The semaphore files removed.
    """
    candidates = [
        path
        for pattern in SEMAPHORE_PATTERNS
        for path in folder.glob(pattern)
        if _owned_by_me(path)
    ]
    if not candidates:
        return []
    in_use = _mapped_inodes(folder)
    removed = []
    for path in candidates:
        with contextlib.suppress(FileNotFoundError):
            if _inode(path.stat()) not in in_use:
                path.unlink()
                removed.append(path)
    return removed


def _owned_by_me(path: Path) -> bool:
    try:
        return path.stat().st_uid == os.getuid()
    except OSError:
        return False


def remove_stale_leftovers() -> None:
    """Remove dead runs' scratch folders and semaphores; log what went.

    A failure is a warning: cleaning up never stops a run.
    """
    try:
        for folder in remove_stale_scratch():
            logger.info("removed %s, left by a run that was killed", folder)
        semaphores = remove_stale_semaphores()
    except OSError as error:
        logger.warning("could not remove what killed runs left behind: %s", error)
        return
    if semaphores:
        logger.info(
            "removed %d semaphores left in %s by killed processes",
            len(semaphores),
            SHARED_MEMORY,
        )


class RunGuardHook:
    """Clean-up on SIGTERM, a scratch folder per run, and the sweep of leftovers."""

    def __init__(self) -> None:
        """No scratch folder until a pipeline runs."""
        self._scratch: ScratchFolder | None = None

    @hook_impl
    def before_pipeline_run(self) -> None:
        """Sweep leftovers, open the run's scratch folder, stop cleanly on SIGTERM."""
        self._finish()  # a previous run in this process that never reached its end
        remove_stale_leftovers()
        self._scratch = ScratchFolder()
        self._scratch.activate()
        stop_on_sigterm()
        atexit.register(self._finish)

    @hook_impl
    def after_pipeline_run(self) -> None:
        """Undo what :meth:`before_pipeline_run` set up."""
        self._finish()

    @hook_impl
    def on_pipeline_error(self) -> None:
        """Undo what :meth:`before_pipeline_run` set up."""
        self._finish()

    def _finish(self) -> None:
        atexit.unregister(self._finish)
        restore_sigterm()
        if self._scratch is not None:
            self._scratch.close()
            self._scratch = None
