"""Calls the R calibration script (``bspline_calibration.R``) through rpy2.

Scores and tags cross into R as numeric vectors; R's result lists come back as plain
Python values (dicts, lists, floats, ints, strings). Any error R raises (invalid input,
a failed quality check) is re-raised as :class:`CalibrationError` carrying R's message.
Importing this module without R installed raises :class:`RNotFoundError`, which says
how to install R.

This module is the only one in the package that imports rpy2; the evaluator that the
serving bundle ships (:mod:`tsa_kedro.calibration.evaluator`) needs neither R nor rpy2.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Mapping
from importlib import resources
from typing import Any

import numpy as np

# The API-mode extension is not built in this environment; ABI mode works with R 4.2 and
# avoids rpy2 printing an import error on every start.
os.environ.setdefault("RPY2_CFFI_MODE", "ABI")
_LOADER_PATH = os.environ.get("LD_LIBRARY_PATH")


class RNotFoundError(RuntimeError):
    """No R installation to embed: ``R`` is not on ``PATH`` and ``R_HOME`` is unset or
    names no folder."""


def _require_r() -> None:
    """Refuse to go on without R, saying how to get it (rpy2 would say "r_home is
    None")."""
    r_home = os.environ.get("R_HOME")
    if r_home and os.path.isdir(r_home):
        return
    if not r_home and shutil.which("R"):
        return
    found = f"R_HOME={r_home!r} is not a folder" if r_home else "no R on PATH"
    raise RNotFoundError(
        f"R was not found ({found}); the calibrate stage runs R through rpy2. Install "
        "it with the Debian packages r-base-core r-cran-quadprog r-cran-jsonlite "
        "(scripts/setup.sh installs them), or point R_HOME at an R installation "
        "(the folder that `R RHOME` prints)."
    )


_require_r()

import rpy2.rinterface_lib.callbacks as r_callbacks  # noqa: E402
import rpy2.robjects as ro  # noqa: E402
from rpy2.rinterface_lib.embedded import RRuntimeError  # noqa: E402
from rpy2.robjects import numpy2ri  # noqa: E402

# Starting R copies R's environment into os.environ, including an LD_LIBRARY_PATH that
# puts the system library folder first. The dynamic loader of this process has already
# read its path, but every child process would inherit it, and a Python child then loads
# system libraries built for another interpreter (pyarrow fails to import, for one). So
# the loader path goes back to what it was.
if _LOADER_PATH is None:
    os.environ.pop("LD_LIBRARY_PATH", None)
else:
    os.environ["LD_LIBRARY_PATH"] = _LOADER_PATH

R_SCRIPT = "bspline_calibration.R"

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_environment: Any = None


class CalibrationError(RuntimeError):
    """The R calibration refused its input or failed a quality check (R's message)."""


def r_script_path() -> str:
    """Path of the R script shipped as package data."""
    return str(resources.files("tsa_kedro.calibration").joinpath(R_SCRIPT))


def _r_environment() -> Any:
    """The R environment holding the script's functions (sourced once per process)."""
    global _environment  # noqa: PLW0603 - one embedded R per process, sourced once
    if _environment is None:
        env = ro.r["new.env"]()
        ro.r["sys.source"](r_script_path(), envir=env)
        _environment = env
    return _environment


def _to_python(value: Any) -> Any:
    """R value → plain Python: named list → dict, unnamed list → list, vector of length 1
    → scalar, longer vector → list, NULL → None (the shapes jsonlite writes with
    ``auto_unbox = TRUE``)."""
    if value is ro.NULL or value is None:
        return None
    if isinstance(value, ro.vectors.ListVector):
        items = [_to_python(item) for item in value]
        names = value.names
        if names is ro.NULL or names is None:
            return items
        return dict(zip([str(name) for name in names], items, strict=True))
    if isinstance(value, ro.vectors.BoolVector):
        items = [None if item is ro.NA_Logical else bool(item) for item in value]
    elif isinstance(value, ro.vectors.IntVector):
        items = [None if item is ro.NA_Integer else int(item) for item in value]
    elif isinstance(value, ro.vectors.FloatVector):
        items = [float(item) for item in value]
    elif isinstance(value, ro.vectors.StrVector):
        items = [None if item is ro.NA_Character else str(item) for item in value]
    else:
        raise TypeError(f"unexpected R value of type {type(value).__name__}")
    return items[0] if len(items) == 1 else items


def _call(function: str, *args: Any, **kwargs: Any) -> Any:
    """Call an R function of the script (numpy arrays cross as R vectors). R errors become
    :class:`CalibrationError` with R's message; R warnings are logged."""
    messages: list[str] = []
    with _lock:
        env = _r_environment()
        previous = r_callbacks.consolewrite_warnerror
        r_callbacks.consolewrite_warnerror = messages.append
        try:
            r_args = [_to_r(arg) for arg in args]
            r_kwargs = {key: _to_r(arg) for key, arg in kwargs.items()}
            result = env[function](*r_args, **r_kwargs)
        except RRuntimeError as error:
            detail = "".join(messages).strip() or str(error)
            raise CalibrationError(detail.removeprefix("Error: ").strip()) from None
        finally:
            r_callbacks.consolewrite_warnerror = previous
    if "".join(messages).strip():
        logger.warning("R %s: %s", function, "".join(messages).strip())
    return result


def _to_r(value: Any) -> Any:
    """numpy arrays cross as R vectors in one copy; everything else as rpy2 converts it."""
    if isinstance(value, np.ndarray):
        with (ro.default_converter + numpy2ri.converter).context():
            return ro.conversion.get_conversion().py2rpy(value)
    return value


def _as_vector(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise CalibrationError(
            f"{name} must be one-dimensional, got shape {array.shape}"
        )
    return np.ascontiguousarray(array)


def fit_bspline_calibration(
    scores: Any, tags: Any, settings: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Fit the monotone B-spline calibration in R.

    Args:
        scores: Model scores in [0, 1], one per record.
        tags: 0/1 fraud tags, same order as ``scores``.
        settings: Keyword arguments of the R function ``fit_bspline_calibration``
            (``max_iterations``, ``coefficient_tolerance``, ``penalty``, ...).

    Returns:
        The B-spline parameters (knots, coefficients, degree, status, iterations,
        fit statistics, settings) as plain Python values.

    Raises:
        CalibrationError: R rejected the input or a quality check failed.
    """
    return _to_python(_fit_in_r(scores, tags, settings))


def _fit_in_r(scores: Any, tags: Any, settings: Mapping[str, Any] | None) -> Any:
    kwargs = {key: _r_scalar(value) for key, value in (settings or {}).items()}
    return _call(
        "fit_bspline_calibration",
        _as_vector(scores, "scores"),
        _as_vector(tags, "tags"),
        **kwargs,
    )


def _r_scalar(value: Any) -> Any:
    # Integers cross as R integers (R compares them as numbers either way), floats as
    # doubles; anything else as rpy2 converts it.
    if isinstance(value, bool):
        return ro.BoolVector([value])
    if isinstance(value, int):
        return ro.IntVector([value])
    if isinstance(value, float):
        return ro.FloatVector([value])
    return value


def predict_in_r(parameters: Mapping[str, Any], scores: Any) -> np.ndarray:
    """R's own calibrated probabilities for ``scores`` (``splines::splineDesign``)."""
    r_parameters = ro.ListVector(
        {
            "knots": ro.FloatVector(list(map(float, parameters["knots"]))),
            "coefficients": ro.FloatVector(
                list(map(float, parameters["coefficients"]))
            ),
            "degree": ro.IntVector([int(parameters["degree"])]),
        }
    )
    result = _call(
        "predict_bspline_calibration", r_parameters, _as_vector(scores, "scores")
    )
    return np.asarray(result, dtype=np.float64)


def fit_bspline_calibration_with_json(
    scores: Any, tags: Any, settings: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], str]:
    """Like :func:`fit_bspline_calibration`, plus the JSON text that R's jsonlite writes
    for the same result (what ``Rscript bspline_calibration.R`` would save)."""
    result = _fit_in_r(scores, tags, settings)
    text = _call("bspline_parameters_json", result)
    return _to_python(result), str(_to_python(text))
