"""The documentation site builds without a single warning."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT, kedro_env

pytestmark = pytest.mark.slow

DOCS_SOURCE = PROJECT_ROOT / "docs" / "source"


def test_sphinx_builds_the_site_with_warnings_as_errors(tmp_path: Path):
    sphinx_build = Path(sys.executable).with_name("sphinx-build")
    out = tmp_path / "html"
    result = subprocess.run(
        [
            str(sphinx_build),
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            str(DOCS_SOURCE),
            str(out),
        ],
        cwd=PROJECT_ROOT,
        env=kedro_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"sphinx-build failed:\n{result.stderr[-8000:]}"
    pages = {p.stem for p in DOCS_SOURCE.glob("*.md")}
    built = {p.stem for p in out.glob("*.html")}
    assert pages <= built, f"pages not built: {sorted(pages - built)}"
    api = (out / "api.html").read_text()
    for module in ("tsa_kedro.schema", "tsa_kedro.pipeline_registry"):
        assert f'id="module-{module}"' in api, (
            f"{module} missing from the API reference"
        )
    assert "RawSchema" in api
