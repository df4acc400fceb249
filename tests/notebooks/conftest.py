"""One real ``kedro run`` per test session, shared by every notebook test."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT, kedro_env
from tests.viz.conftest import registered_pipelines  # noqa: F401 (shared fixture)

NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
KEDRO_RUN_TIMEOUT_S = 3600
# The notebooks need every output, not a good model: the small profile with fewer
# customers (still enough calibration records) and one training epoch.
FAST_RUN_PARAMS = ",".join(
    [
        "synthetic_profiles.default.n_customers=600",
        "ingest.ragged_tolerance=0.01",
        "preprocess.workers=2",
        "train.training.epochs=1",
        "train.training.progress=False",
    ]
)


def _tracking_hook_registered() -> bool:
    """Whether the project's MLflow hook (which creates the store's folder) is on."""
    from tsa_kedro import settings  # noqa: PLC0415 (project code, after sys.path)
    from tsa_kedro.tracking import MlflowTrackingHook  # noqa: PLC0415

    return any(
        isinstance(h, MlflowTrackingHook) for h in getattr(settings, "HOOKS", ())
    )


def project_notebooks() -> list[Path]:
    """The notebooks under ``notebooks/``, in name order."""
    return sorted(NOTEBOOKS_DIR.glob("*.ipynb"))


def notebook_requirements(path: Path) -> list[str]:
    """The pipelines a notebook reads outputs of (``metadata.tsa_kedro.pipelines``)."""
    metadata = json.loads(path.read_text())["metadata"]
    return list(metadata.get("tsa_kedro", {}).get("pipelines", []))


@dataclass(frozen=True)
class KedroRun:
    """Where the session's ``kedro run`` wrote its outputs, and what it printed."""

    data_root: Path
    log: str


@pytest.fixture(scope="session")
def kedro_run(tmp_path_factory: pytest.TempPathFactory) -> KedroRun:
    """``kedro run --pipeline=demo`` (synthetic data, then the whole DAG; small profile, one training
    epoch) once per session, with every catalog path under a temporary
    ``TSA_DATA_ROOT``."""
    data_root = tmp_path_factory.mktemp("kedro_run") / "data"
    if not _tracking_hook_registered():
        # kedro-mlflow's SQLite store needs its folder; the project's hook makes it.
        (data_root / "09_registry").mkdir(parents=True)
    kedro = Path(sys.executable).with_name("kedro")
    result = subprocess.run(
        [str(kedro), "run", "--pipeline=demo", f"--params={FAST_RUN_PARAMS}"],
        cwd=PROJECT_ROOT,
        env=kedro_env(TSA_DATA_ROOT=str(data_root)),
        capture_output=True,
        text=True,
        timeout=KEDRO_RUN_TIMEOUT_S,
        check=False,
    )
    log = result.stdout + result.stderr
    if result.returncode != 0:
        raise AssertionError(f"kedro run failed ({result.returncode}):\n{log[-8000:]}")
    return KedroRun(data_root=data_root, log=log)
