"""``kedro jupyter lab`` and ``kedro jupyter notebook`` start a server whose default
kernel loads the project (the ``kedro.ipython`` extension)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT, free_port, kedro_env

pytestmark = pytest.mark.slow

START_TIMEOUT_S = 180
TOKEN = "tsa-kedro-test"
KERNEL_NAME = "kedro_tsa_kedro"


def _get(url: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"token {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.read()


@pytest.mark.parametrize(("command", "page"), [("lab", "/lab"), ("notebook", "/tree")])
def test_kedro_jupyter_serves_with_the_kedro_kernel(
    command: str, page: str, tmp_path: Path
):
    port = free_port()
    log_path = tmp_path / f"jupyter-{command}.log"
    kedro = Path(sys.executable).with_name("kedro")
    env = kedro_env(
        TSA_DATA_ROOT=str(tmp_path / "data"),
        # The kernel spec kedro installs "for the user" lands here, not in $HOME.
        JUPYTER_DATA_DIR=str(tmp_path / "jupyter-data"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "jupyter-runtime"),
        JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter-config"),
    )
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [
                str(kedro),
                "jupyter",
                command,
                "--no-browser",
                "--ip=127.0.0.1",
                f"--port={port}",
                f"--IdentityProvider.token={TOKEN}",
                f"--ServerApp.root_dir={PROJECT_ROOT / 'notebooks'}",
                # Jupyter refuses to run as root (CI containers) without this.
                *(["--allow-root"] if os.geteuid() == 0 else []),
            ],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                _get(f"{base}/api/status")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"kedro jupyter {command} did not start:\n"
                        f"{log_path.read_text()[-6000:]}"
                    ) from None
                time.sleep(0.5)
        status, _ = _get(base + page)
        assert status == 200
        _, body = _get(f"{base}/api/kernelspecs")
        specs = json.loads(body)
        assert specs["default"] == KERNEL_NAME
        argv = specs["kernelspecs"][KERNEL_NAME]["spec"]["argv"]
        assert argv[-2:] == ["--ext", "kedro.ipython"]
        assert Path(argv[0]).resolve() == Path(sys.executable).resolve()
        _, body = _get(f"{base}/api/contents")
        listed = {item["name"] for item in json.loads(body)["content"]}
        notebooks = {p.name for p in (PROJECT_ROOT / "notebooks").glob("*.ipynb")}
        assert notebooks <= listed
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
