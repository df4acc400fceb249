"""``kedro viz`` shows the project's DAG: the API matches Kedro, the page renders it.

Every expectation is derived from the registered pipelines, so the tests keep holding as
stages are added.
"""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from kedro.pipeline import Pipeline

from tests.viz.conftest import VizServer, run_chromium

pytestmark = pytest.mark.slow

# Kedro's data-engineering layers, in order; the catalog's `metadata: kedro-viz: layer:`.
KEDRO_LAYERS = [
    "raw",
    "intermediate",
    "primary",
    "feature",
    "model_input",
    "models",
    "model_output",
    "reporting",
]
TASK, DATA = "task", "data"


def _dataset_name(name: str) -> str:
    """Kedro-viz draws a transcoded dataset (``name@format``) as one node."""
    return name.split("@", 1)[0]


def _namespaces(pipeline: Pipeline) -> set[str]:
    """Every namespace of the pipeline's nodes, with each parent namespace."""
    found = set()
    for node in pipeline.nodes:
        parts = (node.namespace or "").split(".") if node.namespace else []
        found.update(".".join(parts[: i + 1]) for i in range(len(parts)))
    return found


def _kedro_edges(pipeline: Pipeline) -> set[tuple[tuple[str, str], tuple[str, str]]]:
    """The dataset -> node -> dataset edges of a Kedro pipeline."""
    edges = set()
    for node in pipeline.nodes:
        for name in node.inputs:
            edges.add(((DATA, _dataset_name(name)), (TASK, node.name)))
        for name in node.outputs:
            edges.add(((TASK, node.name), (DATA, _dataset_name(name))))
    return edges


def _viz_key(viz_node: dict) -> tuple[str, str]:
    """What a kedro-viz graph node stands for in Kedro: a node name or a dataset name.

    Kedro-viz names a task by its name inside its namespace and lists the namespaces it
    sits in; the innermost namespace plus that name is Kedro's node name.
    """
    if viz_node["type"] == TASK:
        namespaces = viz_node.get("modular_pipelines") or []
        inner = max(namespaces, key=len) if namespaces else ""
        return TASK, f"{inner}.{viz_node['name']}" if inner else viz_node["name"]
    return DATA, viz_node["name"]


def _tasks(graph: dict) -> set[str]:
    return {_viz_key(n)[1] for n in graph["nodes"] if n["type"] == TASK}


@pytest.fixture(scope="module")
def main_graph(viz_server: VizServer) -> dict:
    return viz_server.get_json("/api/main")


def test_every_registered_pipeline_is_selectable_with_its_nodes(
    viz_server: VizServer, main_graph: dict, registered_pipelines: dict[str, Pipeline]
):
    stages = sorted(set(registered_pipelines) - {"__default__"})
    assert stages, "the project registers no pipeline"
    assert {p["id"] for p in main_graph["pipelines"]} == set(registered_pipelines)
    assert main_graph["selected_pipeline"] == "__default__"
    assert _tasks(main_graph) == {
        n.name for n in registered_pipelines["__default__"].nodes
    }
    for stage in stages:
        graph = viz_server.get_json(f"/api/pipelines/{stage}")
        expected = {n.name for n in registered_pipelines[stage].nodes}
        assert _tasks(graph) == expected, f"pipeline {stage!r} differs in kedro viz"


def test_edges_equal_the_kedro_dag(
    main_graph: dict, registered_pipelines: dict[str, Pipeline]
):
    keys = {
        n["id"]: _viz_key(n)
        for n in main_graph["nodes"]
        if n["type"] != "modularPipeline"
    }
    viz_edges = {
        (keys[e["source"]], keys[e["target"]])
        for e in main_graph["edges"]
        if e["source"] in keys and e["target"] in keys
    }
    assert viz_edges == _kedro_edges(registered_pipelines["__default__"])


def test_namespaces_collapse_into_modular_pipelines(
    main_graph: dict, registered_pipelines: dict[str, Pipeline]
):
    namespaces = _namespaces(registered_pipelines["__default__"])
    groups = {n["id"] for n in main_graph["nodes"] if n["type"] == "modularPipeline"}
    assert groups == namespaces
    assert set(main_graph["modular_pipelines"]) - {"__root__"} == namespaces
    for node in main_graph["nodes"]:
        if node["type"] == TASK and node.get("modular_pipelines"):
            inner = max(node["modular_pipelines"], key=len)
            children = main_graph["modular_pipelines"][inner]["children"]
            assert {"id": node["id"], "type": TASK} in children


