"""Sphinx configuration of the tsa_kedro documentation site.

Build it with ``sphinx-build -W --keep-going -b html docs/source docs/build/html``.
Pages are Markdown (MyST), except the API reference (reStructuredText): it is generated
from the docstrings of every module of the ``tsa_kedro`` package by the
``tsa-api-reference`` directive below, so a new module shows up without editing a page.
"""

from __future__ import annotations

import pkgutil
import re
import sys
from pathlib import Path

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Document the code of this checkout, whatever tsa_kedro the environment has installed.
sys.path.insert(0, str(PROJECT_ROOT / "src"))

import tsa_kedro  # noqa: E402 (needs the path above)

project = "tsa_kedro"
author = "tsa_kedro contributors"
release = tsa_kedro.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
language = "en"
exclude_patterns = ["_build", "build", "**.ipynb_checkpoints"]

myst_enable_extensions = ["colon_fence", "deflist", "dollarmath"]
myst_heading_anchors = 3

autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "alabaster"
html_title = f"tsa_kedro {release}"
html_show_sourcelink = False
html_theme_options = {"description": "TSA fraud model on Kedro", "fixed_sidebar": True}

# Modules left out of the API reference: the command-line entry point only.
API_EXCLUDE = {"tsa_kedro.__main__"}


def api_modules() -> list[str]:
    """Every importable module of the ``tsa_kedro`` package, sorted by name."""
    names = {"tsa_kedro"}
    for info in pkgutil.walk_packages(tsa_kedro.__path__, prefix="tsa_kedro."):
        names.add(info.name)
    return sorted(names - API_EXCLUDE)


class ApiReference(SphinxDirective):
    """``tsa-api-reference``: one section per module with its autodoc output."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        lines = []
        for module in api_modules():
            lines += [module, "-" * len(module), "", f".. automodule:: {module}", ""]
        container = nodes.section()
        container.document = self.state.document
        nested_parse_with_titles(
            self.state, StringList(lines, source="tsa-api-reference"), container
        )
        return container.children


# ``|x|`` in a docstring is an absolute value, not a reStructuredText substitution.
_ABSOLUTE_VALUE = re.compile(r"(?<![\\|`])\|(?=[^|\s])([^|`]*?[^|\s])\|(?![|`])")


def escape_absolute_values(  # noqa: PLR0917 (the signature of the Sphinx event)
    app: Sphinx, what: str, name: str, obj: object, options: object, lines: list[str]
) -> None:
    """Docstrings are plain Google style: render ``|a - b|`` literally."""
    for index, line in enumerate(lines):
        if not line.lstrip().startswith(("|", "+")):
            lines[index] = _ABSOLUTE_VALUE.sub(r"\\|\1\\|", line)


def setup(app: Sphinx) -> dict[str, bool]:
    """Register the API-reference directive and the docstring clean-up."""
    app.add_directive("tsa-api-reference", ApiReference)
    app.connect("autodoc-process-docstring", escape_absolute_values)
    return {"parallel_read_safe": True}
