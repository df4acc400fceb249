"""Shared fixtures: a real S3-compatible server (moto) on 127.0.0.1, started per session."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]

FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """URL of a moto server (S3, SageMaker, IAM, ...) on a free loopback port."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"moto server did not start on {url}") from None
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def aws_env(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point boto3/s3fs in this process at the moto server; returns the variables set,
    ready to pass to a subprocess (``env={**os.environ, **aws_env}``)."""
    env = {**FAKE_AWS, "AWS_ENDPOINT_URL": moto_endpoint}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def s3_bucket(aws_env: dict[str, str], request: pytest.FixtureRequest) -> str:
    """A fresh, empty bucket on the moto server; returns its name."""
    import boto3  # noqa: PLC0415  (only the S3 tests need it)

    name = "tsa-test-" + str(abs(hash(request.node.nodeid)) % 10**10)
    s3 = boto3.client("s3", endpoint_url=aws_env["AWS_ENDPOINT_URL"])
    s3.create_bucket(Bucket=name)
    yield name
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=name):
        for obj in page.get("Contents", []):
            s3.delete_object(Bucket=name, Key=obj["Key"])
    s3.delete_bucket(Bucket=name)


def kedro_env(**extra: str) -> dict[str, str]:
    """Environment for running the real ``kedro`` CLI in a subprocess."""
    env = {
        **os.environ,
        "KEDRO_DISABLE_TELEMETRY": "1",
        "SAGEMAKER_SUPPRESS_V2_WARNING": "1",
        "PYTHONPATH": str(PROJECT_ROOT / "src"),
    }
    env.update(extra)
    return env


class KedroCLI:
    """Runs the real ``kedro`` command of this project with its data under one folder."""

    def __init__(self, data_root: Path):
        self.data_root = data_root

    def __call__(
        self, *args: str, env: dict[str, str] | None = None, check: bool = True
    ) -> subprocess.CompletedProcess:
        kedro = Path(sys.executable).with_name("kedro")
        result = subprocess.run(
            [str(kedro), *args],
            cwd=PROJECT_ROOT,
            env=kedro_env(TSA_DATA_ROOT=str(self.data_root), **(env or {})),
            capture_output=True,
            text=True,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kedro {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout[-4000:]}\n{result.stderr[-8000:]}"
            )
        return result


@pytest.fixture
def kedro_cli(tmp_path: Path) -> KedroCLI:
    """``kedro_cli("run", "--pipeline=ingest")``: the real CLI, data under tmp_path."""
    return KedroCLI(tmp_path / "data")
