"""Fixtures for browsing the DAG: a live ``kedro viz`` server and headless Chromium."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from kedro.framework.startup import bootstrap_project
from kedro.pipeline import Pipeline

from tests.conftest import PROJECT_ROOT, kedro_env

VIZ_START_TIMEOUT_S = 180
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
)


def free_viz_port() -> int:
    """A free port on 127.0.0.1 that kedro-viz accepts.

    kedro-viz refuses ports above 49151 and silently moves to the next port when the one
    asked for is taken, so the usual ephemeral port from ``bind(0)`` will not do.
    """
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 49000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-49000 on 127.0.0.1")


@pytest.fixture(scope="session")
def registered_pipelines() -> dict[str, Pipeline]:
    """The project's pipeline registry, as ``kedro run`` sees it."""
    bootstrap_project(PROJECT_ROOT)
    from kedro.framework.project import pipelines  # noqa: PLC0415 (needs bootstrap)

    return dict(pipelines)


@dataclass
class VizServer:
    """A running ``kedro viz run`` server."""

    url: str
    log_path: Path

    def get_json(self, path: str) -> dict:
        """GET ``path`` from the server and decode its JSON body."""
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return json.loads(response.read())

    def log_tail(self) -> str:
        """The last lines the server wrote, for error messages."""
        return self.log_path.read_text(errors="replace")[-6000:]


def _stop_process_group(proc: subprocess.Popen) -> None:
    """Stop ``proc`` and the server process it spawned (same process group)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    try:
        # The uvicorn worker may outlive its parent for a moment.
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@contextmanager
def serve_viz(data_root: Path, work: Path) -> Iterator[VizServer]:
    """Run ``kedro viz run --no-browser`` on a free loopback port with the catalog under
    ``data_root``; stop it (with the worker process it spawns) on exit."""
    port = free_viz_port()
    log_path = work / "kedro-viz.log"
    kedro = Path(sys.executable).with_name("kedro")
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [
                str(kedro),
                "viz",
                "run",
                "--no-browser",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=PROJECT_ROOT,
            env=kedro_env(TSA_DATA_ROOT=str(data_root)),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = VizServer(url=f"http://127.0.0.1:{port}", log_path=log_path)
    try:
        deadline = time.monotonic() + VIZ_START_TIMEOUT_S
        while True:
            try:
                server.get_json("/api/main")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"kedro viz did not serve {server.url}/api/main within "
                        f"{VIZ_START_TIMEOUT_S} s:\n{server.log_tail()}"
                    ) from None
                time.sleep(0.5)
        yield server
    finally:
        _stop_process_group(proc)


@pytest.fixture(scope="module")
def viz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VizServer]:
    """A ``kedro viz`` server for the module, catalog under an empty tmp folder."""
    work = tmp_path_factory.mktemp("viz")
    with serve_viz(work / "data", work) as server:
        yield server


def chromium_binary() -> str:
    """Path of the Debian ``chromium`` browser (installed by scripts/setup.sh)."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    raise AssertionError(
        "chromium is not installed: `bash scripts/setup.sh` installs it "
        "(scripts/apt-dev.txt), or `apt-get install --no-install-recommends chromium`"
    )


def run_chromium(url: str, work: Path, *mode: str, budget_ms: int = 20000) -> str:
    """Load ``url`` in headless Chromium for ``budget_ms`` of virtual time.

    Args:
        url: Page to load.
        work: Folder for the browser profile.
        *mode: ``--dump-dom`` or ``--screenshot=<path>`` (and any extra flags).
        budget_ms: Virtual-time budget: the page's timers and network settle first.

    Returns:
        Chromium's stdout (the serialised DOM with ``--dump-dom``).
    """
    profile = work / "chromium-profile"
    profile.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [
            chromium_binary(),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--window-size=1600,1000",
            f"--virtual-time-budget={budget_ms}",
            *mode,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"chromium failed on {url} ({result.returncode}):\n{result.stderr[-4000:]}"
        )
    return result.stdout
