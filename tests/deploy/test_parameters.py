"""Which parameters become SageMaker pipeline parameters, within SageMaker's limits."""

from __future__ import annotations

import pytest

from tsa_kedro.deploy.config import DeploymentConfigError
from tsa_kedro.deploy.plugin import MAX_ENV_VALUE_CHARS, exposed_parameters

PARAMS = {
    "train": {"training": {"epochs": 100, "lr": 5e-5}, "model": {"preset": "small"}},
    "raw_schema": {"eng_features": [f"feature_{i}" for i in range(297)]},
}


def test_selected_prefixes_only():
    exposed = exposed_parameters(PARAMS, ["train.training", "train.model.preset"])
    assert exposed == {
        "train.training.epochs": 100,
        "train.training.lr": 5e-5,
        "train.model.preset": "small",
    }


def test_nothing_selected_exposes_nothing():
    assert exposed_parameters(PARAMS, []) == {}


def test_unknown_key_is_named():
    with pytest.raises(DeploymentConfigError, match="'train.trainig'"):
        exposed_parameters(PARAMS, ["train.trainig"])


def test_value_too_long_for_a_job_environment():
    with pytest.raises(DeploymentConfigError, match="'raw_schema.eng_features'"):
        exposed_parameters(PARAMS, ["raw_schema"])
    assert len(str(PARAMS["raw_schema"]["eng_features"])) > MAX_ENV_VALUE_CHARS


def test_too_many_parameters():
    many = {"p": {f"k{i}": i for i in range(60)}}
    with pytest.raises(DeploymentConfigError, match="exposes 60 parameters"):
        exposed_parameters(many, ["p"])