def test_tags_and_layers_are_shown(
    main_graph: dict, registered_pipelines: dict[str, Pipeline]
):
    tags = set().union(*(n.tags for n in registered_pipelines["__default__"].nodes))
    assert {t["id"] for t in main_graph["tags"]} == tags
    persisted = [
        n
        for n in main_graph["nodes"]
        if n["type"] == DATA
        and n.get("dataset_type")
        and not n["dataset_type"].endswith("MemoryDataset")
    ]
    without_layer = sorted(n["name"] for n in persisted if not n.get("layer"))
    assert not without_layer, (
        "catalog entries without `metadata: kedro-viz: layer:` (kedro viz cannot place "
        f"them): {without_layer}"
    )
    unknown = {
        n["name"]: n["layer"] for n in persisted if n["layer"] not in KEDRO_LAYERS
    }
    assert not unknown, f"layers outside {KEDRO_LAYERS}: {unknown}"
    # kedro-viz draws no layer at all when the layers cannot be ordered (a cycle).
    assert set(main_graph["layers"]) == {n["layer"] for n in persisted}, (
        "kedro viz hides the layers: some node reads a later layer than it writes: "
        f"{_layer_inversions(main_graph)}"
    )


def _layer_inversions(graph: dict) -> list[str]:
    """``input [layer] -> node -> output [layer]`` where the output's layer comes
    before the input's in Kedro's layer order."""
    by_id = {n["id"]: n for n in graph["nodes"]}
    inputs: dict[str, list[dict]] = {}
    outputs: dict[str, list[dict]] = {}
    for edge in graph["edges"]:
        source, target = by_id[edge["source"]], by_id[edge["target"]]
        if target["type"] == TASK and source.get("layer"):
            inputs.setdefault(target["id"], []).append(source)
        if source["type"] == TASK and target.get("layer"):
            outputs.setdefault(source["id"], []).append(target)
    return [
        f"{i['name']} [{i['layer']}] -> {by_id[task]['name']} -> {o['name']} [{o['layer']}]"
        for task, ins in inputs.items()
        for i in ins
        for o in outputs.get(task, [])
        if KEDRO_LAYERS.index(o["layer"]) < KEDRO_LAYERS.index(i["layer"])
    ]


class _FlowchartNodes(HTMLParser):
    """Collects the flowchart's SVG nodes (``<g class="pipeline-node ..." data-id>``)
    and the label text drawn inside each."""

    def __init__(self) -> None:
        super().__init__()
        self.labels: dict[str, str] = {}
        self._open: list[str | None] = []
        self._in_label: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        classes = (attributes.get("class") or "").split()
        if tag == "g":
            node_id = attributes.get("data-id") if "pipeline-node" in classes else None
            self._open.append(node_id)
            if node_id:
                self.labels[node_id] = ""
        elif tag == "text" and "pipeline-node__text" in classes:
            self._in_label = next((i for i in reversed(self._open) if i), None)

    def handle_endtag(self, tag: str) -> None:
        if tag == "g" and self._open:
            self._open.pop()
        elif tag == "text":
            self._in_label = None

    def handle_data(self, data: str) -> None:
        if self._in_label:
            self.labels[self._in_label] += data


def test_page_renders_the_flowchart_with_every_stage(
    viz_server: VizServer,
    main_graph: dict,
    registered_pipelines: dict[str, Pipeline],
    tmp_path: Path,
):
    by_id = {n["id"]: n for n in main_graph["nodes"]}
    # Collapsed view: namespaces drawn as one group each; parameters hidden by default.
    visible = {
        child["id"]
        for child in main_graph["modular_pipelines"]["__root__"]["children"]
        if by_id[child["id"]]["type"] != "parameters"
    }
    parser = _FlowchartNodes()
    for budget_ms in (20000, 60000):
        parser = _FlowchartNodes()
        parser.feed(
            run_chromium(
                viz_server.url + "/", tmp_path, "--dump-dom", budget_ms=budget_ms
            )
        )
        if set(parser.labels) == visible:
            break
    assert set(parser.labels) == visible, (
        f"flowchart nodes differ from the API: missing "
        f"{sorted(by_id[i]['name'] for i in visible - set(parser.labels))}, "
        f"unexpected {sorted(set(parser.labels) - visible)}"
    )
    for node_id, label in parser.labels.items():
        assert label.strip() == by_id[node_id]["name"]

    # the default flowchart is __default__: every stage but the demo's generator
    default_nodes = set(registered_pipelines["__default__"].nodes)
    for stage, pipeline in registered_pipelines.items():
        if not set(pipeline.nodes) <= default_nodes:
            continue  # demo and synthetic: selectable, not in the default view
        shown = set()
        for node in pipeline.nodes:
            top = node.namespace.split(".")[0] if node.namespace else None
            shown.update(
                i
                for i in visible
                if i == top or _viz_key(by_id[i]) == (TASK, node.name)
            )
        assert shown, f"no node of pipeline {stage!r} is drawn"

    screenshot = tmp_path / "viz.png"
    run_chromium(viz_server.url + "/", tmp_path, f"--screenshot={screenshot}")
    pixels = matplotlib.image.imread(screenshot)
    assert pixels.shape[:2] == (1000, 1600)
    assert np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0).shape[0] > 50, (
        f"{screenshot} looks blank"
    )
