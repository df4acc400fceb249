"""Catalog locations that each SageMaker pipeline execution chooses.

``tsa_kedro.path_parameters`` in ``sagemaker.yml`` maps a parameter name to a catalog
dataset, for example ``raw_export: raw_orders``. The dataset's entry in that
environment reads its path from the Kedro runtime parameter of the same name:
``path: ${runtime_params:raw_export, <default>}``. ``compile`` then

* declares a SageMaker pipeline parameter (a string) of that name, whose default is
  the path the catalog resolves: the entry's default, or the value given to
  ``compile``/``run`` with ``--params``;
* hands the execution's value to every step whose node reads or writes the dataset,
  as that runtime parameter: a processing step runs
  ``kedro sagemaker ... execute ... --params {"<name>": "<value>"}`` (container
  arguments), a training step gets the plugin's parameter variables, which
  ``kedro sagemaker entrypoint`` turns into the same ``--params``.

So one compiled pipeline reads whichever location an execution names, from the
console or ``start_pipeline_execution(PipelineParameters=[...])``.

A value may also name a Kedro parameter instead of a dataset: ``params:<key>``
(dotted for nested keys), for example ``score_model: params:score.model``. The
SageMaker pipeline parameter's default is then the parameter's value (a string), and
the steps whose node reads the parameter (``params:score.model``, ``params:score`` or
``parameters``) get the execution's value as the runtime parameter
``{"score": {"model": "<value>"}}``, which Kedro merges over the parameters files.
No catalog or parameters entry changes for it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from kedro.config import AbstractConfigLoader
from kedro_sagemaker.constants import (
    KEDRO_SAGEMAKER_PARAM_KEY_PREFIX,
    KEDRO_SAGEMAKER_PARAM_VALUE_PREFIX,
)
from sagemaker.workflow.functions import Join
from sagemaker.workflow.parameters import ParameterString

from tsa_kedro.deploy.config import s3_uri_problem
from tsa_kedro.settings import CONFIG_LOADER_ARGS, CONFIG_LOADER_CLASS

# A SageMaker pipeline parameter name that is also a plain (undotted) runtime key.
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,255}$")
_PROBE_ROOT = "s3://tsa-kedro-probe/"
PARAMS_PREFIX = "params:"


def parameter_key(target: str) -> str | None:
    """The dotted parameter key of a ``params:<key>`` target; None for a dataset."""
    return target[len(PARAMS_PREFIX) :] if target.startswith(PARAMS_PREFIX) else None


def _parameter_value(parameters: Mapping[str, Any], key: str) -> tuple[bool, Any]:
    """``(found, value)`` of a dotted key in the nested parameters."""
    value: Any = parameters
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return False, None
        value = value[part]
    return True, value


def _parameter_problem(name: str, key: str, parameters: Mapping, where: str, env: str):
    found, value = _parameter_value(parameters, key)
    if not key or not found:
        return (
            f"path parameter `{name}` ({where}) names the parameter {key!r}, which "
            f"the `{env}` environment does not define."
        )
    if not isinstance(value, str) or not value:
        return (
            f"path parameter `{name}` ({where}) names the parameter {key!r}, whose "
            f"value {value!r} is not a non-empty string."
        )
    return None


def _dataset_path(entry: Any) -> Any:
    if not isinstance(entry, Mapping):
        return None
    return entry.get("path", entry.get("filepath"))


def _probed_catalog(config_loader: AbstractConfigLoader, names: list[str]) -> dict:
    """The catalog configuration with every named runtime parameter set to a probe."""
    loader = CONFIG_LOADER_CLASS(
        conf_source=config_loader.conf_source,
        env=config_loader.env,
        runtime_params={
            **(config_loader.runtime_params or {}),
            **{name: _PROBE_ROOT + name for name in names},
        },
        **CONFIG_LOADER_ARGS,
    )
    return loader["catalog"]


def path_parameter_problems(
    config_loader: AbstractConfigLoader, path_parameters: Mapping[str, str], env: str
) -> list[str]:
    """What keeps the configured path parameters from working, one line each.

    Each name must be a valid parameter name, its dataset an entry of the catalog
    whose path changes with the runtime parameter of that name, and the path it
    resolves to now (the default) an ``s3://`` URI. A ``params:<key>`` target must
    name a parameter of the environment whose value is a non-empty string.

    Args:
        config_loader: the Kedro context's configuration loader.
        path_parameters: ``tsa_kedro.path_parameters`` of the environment.
        env: the Kedro environment, for the lines.

    Returns:
        One line per problem; empty when every parameter works.
    """
    if not path_parameters:
        return []
    where = f"tsa_kedro.path_parameters in conf/{env}/sagemaker.yml"
    catalog = config_loader["catalog"]
    datasets = [n for n, t in path_parameters.items() if parameter_key(t) is None]
    probed = _probed_catalog(config_loader, datasets)
    problems = []
    for name, dataset in path_parameters.items():
        key = parameter_key(dataset)
        if not _NAME.match(name):
            problems.append(
                f"path parameter {name!r} ({where}) is not a valid name: letters, "
                "digits and underscores, starting with a letter."
            )
        elif key is not None:
            if problem := _parameter_problem(
                name, key, config_loader["parameters"], where, env
            ):
                problems.append(problem)
        elif _dataset_path(catalog.get(dataset)) is None:
            problems.append(
                f"path parameter `{name}` ({where}) names {dataset!r}, which is not a "
                f"catalog entry with a path in the `{env}` environment."
            )
        elif _dataset_path(probed[dataset]) != _PROBE_ROOT + name:
            problems.append(
                f"path parameter `{name}` ({where}) would not move {dataset!r}: its "
                f"catalog entry must read `path: ${{runtime_params:{name}, <default>}}`."
            )
        elif problem := s3_uri_problem(
            name,
            _dataset_path(catalog[dataset]),
            f"the path of catalog entry {dataset!r}",
        ):
            problems.append(problem)
    return problems


def sagemaker_parameters(
    config_loader: AbstractConfigLoader, path_parameters: Mapping[str, str]
) -> list[ParameterString]:
    """One SageMaker pipeline parameter per path parameter.

    Args:
        config_loader: the Kedro context's configuration loader (with the runtime
            parameters given to ``compile``/``run``).
        path_parameters: ``tsa_kedro.path_parameters`` of the environment.

    Returns:
        String parameters named after the path parameters, each defaulting to the
        path that the catalog resolves now (or, for ``params:<key>``, to the
        parameter's value now).
    """
    catalog = config_loader["catalog"]
    parameters = None
    declared = []
    for name, target in path_parameters.items():
        key = parameter_key(target)
        if key is None:
            default = _dataset_path(catalog[target])
        else:
            if parameters is None:
                parameters = config_loader["parameters"]
            default = _parameter_value(parameters, key)[1]
        declared.append(ParameterString(name, default_value=str(default)))
    return declared


def _reads_parameter(inputs: set[str], key: str) -> bool:
    if "parameters" in inputs:
        return True
    read = [i[len(PARAMS_PREFIX) :] for i in inputs if i.startswith(PARAMS_PREFIX)]
    return any(key == p or key.startswith(p + ".") for p in read)


def parameters_of_node(path_parameters: Mapping[str, str], node: Any) -> list[str]:
    """The path parameters whose dataset ``node`` reads or writes, or whose
    ``params:<key>`` it reads (the key, a parent of it, or all ``parameters``).

    Args:
        path_parameters: ``tsa_kedro.path_parameters``.
        node: a Kedro node (or the plugin's stand-in for its MLflow step, which has
            neither inputs nor outputs).
    """
    inputs = set(getattr(node, "inputs", []))
    datasets = {*inputs, *getattr(node, "outputs", [])}
    names = []
    for name, target in path_parameters.items():
        key = parameter_key(target)
        if (key is None and target in datasets) or (
            key is not None and _reads_parameter(inputs, key)
        ):
            names.append(name)
    return names


def runtime_key(path_parameters: Mapping[str, str] | None, name: str) -> str:
    """The dotted runtime parameter a path parameter sets: its name for a dataset,
    the parameter key for ``params:<key>``."""
    key = parameter_key((path_parameters or {}).get(name, ""))
    return name if key is None else key


def _json_parts(tree: Mapping[str, Any]) -> list:
    """JSON text of a nested mapping whose leaves are pipeline parameter names, as
    ``Join`` values (each leaf a quoted ``ParameterString``)."""
    parts: list = []
    for position, (key, value) in enumerate(tree.items()):
        parts.append(("{" if position == 0 else ", ") + json.dumps(key) + ": ")
        if isinstance(value, Mapping):
            parts += _json_parts(value)
        else:
            parts += ['"', ParameterString(value), '"']
    return [*parts, "}"]


def execute_arguments(
    names: list[str], path_parameters: Mapping[str, str] | None = None
) -> list:
    """``--params`` for a processing step's ``kedro ... execute`` command.

    The JSON object is assembled by SageMaker at execution time from the pipeline
    parameters' values (which must not contain quotes or backslashes).

    Args:
        names: the path parameters the step's node uses.
        path_parameters: ``tsa_kedro.path_parameters``, for the names that set a
            ``params:<key>`` (nested in the JSON object); None: every name is a
            runtime parameter of its own.

    Returns:
        The container arguments: ``--params`` and a ``Join`` of the JSON text.
    """
    tree: dict[str, Any] = {}
    for name in names:
        *parents, leaf = runtime_key(path_parameters, name).split(".")
        level = tree
        for parent in parents:
            level = level.setdefault(parent, {})
        level[leaf] = name
    return ["--params", Join(on="", values=_json_parts(tree))]


def entrypoint_environment(
    names: list[str],
    environment: Mapping[str, Any],
    path_parameters: Mapping[str, str] | None = None,
) -> dict:
    """Variables that make ``kedro sagemaker entrypoint`` pass the parameters on.

    The entrypoint of a training step pairs ``KEDRO_SAGEMAKER_PARAM_KEY_<i>`` with
    ``KEDRO_SAGEMAKER_PARAM_VALUE_<i>``; the new pairs are numbered after those
    already in ``environment``.

    Args:
        names: the path parameters the step's node uses.
        environment: the step's environment so far.
        path_parameters: ``tsa_kedro.path_parameters``, for the names that set a
            ``params:<key>`` (the key, dotted, is what the entrypoint nests).

    Returns:
        The variables to add: each runtime key, and its pipeline parameter as the
        value.
    """
    first = sum(key.startswith(KEDRO_SAGEMAKER_PARAM_KEY_PREFIX) for key in environment)
    variables = {}
    for index, name in enumerate(names, start=first):
        variables[f"{KEDRO_SAGEMAKER_PARAM_KEY_PREFIX}{index}"] = runtime_key(
            path_parameters, name
        )
        variables[f"{KEDRO_SAGEMAKER_PARAM_VALUE_PREFIX}{index}"] = ParameterString(
            name
        )
    return variables
