"""After a real ``kedro run``, kedro viz previews every dataset that can be previewed
(metrics JSON, plots, tables), so the DAG can be browsed with its data."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.notebooks.conftest import KedroRun
from tests.viz.conftest import serve_viz

pytestmark = pytest.mark.slow


def test_previewable_datasets_preview_after_kedro_run(
    kedro_run: KedroRun, tmp_path: Path
):
    with serve_viz(kedro_run.data_root, tmp_path) as server:
        graph = server.get_json("/api/main")
        details = {
            node["name"]: server.get_json(f"/api/nodes/{node['id']}")
            for node in graph["nodes"]
            if node["type"] == "data"
        }
    previewable = {name: d for name, d in details.items() if d.get("preview_type")}
    assert previewable, "no dataset in the catalog can be previewed by kedro viz"
    missing = sorted(name for name, d in previewable.items() if not d.get("preview"))
    assert not missing, (
        f"kedro viz shows no preview for {missing} after `kedro run` "
        f"(see {tmp_path / 'kedro-viz.log'})"
    )
    plots = [d for d in previewable.values() if d["preview_type"] == "ImagePreview"]
    for plot in plots:
        assert isinstance(plot["preview"], str)
        assert len(plot["preview"]) > 1000
