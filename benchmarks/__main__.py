"""Run every benchmark module in this folder with its defaults: ``python -m benchmarks``."""

import importlib
import pkgutil
import sys
from pathlib import Path


def main() -> None:
    """Import each ``benchmarks.<name>`` module and call its ``main()``."""
    sys.argv = sys.argv[:1]  # every benchmark runs with its own defaults
    for module in sorted(pkgutil.iter_modules([str(Path(__file__).parent)])):
        if module.name.startswith("_"):
            continue
        print(f"== benchmarks.{module.name}", flush=True)
        importlib.import_module(f"benchmarks.{module.name}").main()


if __name__ == "__main__":
    main()
