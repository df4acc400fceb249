"""Every parameter is checked at load: a bad value stops the run in one line that names
the parameter, the value and what is allowed; what the environments set today passes."""

from __future__ import annotations

import copy
import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any, get_args

import pytest
from kedro.config import OmegaConfigLoader
from omegaconf import OmegaConf

from tests.conftest import PROJECT_ROOT
from tsa_kedro import settings
from tsa_kedro.features.tensors import DROP_REASONS
from tsa_kedro.parameters import (
    BaselineParams,
    DistributedParams,
    DropReason,
    ParameterCheckHook,
    ParameterError,
    SyntheticProfileParams,
    TrainingParams,
    validate_parameters,
)
from tsa_kedro.raw_export import RawExportCheckHook
from tsa_kedro.run_guard import RunGuardHook
from tsa_kedro.synthetic.config import SyntheticConfig
from tsa_kedro.tracking import MlflowTrackingHook
from tsa_kedro.training.baseline import BaselineSettings
from tsa_kedro.training.distributed import DistributedSettings
from tsa_kedro.training.loop import TrainingSettings


def _load(env: str) -> dict[str, Any]:
    loader = OmegaConfigLoader(
        conf_source=str(PROJECT_ROOT / "conf"), env=env, **settings.CONFIG_LOADER_ARGS
    )
    return loader["parameters"]


@pytest.fixture(scope="module")
def base_params() -> dict[str, Any]:
    return _load("local")


def _with(params: dict[str, Any], *overrides: str) -> dict[str, Any]:
    """``params`` with ``--params``-style overrides, parsed as the kedro CLI does."""
    result = copy.deepcopy(params)
    for key, value in OmegaConf.to_container(
        OmegaConf.from_dotlist(list(overrides))
    ).items():
        _merge(result, key, value)
    return result


def _merge(target: dict, key: str, value: Any) -> None:
    if isinstance(value, dict) and isinstance(target.get(key), dict):
        for inner_key, inner_value in value.items():
            _merge(target[key], inner_key, inner_value)
    else:
        target[key] = value


@pytest.mark.parametrize(
    ("env", "seq_len", "registry"),
    [
        ("local", 32, "mlflow"),
        ("prod_width", 51, "mlflow"),
        ("s3", 32, "mlflow"),
        ("sagemaker", 51, "sagemaker"),
        ("sagemaker_test", 32, "sagemaker"),
        ("production_sample", 32, "mlflow"),
    ],
)
def test_every_environment_passes(env: str, seq_len: int, registry: str) -> None:
    validated = validate_parameters(_load(env))
    assert validated.preprocess.seq_len == seq_len
    assert validated.register_.registry == registry


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.training.lr=abc", "parameter train.training.lr: 'abc' is not a number"),
        (
            "preprocess.start_method=thread",
            "parameter preprocess.start_method: 'thread' is not allowed; allowed: "
            "'spawn' or 'forkserver'",
        ),
        (
            "preprocess.workers=0",
            "parameter preprocess.workers: 0 is not allowed; allowed: >= 1",
        ),
        (
            "train.training.epochs='8'",
            "parameter train.training.epochs: '8' is not an integer",
        ),
        (
            "train.training.resume=1",
            "parameter train.training.resume: 1 is not true or false",
        ),
        (
            "calibrate.metrics.log_loss_clip=.nan",
            "parameter calibrate.metrics.log_loss_clip: nan is not a finite number",
        ),
        (
            "calibrate.split.holdout_fraction=1.0",
            "parameter calibrate.split.holdout_fraction: 1.0 is not allowed; "
            "allowed: < 1.0",
        ),
        (
            "train.training.max_lr=1e-4",
            "parameter train.training.max_lr: 0.0001 is below train.training.lr "
            "(0.001); OneCycle's peak must be >= its start",
        ),
        (
            "train.training.lrr=0.1",
            "parameter train.training: unknown key(s) ['lrr']; allowed: epochs, "
            "batch_size, eval_batch_size, lr, max_lr",
        ),
        ("trian.training.lr=0.1", "parameters: unknown key(s) ['trian']; allowed: "),
        (
            "calibrate.bspline.penalty=-1",
            "parameter calibrate.bspline.penalty: -1 is not allowed; allowed: >= 0.0",
        ),
        (
            "train.evaluation.cost.missed_fraud=-1",
            "parameter train.evaluation.cost.missed_fraud: -1 is not allowed; "
            "allowed: >= 0.0",
        ),
        (
            "train.evaluation.queue_shares=[0.01,2]",
            "parameter train.evaluation.queue_shares.1: 2 is not allowed; "
            "allowed: <= 1.0",
        ),
        (
            "train.evaluation.cost.fp=1",
            "parameter train.evaluation.cost: unknown key(s) ['fp']; allowed: "
            "false_positive, missed_fraud",
        ),
        (
            "train.model.overrides.dropout=1.5",
            "parameter train.model: TSAConfig.dropout must be in [0, 1), got 1.5",
        ),
        (
            "train.model.preset=huge",
            "parameter train.model.preset: 'huge' is not one of train.model.presets "
            "['production', 'small']",
        ),
        (
            "synthetic_profile=nope",
            "parameter synthetic_profile: 'nope' is not one of synthetic_profiles: "
            "default, production_width",
        ),
        (
            "synthetic_profiles.default.fraud_rate=0.9",
            "parameter synthetic_profiles.default: synthetic parameter fraud_rate "
            "must be in [0, 0.5), got 0.9",
        ),
        (
            "synthetic_profiles.default.seed=x",
            "parameter synthetic_profiles.default.seed: 'x' is not an integer",
        ),
        (
            "ingest.windows.vali.start=2024-03-01",
            "parameter ingest.windows.vali.start (2024-03-01) must come after "
            "ingest.windows.train.end (2024-03-31)",
        ),
        (
            "register_gate.validation_roc_auc.max=0.9",
            "parameter register_gate.validation_roc_auc: needs exactly one of min or "
            "max, got ['max', 'min']",
        ),
        (
            "package.device=gpu",
            "parameter package.device: 'gpu' is not allowed; allowed: auto, cpu, "
            "cuda or cuda:N",
        ),
        (
            "register.registry=s3",
            "parameter register.registry: 's3' is not allowed; allowed: 'mlflow' or "
            "'sagemaker'",
        ),
        (
            "preprocess.max_drop_share.unlabeled=0.5",
            "parameter preprocess.max_drop_share: key 'unlabeled' is not allowed; "
            "allowed: 'unlabelled', 'ragged_history', "
            "'missing_history_timestamp' or 'negative_delta'",
        ),
        (
            "raw_schema.max_abs_number=-1.0",
            "parameter raw_schema.max_abs_number: -1.0 is not allowed; allowed: > 0",
        ),
        (
            "monitor.fail_run_on=always",
            "parameter monitor.fail_run_on: 'always' is not allowed; allowed: 'fail' "
            "or 'never'",
        ),
        (
            "monitor.psi_warn=0.5",
            "parameter monitor: psi_warn 0.5 is above psi_fail 0.25",
        ),
        (
            "raw_schema.cat_features=card_brand",
            "parameter raw_schema.cat_features: 'card_brand' is not a list",
        ),
    ],
)
def test_a_bad_value_is_named_with_what_is_allowed(
    base_params: dict[str, Any], override: str, message: str
) -> None:
    with pytest.raises(ParameterError) as caught:
        validate_parameters(_with(base_params, override))
    assert caught.value.message.startswith(message)
    assert "\n" not in caught.value.message  # one bad value, one line


