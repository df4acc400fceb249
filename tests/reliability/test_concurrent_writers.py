"""Two processes saving the same partitioned folder at once (two ``kedro run
--pipeline=ingest`` on one data root): one complete folder, nothing half-written."""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tsa_kedro.datasets.atomic_partitioned import (
    STAGING_SUFFIX,
    AtomicPartitionedDataset,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _writer(target: Path, tag: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.reliability.partition_writer",
            f"--path={target}",
            f"--tag={tag}",
            *extra,
        ],
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT / "src")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _dataset(target: Path) -> AtomicPartitionedDataset:
    return AtomicPartitionedDataset(
        path=str(target),
        dataset={"type": "pandas.ParquetDataset"},
        filename_suffix=".parquet",
    )


@pytest.mark.slow
def test_a_second_writer_waits_and_leaves_one_complete_folder(tmp_path):
    target = tmp_path / "train" / "raw_chunks"
    started = tmp_path / "first-writer-started"
    first = _writer(target, "first", f"--started={started}")
    second = _writer(target, "second", f"--wait-for={started}")
    outputs = {}
    for name, process in (("first", first), ("second", second)):
        _, stderr = process.communicate(timeout=120)
        outputs[name] = stderr
        assert process.returncode == 0, stderr[-3000:]

    loaded = _dataset(target).load()
    assert sorted(loaded) == [f"part-{i:05d}" for i in range(6)]
    frames = [loaded[key]() for key in sorted(loaded)]
    assert [f["writer"].item() for f in frames] == ["second"] * 6
    assert [f["part"].item() for f in frames] == list(range(6))
    assert sorted(p.name for p in target.parent.iterdir()) == ["raw_chunks"]
    assert f"waiting for another process that is writing {target}" in outputs["second"]


@pytest.mark.slow
def test_a_killed_writer_leaves_the_old_folder_and_its_staging_is_cleared(tmp_path):
    target = tmp_path / "train" / "raw_chunks"
    old = {
        f"part-{i:05d}": pd.DataFrame({"writer": ["old"], "part": [i]}) for i in (0, 1)
    }
    _dataset(target).save(old)
    started = tmp_path / "writer-started"
    writer = _writer(target, "killed", f"--started={started}", "--delay=2")
    deadline = time.monotonic() + 60
    while not started.exists():
        assert writer.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    writer.send_signal(signal.SIGKILL)
    writer.communicate(timeout=30)

    staging = [p.name for p in target.parent.iterdir() if p.name != "raw_chunks"]
    assert len(staging) == 1 and staging[0].startswith(
        f"raw_chunks{STAGING_SUFFIX}{writer.pid}-"
    )
    loaded = _dataset(target).load()
    assert [loaded[k]()["writer"].item() for k in sorted(loaded)] == ["old", "old"]

    _dataset(target).save({"part-00000": pd.DataFrame({"writer": ["next"]})})
    assert sorted(p.name for p in target.parent.iterdir()) == ["raw_chunks"]


def test_without_folder_locks_a_save_still_swaps_in_and_keeps_leftovers(
    tmp_path, monkeypatch, caplog
):
    target = tmp_path / "train" / "raw_chunks"
    other_writer = tmp_path / "train" / f"raw_chunks{STAGING_SUFFIX}123-abcdef12"
    other_writer.mkdir(parents=True)

    def refuse(descriptor, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", refuse)
    _dataset(target).save({"part-00000": pd.DataFrame({"writer": ["only"]})})
    assert sorted(_dataset(target).load()) == ["part-00000"]
    assert other_writer.is_dir()  # may belong to a live writer: not removed
    assert (
        f"cannot lock {target.parent} ([Errno {errno.ENOLCK}] No locks available): "
        f"writing {target} without waiting for other writers"
    ) in caplog.text
