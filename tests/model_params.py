"""The train stage's model parameters (``train.model`` of conf/base/parameters_train.yml).

Tests take the named presets from there, as the train stage does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

PARAMETERS_TRAIN = Path(__file__).parents[1] / "conf/base/parameters_train.yml"


def model_params(preset: str, **overrides: Any) -> dict[str, Any]:
    """``params:train.model`` with ``preset`` selected and ``overrides`` set."""
    params = yaml.safe_load(PARAMETERS_TRAIN.read_text(encoding="utf-8"))
    model = params["train"]["model"]
    return {**model, "preset": preset, "overrides": overrides}


def preset_fields(name: str) -> dict[str, Any]:
    """The ``TSAConfig`` fields of one named preset."""
    return dict(model_params(name)["presets"][name])
