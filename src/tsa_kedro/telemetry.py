"""Nothing leaves the machine unasked: usage telemetry is off by the project's default.

Two libraries of the project report usage unless told not to:

* kedro-telemetry (and kedro-viz, which asks it) on every ``kedro`` command: it writes
  a project id into ``pyproject.toml`` and sends usage data. It reads its consent from
  ``.telemetry`` in the project root, which the repository ships with
  ``consent: false``.
* The SageMaker Python SDK on pipeline and job calls: it reads ``TelemetryOptOut`` from
  its defaults files. ``use_project_sagemaker_defaults`` (called by ``settings.py``, so
  every ``kedro`` command of the project) adds ``sagemaker_sdk_defaults.yaml``, which
  opts out, to those files.

docs/source/configuration.md ("Telemetry") says how to turn either on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, MutableMapping
from pathlib import Path

from platformdirs import site_config_dir, user_config_dir

SAGEMAKER_SDK_DEFAULTS = Path(__file__).with_name("sagemaker_sdk_defaults.yaml")
# The SDK's two layers of defaults, lowest first: the variable that names a layer's
# file, and the folder of the file it reads when the variable is unset.
_SDK_LAYERS: tuple[tuple[str, Callable[[str], str]], ...] = (
    ("SAGEMAKER_ADMIN_CONFIG_OVERRIDE", site_config_dir),
    ("SAGEMAKER_USER_CONFIG_OVERRIDE", user_config_dir),
)


def use_project_sagemaker_defaults(
    environ: MutableMapping[str, str] = os.environ,
) -> str | None:
    """Put the project's SageMaker SDK defaults file in the lowest free layer.

    The SDK merges an admin file and a user file on top of it. A layer is free when its
    variable is unset and its default file (``/etc/xdg/sagemaker/config.yaml``,
    ``~/.config/sagemaker/config.yaml``) does not exist; the project's file then fills
    it, so a user file still overrides it. When both layers hold a file, those files
    decide and nothing changes.

    Args:
        environ: The environment to set the layer's variable in.

    Returns:
        The variable set, or ``None`` when both layers were taken.
    """
    for variable, config_dir in _SDK_LAYERS:
        default_file = Path(config_dir("sagemaker")) / "config.yaml"
        if variable not in environ and not default_file.exists():
            environ[variable] = str(SAGEMAKER_SDK_DEFAULTS)
            return variable
    return None
