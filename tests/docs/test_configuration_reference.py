"""The configuration reference names every environment, parameter file and parameter."""

from __future__ import annotations

import pytest
import yaml

from tests.conftest import PROJECT_ROOT

CONF = PROJECT_ROOT / "conf"
REFERENCE = PROJECT_ROOT / "docs" / "source" / "configuration.md"


def _parameter_files() -> list:
    return sorted(CONF.glob("*/parameters*.yml"))


def _environments() -> list[str]:
    return sorted(p.name for p in CONF.iterdir() if p.is_dir())


@pytest.fixture(scope="module")
def reference() -> str:
    return REFERENCE.read_text()


@pytest.mark.parametrize("env", _environments())
def test_every_environment_is_documented(env: str, reference: str):
    assert f"`conf/{env}/`" in reference, f"{REFERENCE.name} does not describe {env}"


@pytest.mark.parametrize(
    "path", _parameter_files(), ids=lambda p: str(p.relative_to(CONF))
)
def test_every_parameter_file_and_top_level_key_is_documented(path, reference: str):
    name = str(path.relative_to(PROJECT_ROOT))
    assert f"`{name}`" in reference, f"{REFERENCE.name} does not mention {name}"
    keys = yaml.safe_load(path.read_text()) or {}
    missing = sorted(key for key in keys if f"`{key}`" not in reference)
    assert not missing, f"{REFERENCE.name} does not describe {name} keys {missing}"