def test_every_bad_value_gets_its_own_line(base_params: dict[str, Any]) -> None:
    params = _with(base_params, "train.training.lr=abc", "package.sample_size=0")
    del params["ingest"]["chunk_size"]
    with pytest.raises(ParameterError) as caught:
        validate_parameters(params)
    assert caught.value.message.splitlines() == [
        "parameter ingest.chunk_size: is missing",
        "parameter train.training.lr: 'abc' is not a number",
        "parameter package.sample_size: 0 is not allowed; allowed: >= 1",
    ]


@pytest.mark.parametrize(
    "override",
    [
        "raw_schema.numeric_cat_features=[merchant_category]",
        "fit_transforms.another_setting=1",
        "ingest.another_setting=1",
        "train.training.progress=False",
        "preprocess.downsample.vali.target_positive_rate=0.5",
        "register_gate.calibrated_log_loss.margin=0.01",
        "raw_export=tests/data/production_sample",
        "preprocess.max_drop_share.unlabelled=0.5",
    ],
)
def test_open_blocks_and_valid_overrides_pass(
    base_params: dict[str, Any], override: str
) -> None:
    validate_parameters(_with(base_params, override))


@pytest.mark.parametrize(
    ("schema", "settings_class"),
    [
        (TrainingParams, TrainingSettings),
        (DistributedParams, DistributedSettings),
        (BaselineParams, BaselineSettings),
    ],
)
def test_schema_blocks_list_the_fields_their_code_reads(schema, settings_class) -> None:
    fields = {field.name for field in dataclasses.fields(settings_class)}
    assert set(schema.model_fields) == fields


def test_drop_reasons_are_those_of_preprocessing() -> None:
    families = {
        reason.removesuffix("_cid").removesuffix("_ccid") for reason in DROP_REASONS
    }
    assert set(get_args(DropReason)) == families


def test_synthetic_profile_keys_are_those_of_the_generator() -> None:
    fields = {field.name for field in dataclasses.fields(SyntheticConfig)}
    assert set(SyntheticProfileParams.__annotations__) == fields


def test_the_hook_runs_beside_the_existing_ones() -> None:
    assert [type(hook) for hook in settings.HOOKS] == [
        ParameterCheckHook,
        RawExportCheckHook,
        MlflowTrackingHook,
        RunGuardHook,
    ]


@pytest.mark.slow
def test_kedro_run_stops_before_any_node_naming_each_bad_value(kedro_cli) -> None:
    result = kedro_cli(
        "run",
        "--pipeline=train",
        "--params=train.training.lr=abc,preprocess.start_method=thread",
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert (
        "Error: parameter preprocess.start_method: 'thread' is not allowed; "
        "allowed: 'spawn' or 'forkserver'\n"
        "parameter train.training.lr: 'abc' is not a number\n"
    ) in result.stderr
    assert "Traceback" not in output
    assert "Running node" not in output


def test_missing_r_says_how_to_install_it(tmp_path: Path) -> None:
    env = {
        "PATH": str(tmp_path),  # an empty folder: no R
        "PYTHONPATH": str(PROJECT_ROOT / "src"),
        "HOME": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "-c", "import tsa_kedro.calibration.r_bridge"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line == (
        "tsa_kedro.calibration.r_bridge.RNotFoundError: R was not found (no R on "
        "PATH); the calibrate stage runs R through rpy2. Install it with the Debian "
        "packages r-base-core r-cran-quadprog r-cran-jsonlite (scripts/setup.sh "
        "installs them), or point R_HOME at an R installation (the folder that "
        "`R RHOME` prints)."
    )
