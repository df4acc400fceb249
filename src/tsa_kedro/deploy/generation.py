"""What makes generating the SageMaker pipeline slow, and the two fixes.

``kedro sagemaker compile`` (and ``run``, which compiles first) took 87 s for the
project's 30-step pipeline on a 2-core machine, before a single AWS call. A profile
showed two costs, both repeated per step and neither needed more than once:

* **The SageMaker SDK re-checks its own schema.** Every processor, estimator and session
  looks its defaults up in the SDK defaults (the project's ``sagemaker_sdk_defaults.yaml``
  is one, see :mod:`tsa_kedro.telemetry`), and every lookup validates the whole defaults
  dictionary with ``jsonschema.validate``. That function first checks the SDK's large
  schema against the JSON Schema meta-schema, then validates the dictionary: about 350
  times per compile, half the compile's time. (Each processor also starts a session of
  its own, which reads and validates the defaults files again.)
  :func:`sdk_schema_checked_once` validates the dictionary just the same every time,
  with a validator whose schema was checked once. A defaults file that breaks the
  schema still fails with the same error.
* **Kedro rebuilds the catalog on every access.** ``KedroContext.catalog`` and ``.params``
  read and merge every configuration file each time they are read; the plugin's
  generator reads the catalog twice per node to find its SageMaker model datasets.
  :class:`LoadedOnce` gives the generator the context with its catalog and parameters
  read once.

With both, compile takes about a third of the time (docs/source/deployment.md gives the
figures). The generated definition is the same: tests/deploy/test_generation.py compares
it with one generated without the fixes.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import Any

import jsonschema
import sagemaker.config.config
import sagemaker.session
import sagemaker.utils
from sagemaker.config.config_schema import SAGEMAKER_PYTHON_SDK_CONFIG_SCHEMA

# The SDK modules that call ``validate_sagemaker_config``, under the name they imported
# it by: per defaults lookup (``utils``, ``session``) and per defaults file read
# (``config.config``: each processor without a session of its own starts one, which
# reads the files again).
_CALLERS = (sagemaker.utils, sagemaker.session, sagemaker.config.config)


@functools.cache
def _sdk_config_validator() -> jsonschema.protocols.Validator:
    """A validator of the SDK's defaults schema; the schema itself is checked here,
    once, as ``jsonschema.validate`` checks it on every call."""
    schema = SAGEMAKER_PYTHON_SDK_CONFIG_SCHEMA
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)


def validate_sdk_config(sagemaker_config: dict | None = None) -> None:
    """``sagemaker.config.validate_sagemaker_config`` without re-checking the schema.

    Raises:
        jsonschema.ValidationError: the defaults break the SDK's schema; the error
            ``jsonschema.validate`` raises (its best match).
    """
    error = jsonschema.exceptions.best_match(
        _sdk_config_validator().iter_errors(sagemaker_config)
    )
    if error is not None:
        raise error


@contextmanager
def sdk_schema_checked_once() -> Iterator[None]:
    """While inside, the SDK validates its defaults with :func:`validate_sdk_config`;
    its own function is restored on the way out."""
    originals = [(module, module.validate_sagemaker_config) for module in _CALLERS]
    try:
        for module, _ in originals:
            module.validate_sagemaker_config = validate_sdk_config
        yield
    finally:
        for module, original in originals:
            module.validate_sagemaker_config = original


class LoadedOnce:
    """A Kedro context whose ``catalog`` and ``params`` are read once; every other
    attribute is the context's own.

    For generating the pipeline only: the generator reads the catalog's dataset types
    and the parameters, and changes neither.
    """

    def __init__(self, context: Any):
        self._context = context

    @cached_property
    def catalog(self) -> Any:
        return self._context.catalog

    @cached_property
    def params(self) -> dict:
        return self._context.params

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)
