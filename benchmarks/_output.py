"""Shared helpers of the benchmark modules: results output, model settings."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
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


@contextlib.contextmanager
def switched(model: Any, setting: str, value: bool) -> Iterator[None]:
    """``model.<setting> = value`` inside the block; the previous value afterwards."""
    before = getattr(model, setting)
    setattr(model, setting, value)
    try:
        yield
    finally:
        setattr(model, setting, before)
