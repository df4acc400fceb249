"""The model presets of the train stage, for the benchmarks.

The presets are parameters (``train.model.presets`` in conf/base/parameters_train.yml);
the benchmarks read them from there, as the train stage does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tsa_kedro.models import TSAConfig

PARAMETERS_TRAIN = Path(__file__).parents[1] / "conf/base/parameters_train.yml"


def preset_fields(name: str) -> dict[str, Any]:
    """The ``TSAConfig`` fields of the preset ``name``."""
    params = yaml.safe_load(PARAMETERS_TRAIN.read_text(encoding="utf-8"))
    presets = params["train"]["model"]["presets"]
    if name not in presets:
        raise ValueError(f"unknown preset {name!r}; known: {sorted(presets)}")
    return dict(presets[name])


def preset_config(name: str, **fields: Any) -> TSAConfig:
    """The preset ``name`` plus the data widths (and any overrides) as keywords."""
    return TSAConfig.from_dict({**preset_fields(name), **fields})
