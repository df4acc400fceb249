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

# A package that re-exports names in ``__all__`` would document them twice (once in the
# package, once where they are defined); document each where it is defined.
autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
    "ignore-module-all": True,
}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# Google-style sections of our own that group a dataclass's fields.
napoleon_custom_sections = [
    ("Data widths", "params_style"),
    ("Architecture", "params_style"),
]

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


# Lines of an ASCII diagram: arrows, box-drawing characters, ``+-`` joints.
_DIAGRAM = re.compile(r"-->|--\+|\+-|[─│┌┐└┘├┤►◄▼▲]")


def literal_diagrams(  # noqa: PLR0917 (the signature of the Sphinx event)
    app: Sphinx, what: str, name: str, obj: object, options: object, lines: list[str]
) -> None:
    """Show an indented ASCII diagram as it is written (a literal block), not as text."""
    result: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        starts_block = line.startswith(" ") and (
            index == 0 or not lines[index - 1].strip()
        )
        if not starts_block:
            result.append(line)
            index += 1
            continue
        end = index
        while end < len(lines) and (
            lines[end].startswith(" ") or not lines[end].strip()
        ):
            end += 1
        block = lines[index:end]
        before = next((text for text in reversed(result) if text.strip()), "")
        if any(_DIAGRAM.search(text) for text in block) and not before.endswith("::"):
            result += ["::", ""]
        result += block
        index = end
    lines[:] = result


def close_indented_lists(  # noqa: PLR0917 (the signature of the Sphinx event)
    app: Sphinx, what: str, name: str, obj: object, options: object, lines: list[str]
) -> None:
    """End an indented list under a ``Heading:`` line with a blank line when the text
    goes on right below it (plain text reads it as a paragraph break)."""
    result: list[str] = []
    opener = ""
    for line in lines:
        indented = line.startswith(" ")
        if line.strip() and not indented:
            if result and result[-1].startswith(" ") and result[-1].strip():
                if opener.endswith(":") and not opener.startswith((":", "..")):
                    result.append("")
            opener = line.rstrip()
        result.append(line)
    lines[:] = result


def setup(app: Sphinx) -> dict[str, bool]:
    """Register the API-reference directive and the docstring clean-ups."""
    app.add_directive("tsa-api-reference", ApiReference)
    app.connect("autodoc-process-docstring", escape_absolute_values)
    app.connect("autodoc-process-docstring", literal_diagrams)
    app.connect("autodoc-process-docstring", close_indented_lists)
    return {"parallel_read_safe": True}
