"""Project settings (https://docs.kedro.org/en/0.19.14/kedro_project_setup/settings.html)."""

import os

from kedro.config import OmegaConfigLoader

from tsa_kedro.parameters import ParameterCheckHook
from tsa_kedro.raw_export import RawExportCheckHook
from tsa_kedro.run_guard import RunGuardHook
from tsa_kedro.telemetry import use_project_sagemaker_defaults
from tsa_kedro.tracking import MlflowTrackingHook, tracking_enabled

# No usage telemetry unless asked for: the SageMaker SDK reads the project's defaults
# file (TelemetryOptOut); kedro-telemetry reads .telemetry (tsa_kedro.telemetry).
use_project_sagemaker_defaults()


def _env(key: str, default: str | None = None) -> str | None:
    """``${env:NAME,default}`` in any configuration file: a value from the environment."""
    return os.environ.get(key, default)


CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "custom_resolvers": {"env": _env},
    # An environment's parameter file lists only what it changes (for example
    # conf/sagemaker/parameters_train.yml); nested keys merge into base's.
    "merge_strategy": {"parameters": "soft"},
}

# Every parameter is checked against one schema when the context is created, before
# any node runs (tsa_kedro.parameters). A run that reads the raw export stops in one
# line when there is none (tsa_kedro.raw_export). Per-epoch training history, metrics
# and main artefacts to MLflow; also creates the local SQLite store's folder before
# kedro-mlflow opens it (docs/source/registry.md). A run stopped by SIGTERM cleans up;
# the next run removes what killed runs left behind (docs/source/reliability.md).
HOOKS = (
    ParameterCheckHook(),
    RawExportCheckHook(),
    MlflowTrackingHook(),
    RunGuardHook(),
)
# kedro-mlflow registers itself when installed; TSA_MLFLOW_TRACKING=off switches it off.
DISABLE_HOOKS_FOR_PLUGINS = () if tracking_enabled() else ("kedro_mlflow",)
