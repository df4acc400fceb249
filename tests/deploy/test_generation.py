"""Generating the SageMaker pipeline reads the catalog once and checks the SDK's
defaults schema once, and generates the same definition as without either."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import jsonschema
import pytest
import sagemaker.config.config
import sagemaker.session
import sagemaker.utils
import yaml
from kedro.framework.context import KedroContext
from kedro.framework.startup import bootstrap_project
from kedro_sagemaker.utils import CliContext
from sagemaker.config.config_schema import SAGEMAKER_PYTHON_SDK_CONFIG_SCHEMA

from tests.conftest import PROJECT_ROOT
from tests.deploy.conftest import DEPLOY_BUCKET, sagemaker_env
from tsa_kedro.deploy import generation, plugin
from tsa_kedro.telemetry import SAGEMAKER_SDK_DEFAULTS

SDK_MODULES = (sagemaker.utils, sagemaker.session, sagemaker.config.config)
# A defaults file that breaks the SDK's schema: TelemetryOptOut must be a boolean.
BAD_DEFAULTS = {
    "SchemaVersion": "1.0",
    "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": "no"}}},
}


def test_validation_accepts_and_rejects_what_the_sdk_does() -> None:
    project_defaults = yaml.safe_load(SAGEMAKER_SDK_DEFAULTS.read_text())
    generation.validate_sdk_config(project_defaults)
    with pytest.raises(jsonschema.ValidationError) as sdk_error:
        jsonschema.validate(BAD_DEFAULTS, SAGEMAKER_PYTHON_SDK_CONFIG_SCHEMA)
    with pytest.raises(jsonschema.ValidationError) as ours:
        generation.validate_sdk_config(BAD_DEFAULTS)
    assert ours.value.message == sdk_error.value.message
    assert list(ours.value.absolute_path) == list(sdk_error.value.absolute_path)


def test_the_sdk_validates_with_it_inside_and_its_own_function_after() -> None:
    originals = [module.validate_sagemaker_config for module in SDK_MODULES]
    with pytest.raises(RuntimeError), generation.sdk_schema_checked_once():
        for module in SDK_MODULES:
            assert module.validate_sagemaker_config is generation.validate_sdk_config
        with pytest.raises(jsonschema.ValidationError):
            sagemaker.utils.get_sagemaker_config_value(
                None, "SageMaker.PythonSDK.Modules.TelemetryOptOut", BAD_DEFAULTS
            )
        raise RuntimeError("the block fails")
    assert [module.validate_sagemaker_config for module in SDK_MODULES] == originals


def test_loaded_once_reads_catalog_and_parameters_once() -> None:
    class Context:
        reads = 0
        project_path = Path("/project")

        @property
        def catalog(self) -> object:
            self.reads += 1
            return object()

        @property
        def params(self) -> dict:
            self.reads += 1
            return {"read": self.reads}

    context = Context()
    loaded = generation.LoadedOnce(context)
    assert loaded.catalog is loaded.catalog
    assert loaded.params == loaded.params == {"read": 2}
    assert context.reads == 2
    assert loaded.project_path == Path("/project")


def _generate(pipeline: str) -> tuple[dict, int, int]:
    """The definition of ``pipeline`` from the ``sagemaker`` environment, how many
    times the SDK's schema was checked and how many catalogs Kedro built."""
    counts = {"schema": 0, "catalog": 0}
    check_schema = jsonschema.Draft202012Validator.check_schema.__func__
    get_catalog = KedroContext._get_catalog

    def counted_check(cls, schema, *args, **kwargs):
        counts["schema"] += schema is SAGEMAKER_PYTHON_SDK_CONFIG_SCHEMA
        return check_schema(cls, schema, *args, **kwargs)

    def counted_catalog(self, *args, **kwargs):
        counts["catalog"] += 1
        return get_catalog(self, *args, **kwargs)

    metadata = bootstrap_project(PROJECT_ROOT)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            jsonschema.Draft202012Validator, "check_schema", classmethod(counted_check)
        )
        patch.setattr(KedroContext, "_get_catalog", counted_catalog)
        with plugin.context_and_pipeline(
            CliContext("sagemaker", metadata), None, pipeline, None, False
        ) as (_, sm_pipeline):
            definition = json.loads(sm_pipeline.definition())
    return definition, counts["schema"], counts["catalog"]


@pytest.mark.slow
def test_same_definition_as_without_the_fixes(
    moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The training pipeline: processing steps and a multi-host training step.
    for key, value in sagemaker_env(moto_endpoint, DEPLOY_BUCKET, tmp_path).items():
        monkeypatch.setenv(key, value)
    generation._sdk_config_validator.cache_clear()

    fixed, schema_checks, catalogs = _generate("train")
    assert schema_checks <= 1
    assert catalogs == 1

    monkeypatch.setattr(plugin, "LoadedOnce", lambda context: context)
    monkeypatch.setattr(plugin, "sdk_schema_checked_once", contextlib.nullcontext)
    plain, plain_schema_checks, plain_catalogs = _generate("train")
    assert plain == fixed
    assert {step["Type"] for step in fixed["Steps"]} == {"Processing", "Training"}
    # what the fixes save: a schema check per lookup, two catalogs per step
    assert plain_schema_checks > 10
    assert plain_catalogs >= 2 * len(fixed["Steps"])
