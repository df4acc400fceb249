"""The notebooks in ``notebooks/`` are committed clean and run top to bottom."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from kedro.pipeline import Pipeline
from nbclient import NotebookClient

from tests.conftest import kedro_env
from tests.notebooks.conftest import (
    NOTEBOOKS_DIR,
    notebook_requirements,
    project_notebooks,
)

CELL_TIMEOUT_S = 600


def test_there_are_notebooks():
    names = [p.name for p in project_notebooks()]
    assert names, f"no notebook in {NOTEBOOKS_DIR}"


@pytest.mark.parametrize("path", project_notebooks(), ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path: Path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    dirty = [
        index
        for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count)
    ]
    assert not dirty, (
        f"{path.name}: cells {dirty} hold outputs; strip them with "
        f"`jupyter nbconvert --clear-output --inplace {path.relative_to(NOTEBOOKS_DIR.parent)}`"
    )
    assert "widgets" not in notebook.metadata


@pytest.mark.slow
@pytest.mark.parametrize("path", project_notebooks(), ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom_after_kedro_run(
    path: Path,
    registered_pipelines: dict[str, Pipeline],
    request: pytest.FixtureRequest,
    tmp_path: Path,
):
    needed = notebook_requirements(path)
    missing = [name for name in needed if name not in registered_pipelines]
    if missing:
        pytest.skip(
            f"{path.name} reads outputs of pipeline(s) {missing}, which the project "
            f"does not register yet"
        )
    run = request.getfixturevalue("kedro_run")
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},
    )
    client.execute(
        cwd=str(NOTEBOOKS_DIR),
        env=kedro_env(TSA_DATA_ROOT=str(run.data_root)),
    )
    nbformat.write(notebook, tmp_path / path.name)
