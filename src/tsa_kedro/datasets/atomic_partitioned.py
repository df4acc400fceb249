"""A partitioned dataset whose save is all or nothing, one writer at a time."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import uuid
from collections.abc import Iterator
from typing import Any

from kedro.io.core import DatasetError
from kedro_datasets.partitions import PartitionedDataset

logger = logging.getLogger(__name__)

STAGING_SUFFIX = ".__staging__"
REPLACED_SUFFIX = ".__replaced__"


def _save_token() -> str:
    """A name part unique to one save: this process, plus randomness."""
    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def folder_lock(folder: str, what: str) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``folder`` (created if missing).

    Another process (or thread) that asks for the same lock waits until it is
    released; the kernel releases it when its holder exits, even when killed. A
    filesystem that refuses ``flock`` on folders (some network filesystems) gets a
    warning and no lock.

    Args:
        folder: A local folder.
        what: What the lock protects, for the messages.

    Yields:
        Whether the lock is held.
    """
    os.makedirs(folder, exist_ok=True)
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("waiting for another process that is writing %s", what)
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        except OSError as error:
            logger.warning(
                "cannot lock %s (%s): writing %s without waiting for other writers",
                folder,
                error,
                what,
            )
            yield False
            return
        yield True
    finally:
        os.close(descriptor)  # releases the lock


class AtomicPartitionedDataset(PartitionedDataset):
    """``PartitionedDataset`` that never shows a half-written or mixed folder.

    ``save`` writes every partition into a staging folder of its own
    (``<path>.__staging__<pid>-<random>``) and only when all of them are written
    swaps it in for the old folder. A failed or interrupted save removes its staging
    folder and leaves the previous partitions untouched. Partitions of an earlier,
    longer save never survive.

    On a local filesystem, saves of the same folder take turns: a save holds an
    exclusive ``flock`` on the parent folder from the first partition to the swap,
    and a second writer (another ``kedro run`` on the same data root) waits for it,
    then replaces the first writer's folder with its own complete one. Under the
    lock, leftovers of writers that died (staging and replaced folders) are removed.
    Where the filesystem refuses the lock (some network filesystems), saves go ahead
    without it, each in its own staging folder, and leftovers stay.
    The swap is two renames (old folder aside, staging folder in), so a reader sees
    the old folder, briefly no folder, or the new one.

    On object stores (``s3://``) there is no lock and no rename: the staging prefix
    is still unique to the save, and the swap copies every object over, so the
    window in which readers see a missing folder is longer, but they never see a
    mix. A writer that dies there leaves its staging prefix behind.

    Example catalog entry:

    .. code-block:: yaml

        train.raw_chunks:
          type: tsa_kedro.datasets.atomic_partitioned.AtomicPartitionedDataset
          path: ${globals:data_root}/02_intermediate/train/raw_chunks
          dataset:
            type: pandas.ParquetDataset
          filename_suffix: .parquet
    """

    def save(self, data: dict[str, Any]) -> None:
        """Write all partitions of ``data``, then swap them in for the old ones.

        Rejected: an empty ``data`` (it would replace the folder with nothing).

        Raises:
            DatasetError: ``data`` has no partitions.
        """
        if not data:
            raise DatasetError(f"Refusing to save no partitions to '{self._path}'")
        if self._protocol == "file":
            final = self._normalized_path.rstrip(self._sep)
            with folder_lock(os.path.dirname(final) or ".", final) as locked:
                if locked:  # no other writer is alive: leftovers are of dead ones
                    self._remove_leftovers(final)
                self._stage_and_swap(data)
        else:
            self._stage_and_swap(data)
        self._invalidate_caches()

    def _remove_leftovers(self, final: str) -> None:
        """Staging and replaced folders of this path; only call under the lock."""
        fs = self._filesystem
        for suffix in (STAGING_SUFFIX, REPLACED_SUFFIX):
            for leftover in fs.glob(f"{final}{suffix}*"):
                logger.info("removing %s, left by an interrupted save", leftover)
                fs.rm(leftover, recursive=True)

    def _stage_and_swap(self, data: dict[str, Any]) -> None:
        final_path = self._path
        final = self._normalized_path
        token = _save_token()
        self._path = final_path.rstrip(self._sep) + STAGING_SUFFIX + token
        staging = self._normalized_path
        fs = self._filesystem
        try:
            super().save(data)
        except BaseException:  # also an interrupted run (SystemExit)
            if fs.exists(staging):
                fs.rm(staging, recursive=True)
            raise
        finally:
            self._path = final_path
        if self._protocol == "file":
            self._swap_local(staging, final.rstrip(self._sep), token)
        else:  # object stores have no folders to rename: copy every object over
            if fs.exists(final):
                fs.rm(final, recursive=True)
            root = fs._strip_protocol(staging).rstrip("/")
            target = fs._strip_protocol(final).rstrip("/")
            for key in fs.find(staging):
                fs.copy(key, target + key[len(root) :])
            fs.rm(staging, recursive=True)

    def _swap_local(self, staging: str, final: str, token: str) -> None:
        """Old folder aside, staging folder in, old folder removed."""
        replaced = final + REPLACED_SUFFIX + token
        if os.path.exists(final):
            os.rename(final, replaced)
        os.rename(staging, final)
        if os.path.exists(replaced):
            self._filesystem.rm(replaced, recursive=True)
