"""Catalog paths that a SageMaker execution chooses: checks and what the steps get."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from kedro.config import OmegaConfigLoader
from sagemaker.workflow.parameters import ParameterString

from tests.conftest import PROJECT_ROOT
from tests.deploy.conftest import resolve
from tsa_kedro.deploy.path_parameters import (
    entrypoint_environment,
    execute_arguments,
    parameters_of_node,
    path_parameter_problems,
    sagemaker_parameters,
)
from tsa_kedro.settings import CONFIG_LOADER_ARGS

CATALOG = """
moved:
  type: pandas.CSVDataset
  filepath: ${runtime_params:moved_path, s3://tsa-bucket/data/moved.csv}
fixed:
  type: pandas.CSVDataset
  filepath: s3://tsa-bucket/data/fixed.csv
local:
  type: pandas.CSVDataset
  filepath: ${runtime_params:local_path, data/local.csv}
"""


def _loader(conf: Path, env: str, runtime_params: dict | None = None):
    return OmegaConfigLoader(
        str(conf), env=env, runtime_params=runtime_params, **CONFIG_LOADER_ARGS
    )


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    """A configuration folder whose catalog has one entry that a runtime parameter
    moves, one that none moves, and one that defaults to a local path."""
    (tmp_path / "base").mkdir()
    (tmp_path / "sagemaker").mkdir()
    (tmp_path / "base" / "catalog.yml").write_text(CATALOG)
    return tmp_path


def test_the_raw_export_parameter_of_the_sagemaker_environment_works(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv("TSA_SAGEMAKER_BUCKET", "tsa-models-bucket")
    loader = _loader(PROJECT_ROOT / "conf", "sagemaker")
    path_parameters = {"raw_export": "raw_orders"}
    assert path_parameter_problems(loader, path_parameters, "sagemaker") == []
    (parameter,) = sagemaker_parameters(loader, path_parameters)
    assert parameter.name == "raw_export"
    assert (
        parameter.default_value == "s3://tsa-models-bucket/tsa-kedro/data/01_raw/orders"
    )


def test_a_value_given_at_compile_time_becomes_the_default(conf: Path):
    loader = _loader(conf, "sagemaker", {"moved_path": "s3://tsa-bucket/2026-10.csv"})
    (parameter,) = sagemaker_parameters(loader, {"moved_path": "moved"})
    assert parameter.default_value == "s3://tsa-bucket/2026-10.csv"


@pytest.mark.parametrize(
    ("path_parameters", "named"),
    [
        ({"fixed_path": "fixed"}, "`fixed_path` (tsa_kedro.path_parameters in conf"),
        ({"fixed_path": "fixed"}, "${runtime_params:fixed_path, <default>}"),
        ({"moved_path": "nowhere"}, "names 'nowhere', which is not a catalog entry"),
        ({"moved.path": "moved"}, "'moved.path'"),
        ({"local_path": "local"}, "`local_path` = 'data/local.csv'"),
    ],
)
def test_a_parameter_that_cannot_work_is_named(
    conf: Path, path_parameters: dict, named: str
):
    (problem,) = path_parameter_problems(
        _loader(conf, "sagemaker"), path_parameters, "sagemaker"
    )
    assert named in problem


def test_every_problem_is_listed(conf: Path):
    problems = path_parameter_problems(
        _loader(conf, "sagemaker"),
        {"moved_path": "moved", "fixed_path": "fixed", "local_path": "local"},
        "sagemaker",
    )
    assert len(problems) == 2
    assert "`fixed_path`" in problems[0]
    assert "`local_path`" in problems[1]


def test_only_nodes_using_the_dataset_get_the_parameter():
    path_parameters = {"raw_export": "raw_orders", "scores_path": "scores"}
    reader = SimpleNamespace(inputs=["raw_orders", "params:ingest"], outputs=["x"])
    writer = SimpleNamespace(inputs=[], outputs=["scores"])
    other = SimpleNamespace(inputs=["x"], outputs=["y"])
    assert parameters_of_node(path_parameters, reader) == ["raw_export"]
    assert parameters_of_node(path_parameters, writer) == ["scores_path"]
    assert parameters_of_node(path_parameters, other) == []
    assert parameters_of_node(path_parameters, SimpleNamespace(name="mlflow")) == []


def test_execute_arguments_are_the_json_of_the_execution_values():
    flag, value = execute_arguments(["raw_export", "scores_path"])
    assert flag == "--params"
    definition = {
        "Parameters": [
            {"Name": "raw_export", "DefaultValue": "s3://b/default"},
            {"Name": "scores_path", "DefaultValue": "s3://b/scores"},
        ]
    }
    started = {"raw_export": "s3://b/exports/2026-10"}
    text = resolve(value.expr, definition, "arn", started)
    assert json.loads(text) == {
        "raw_export": "s3://b/exports/2026-10",
        "scores_path": "s3://b/scores",
    }


def test_entrypoint_variables_follow_the_plugins_own():
    existing = {
        "KEDRO_SAGEMAKER_PARAM_KEY_0": ParameterString("param0"),
        "KEDRO_SAGEMAKER_PARAM_VALUE_0": ParameterString("value0"),
        "KEDRO_SAGEMAKER_ARGS": "kedro sagemaker execute",
    }
    variables = entrypoint_environment(["raw_export"], existing)
    assert set(variables) == {
        "KEDRO_SAGEMAKER_PARAM_KEY_1",
        "KEDRO_SAGEMAKER_PARAM_VALUE_1",
    }
    assert variables["KEDRO_SAGEMAKER_PARAM_KEY_1"] == "raw_export"
    assert variables["KEDRO_SAGEMAKER_PARAM_VALUE_1"].expr == {
        "Get": "Parameters.raw_export"
    }


def test_a_kedro_parameter_can_be_a_pipeline_parameter(conf: Path):
    (conf / "base" / "parameters.yml").write_text(
        "score:\n  model: models:/tsa-fraud@candidate\n  batch_orders: 20\n"
    )
    path_parameters = {"score_model": "params:score.model", "moved_path": "moved"}
    loader = _loader(conf, "sagemaker")
    assert path_parameter_problems(loader, path_parameters, "sagemaker") == []
    model, _ = sagemaker_parameters(loader, path_parameters)
    assert (model.name, model.default_value) == (
        "score_model",
        "models:/tsa-fraud@candidate",
    )
    compiled_with = _loader(conf, "sagemaker", {"score": {"model": "s3://b/m.tar.gz"}})
    (model,) = sagemaker_parameters(
        compiled_with, {"score_model": "params:score.model"}
    )
    assert model.default_value == "s3://b/m.tar.gz"
    problems = path_parameter_problems(
        loader,
        {"a": "params:score.missing", "b": "params:score.batch_orders"},
        "sagemaker",
    )
    assert "'score.missing', which the `sagemaker` environment does not" in problems[0]
    assert "'score.batch_orders', whose value 20 is not a non-empty" in problems[1]


def test_readers_of_the_parameter_get_it_nested_in_the_json():
    path_parameters = {"score_export": "orders", "score_model": "params:score.model"}
    scorer = SimpleNamespace(inputs=["orders", "params:score"], outputs=["scores"])
    loader = SimpleNamespace(inputs=["params:score.model"], outputs=["model"])
    everything = SimpleNamespace(inputs=["parameters"], outputs=["x"])
    other = SimpleNamespace(inputs=["params:scoring", "params:train"], outputs=["y"])
    assert parameters_of_node(path_parameters, scorer) == [
        "score_export",
        "score_model",
    ]
    assert parameters_of_node(path_parameters, loader) == ["score_model"]
    assert parameters_of_node(path_parameters, everything) == ["score_model"]
    assert parameters_of_node(path_parameters, other) == []
    flag, value = execute_arguments(["score_export", "score_model"], path_parameters)
    definition = {
        "Parameters": [
            {"Name": "score_export", "DefaultValue": "s3://b/orders"},
            {"Name": "score_model", "DefaultValue": "models:/tsa-fraud@candidate"},
        ]
    }
    assert json.loads(resolve(value.expr, definition, "arn")) == {
        "score_export": "s3://b/orders",
        "score": {"model": "models:/tsa-fraud@candidate"},
    }
    variables = entrypoint_environment(["score_model"], {}, path_parameters)
    assert variables["KEDRO_SAGEMAKER_PARAM_KEY_0"] == "score.model"
