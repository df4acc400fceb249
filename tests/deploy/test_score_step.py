"""``kedro sagemaker -e sagemaker compile --pipeline score`` through the real CLI: the
score step on several hosts, with the export, output folder and model chosen by each
execution."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.deploy.conftest import DEPLOY_BUCKET, kedro_command, resolve, sagemaker_env

pytestmark = pytest.mark.slow

DATA = f"s3://{DEPLOY_BUCKET}/tsa-kedro-test/data"


@pytest.fixture(scope="module")
def score_definition(moto_endpoint: str, tmp_path_factory) -> dict:
    folder: Path = tmp_path_factory.mktemp("compile-score")
    output = folder / "pipeline-score.json"
    env = sagemaker_env(moto_endpoint, DEPLOY_BUCKET, folder)
    kedro_command(
        [
            "sagemaker",
            "-e",
            "sagemaker",
            "compile",
            "--pipeline=score",
            f"--output-path={output}",
        ],
        env,
    )
    return json.loads(output.read_text())


def test_the_score_step_runs_on_two_hosts(score_definition: dict):
    steps = {step["DisplayName"]: step for step in score_definition["Steps"]}
    assert set(steps) == {"load_score_model", "score_orders"}
    score = steps["score_orders"]
    assert score["Type"] == "Processing"
    cluster = score["Arguments"]["ProcessingResources"]["ClusterConfig"]
    assert cluster["InstanceCount"] == 2
    load = steps["load_score_model"]["Arguments"]["ProcessingResources"]
    assert load["ClusterConfig"]["InstanceCount"] == 1


def test_export_output_and_model_are_execution_parameters(score_definition: dict):
    assert {p["Name"]: p["DefaultValue"] for p in score_definition["Parameters"]} == {
        "score_export": f"{DATA}/01_raw/score",
        "score_output": f"{DATA}/07_model_output/scores",
        "score_model": "models:/tsa-fraud@candidate",
    }
    steps = {step["DisplayName"]: step for step in score_definition["Steps"]}
    started = {
        "score_export": "s3://exports/2026-11",
        "score_output": "s3://scores/2026-11",
        "score_model": "s3://models/tsa-fraud/7/model.tar.gz",
    }
    flag, value = steps["score_orders"]["Arguments"]["AppSpecification"][
        "ContainerArguments"
    ]
    assert flag == "--params"
    assert json.loads(resolve(value, score_definition, "arn", started)) == {
        "score_export": "s3://exports/2026-11",
        "score_output": "s3://scores/2026-11",
        "score": {"model": "s3://models/tsa-fraud/7/model.tar.gz"},
    }
    flag, value = steps["load_score_model"]["Arguments"]["AppSpecification"][
        "ContainerArguments"
    ]
    assert json.loads(resolve(value, score_definition, "arn")) == {
        "score": {"model": "models:/tsa-fraud@candidate"}
    }
