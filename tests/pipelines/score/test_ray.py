"""``score.engine: ray``: embedded Ray and a real two-node Ray cluster on 127.0.0.1
give the local engine's rows; ``preprocess.engine: ray`` on that cluster writes the
local engine's tensor files."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import duckdb
import pandas as pd
import psutil
import pytest
import ray

from tests.conftest import PROJECT_ROOT, kedro_env
from tests.raw_data import production_sample_chunks
from tsa_kedro.datasets import TensorChunksDataset
from tsa_kedro.datasets.raw_export import RawExportDataset
from tsa_kedro.pipelines.score.nodes import (
    REASON_COLUMNS,
    TEXT_COLUMNS,
    ScoreInputError,
    load_model,
    score_orders,
)

BATCH = 12  # 30 + 30 orders: three batches per file
RAY_SETTINGS = {"address": None, "local_num_cpus": 2, "concurrency": 2, "num_cpus": 1}
SCORE = {
    "model": "",
    "tracking_uri": None,
    "batch_orders": BATCH,
    "device": "cpu",
    "engine": "local",
    "ray": RAY_SETTINGS,
}


def _export(folder: Path) -> dict:
    return RawExportDataset(
        path=str(folder),
        dataset={"type": "pandas.ParquetDataset"},
        filename_suffix=".parquet",
    ).load()


def _same_rows(ray_parts: dict, local_parts: dict) -> None:
    """Same partition names, rows and columns; scores within 1e-6 (``scored_at`` is
    each run's own)."""
    assert sorted(ray_parts) == sorted(local_parts)
    for name, local in local_parts.items():
        pd.testing.assert_frame_equal(
            ray_parts[name].drop(columns="scored_at"),
            local.drop(columns="scored_at"),
            check_exact=False,
            atol=1e-6,
            rtol=0,
        )


@pytest.fixture(scope="module")
def local_scores(score_export, model_archive):
    model = load_model({**SCORE, "model": str(model_archive)}, {"tracking_uri": ""})
    return score_orders(_export(score_export[0]), model, SCORE)


@pytest.fixture
def worker_code_path(monkeypatch):
    """Ray workers started from this process import this checkout's code."""
    monkeypatch.setenv("PYTHONPATH", str(PROJECT_ROOT / "src"))


def test_embedded_ray_gives_the_local_rows(
    score_export, model_archive, local_scores, worker_code_path, monkeypatch
):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert not ray.is_initialized()
    model = load_model({**SCORE, "model": str(model_archive)}, {"tracking_uri": ""})
    parts, table, summary = score_orders(
        _export(score_export[0]), model, {**SCORE, "engine": "ray"}
    )
    assert not ray.is_initialized()  # the embedded instance is stopped after the run
    local_parts, local_table, local_summary = local_scores
    assert list(parts) == [f"batch-{i:05d}" for i in range(6)]
    _same_rows(parts, local_parts)
    assert len(table) == len(local_table) == len(score_export[1])
    assert summary["engine"] == "ray" and local_summary["engine"] == "local"
    assert sum(summary["ray_nodes"].values()) == 6 and len(summary["ray_nodes"]) == 1
    for key in ("rows_in", "rows_out", "scored", "rejected_by_reason", "files"):
        assert summary[key] == local_summary[key]
    assert summary["score_quantiles"] == pytest.approx(
        local_summary["score_quantiles"], abs=1e-6
    )


def test_errors_on_ray_actors_reach_the_driver(
    score_export, model_archive, tmp_path, worker_code_path
):
    export, raw, _ = score_export
    broken = tmp_path / "broken"
    broken.mkdir()
    raw.iloc[:20].to_parquet(broken / "part-00000.parquet", index=False)
    raw.iloc[20:].drop(columns=["cid_hist_ts"]).to_parquet(
        broken / "part-00001.parquet", index=False
    )
    score = {**SCORE, "engine": "ray"}
    model = load_model({**SCORE, "model": str(model_archive)}, {"tracking_uri": ""})
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    try:  # a Ray instance already running in the process is used and left running
        with pytest.raises(ScoreInputError, match="part-00001.*cid_hist_ts"):
            score_orders(_export(broken), model, score)
        assert ray.is_initialized()
        empty = {"part-00000": lambda: raw.iloc[:0]}
        with pytest.raises(ScoreInputError, match="holds no orders"):
            score_orders(empty, model, score)
        repeated = {"a": lambda: raw.iloc[:10], "b": lambda: raw.iloc[5:15]}
        with pytest.raises(ScoreInputError, match="repeat across the files"):
            score_orders(repeated, model, score)
    finally:
        ray.shutdown()


# --- a two-node cluster -----------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(process: subprocess.Popen, temp_dir: Path) -> None:
    """Stop one ``ray start --block`` and every process it started (its process
    group, then anything still naming the cluster's temp dir)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    for leftover in psutil.process_iter(["pid", "cmdline"]):
        if str(temp_dir) in " ".join(leftover.info["cmdline"] or []):
            with contextlib.suppress(psutil.NoSuchProcess):
                leftover.kill()


@pytest.fixture
def ray_cluster(tmp_path):
    """A head node and a worker node (one CPU each) on 127.0.0.1, started by the
    ``ray`` CLI as separate processes, with Ray's token authentication; yields the
    head's address."""
    ray_cli = str(Path(sys.executable).with_name("ray"))
    port = _free_port()
    address = f"127.0.0.1:{port}"
    # Ray's socket paths must stay short: a temp dir directly under /tmp.
    temp_dir = Path(tempfile.mkdtemp(prefix="tsa-ray-"))
    # Clients send the token `ray start` keeps in ~/.ray/auth_token.
    env = kedro_env(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token")
    env.pop("RAY_ADDRESS", None)
    common = ["--num-cpus=1", "--block", "--disable-usage-stats"]
    nodes = {
        "head": [
            "--head",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            "--include-dashboard=false",
            f"--temp-dir={temp_dir}",
        ],
        "worker": [f"--address={address}", "--node-ip-address=127.0.0.1"],
    }
    logs = tmp_path / "ray-logs"
    logs.mkdir()
    processes = []
    try:
        for name, args in nodes.items():
            with (logs / f"{name}.log").open("w") as log:
                processes.append(
                    subprocess.Popen(
                        [ray_cli, "start", *args, *common],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
            if name == "head":
                _wait_for_nodes(address, 1, env, logs)
        _wait_for_nodes(address, 2, env, logs)
        yield address
    finally:
        for process in reversed(processes):
            _stop(process, temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


_COUNT_NODES = """
import sys, time, ray
ray.init(address=sys.argv[1], log_to_driver=False)
deadline = time.monotonic() + 100
while len([n for n in ray.nodes() if n["Alive"]]) < int(sys.argv[2]):
    if time.monotonic() > deadline:
        sys.exit(f"fewer than {sys.argv[2]} alive nodes: {ray.nodes()}")
    time.sleep(1)
"""


def _wait_for_nodes(address: str, nodes: int, env: dict, logs: Path) -> None:
    """Until the cluster at ``address`` has ``nodes`` alive nodes, seen by a Ray
    client in its own process (the test process stays out of Ray)."""
    waited = subprocess.run(
        [sys.executable, "-c", _COUNT_NODES, address, str(nodes)],
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    if waited.returncode != 0:
        output = "\n".join(p.read_text() for p in sorted(logs.iterdir()))
        raise AssertionError(
            f"the Ray cluster at {address} has < {nodes} nodes:\n"
            f"{waited.stderr[-3000:]}\n{output}"
        )


def test_two_node_cluster_through_the_kedro_cli(
    ray_cluster, kedro_cli, score_export, model_archive, local_scores
):
    export, raw, rejected = score_export
    result = kedro_cli(
        "run",
        "--pipeline=score",
        f"--params=score_export={export},score.model={model_archive},"
        f"score.batch_orders={BATCH},score.engine=ray,"
        f"score.ray.address={ray_cluster},score.ray.concurrency=2,"
        "score.ray.num_cpus=1",
        env={"RAY_AUTH_MODE": "token"},
    )
    assert "scoring on the Ray cluster at 127.0.0.1" in result.stdout + result.stderr
    data = kedro_cli.data_root
    folder = data / "07_model_output" / "scores"
    local_parts, local_table, local_summary = local_scores
    files = sorted(p.stem for p in folder.iterdir())
    assert files == sorted(local_parts)
    _same_rows(
        {name: pd.read_parquet(folder / f"{name}.parquet") for name in files},
        local_parts,
    )

    with duckdb.connect(
        str(data / "08_reporting" / "scores.duckdb"), read_only=True
    ) as con:
        table = con.execute("select * from scores order by order_id").df()
    expected = local_table.sort_values("order_id", ignore_index=True)
    text = dict.fromkeys(TEXT_COLUMNS, "string")
    pd.testing.assert_frame_equal(
        table.drop(columns="scored_at").astype(text),
        expected.drop(columns="scored_at").astype(text),
        check_exact=False,
        atol=1e-6,
        rtol=0,
    )
    assert table.loc[table["order_id"] == rejected, "score"].isna().all()

    summary = json.loads((data / "08_reporting" / "score_summary.json").read_text())
    assert summary["engine"] == "ray"
    assert summary["rows_in"] == summary["rows_out"] == len(raw)
    assert summary["files"] == local_summary["files"]
    # Two actors of one CPU each on two one-CPU nodes: both nodes scored batches.
    assert len(summary["ray_nodes"]) == 2, summary["ray_nodes"]
    assert sum(summary["ray_nodes"].values()) == len(local_parts)


# --- preprocessing on the cluster ---------------------------------------------------


def _chunk_files(folder: Path) -> dict[str, bytes]:
    """Every file of the tensor chunks but the statistics (worker timings differ)."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in ("stats_json.npy", "manifest.json")
    }


def _chunk_stats(folder: Path) -> dict[str, dict]:
    stats = {}
    for chunk in TensorChunksDataset(path=str(folder)).load().items():
        recorded = json.loads(str(chunk[1]()["stats_json"][()]))
        assert recorded.pop("seconds") > 0
        assert recorded.pop("worker")["peak_rss_bytes"] > 0  # the process's own
        stats[chunk[0]] = recorded
    return stats


_PREPROCESS = """
import functools, logging, sys
import pandas as pd
from tests.raw_data import production_sample_chunks
from tsa_kedro.datasets import TensorChunksDataset
from tsa_kedro.features.transforms import fit_transforms
from tsa_kedro.pipelines.preprocess.nodes import build_tensor_chunks

logging.basicConfig(level=logging.INFO)
engine, address, raw, target = sys.argv[1:]
schema, frames = production_sample_chunks()
cat_to_index, scaling, defaults = fit_transforms(
    list(frames), schema, {"min_frequency": 1}
)
sources = {
    f"chunk-{i}": functools.partial(pd.read_parquet, f"{raw}/chunk-{i}.parquet")
    for i in range(len(frames))
}
chunks = build_tensor_chunks(
    raw_chunks=sources,
    cat_to_index=cat_to_index,
    scaling=scaling,
    default_values=defaults,
    raw_schema=schema.to_params(),
    preprocess={
        "seq_len": 6,
        "workers": 1,
        "engine": engine,
        "ray": {"address": address, "num_cpus": 1},
    },
    downsample={},
)
TensorChunksDataset(path=target, overwrite=True).save(chunks)
import ray
assert not ray.is_initialized(), "the driver stays on the cluster"
"""


def test_preprocessing_on_the_cluster_writes_the_local_engine_files(
    ray_cluster, tmp_path
):
    _, frames = production_sample_chunks()
    for i, frame in enumerate(frames):
        frame.to_parquet(tmp_path / f"chunk-{i}.parquet")
    # the driver in its own process, as kedro runs it (the test process stays out)
    env = kedro_env(
        RAY_AUTH_MODE="token",
        PYTHONPATH=f"{PROJECT_ROOT / 'src'}{os.pathsep}{PROJECT_ROOT}",
    )
    env.pop("RAY_ADDRESS", None)
    for engine in ("local", "ray"):
        run = subprocess.run(
            [sys.executable, "-c", _PREPROCESS, engine, ray_cluster]
            + [str(tmp_path), str(tmp_path / engine)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert run.returncode == 0, run.stderr[-3000:]
    assert "preprocessing on the Ray cluster at 127.0.0.1" in run.stderr
    local, on_ray = _chunk_files(tmp_path / "local"), _chunk_files(tmp_path / "ray")
    assert len(local) == 3 * 7 and list(on_ray) == list(local)
    for name, content in local.items():
        assert on_ray[name] == content, name
    assert _chunk_stats(tmp_path / "ray") == _chunk_stats(tmp_path / "local")
    assert not [p for p in (tmp_path / "ray").iterdir() if ".tmp-" in p.name]


def test_ray_actors_write_the_reason_columns(
    score_export, model_archive, worker_code_path, monkeypatch
):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    model = load_model({**SCORE, "model": str(model_archive)}, {"tracking_uri": ""})
    explain = {"enabled": True, "top_k": 2}
    _, table, _ = score_orders(
        _export(score_export[0]), model, {**SCORE, "engine": "ray", "explain": explain}
    )
    assert list(table.columns[-3:]) == list(REASON_COLUMNS)
    scored = table[table["error"].isna()]
    assert len(scored) > 0
    assert all(len(text.split(";")) == 2 for text in scored["reason_features"])
