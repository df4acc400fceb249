"""Project settings (https://docs.kedro.org/en/0.19.14/kedro_project_setup/settings.html)."""

import os

from kedro.config import OmegaConfigLoader


def _env(key: str, default: str | None = None) -> str | None:
    """``${env:NAME,default}`` in any configuration file: a value from the environment."""
    return os.environ.get(key, default)


CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "custom_resolvers": {"env": _env},
}
