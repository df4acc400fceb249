"""Shared helper of the benchmark modules: results output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_results(results: Any, path: Path | None, echo: bool = True) -> None:
    """Print ``results`` as JSON (``echo``) and, with a ``path``, write them there
    through a temporary file, so an interrupted run never leaves half a file."""
    text = json.dumps(results, indent=2)
    if echo:
        print(text)
    if path:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)
