"""Compute resources of a SageMaker step: by node name, then node tag, then default.

kedro-sagemaker 0.4.0 documents lookup "by node name or node tag" but stops at the
first candidate, the node name, even when nothing is configured for it, so tags never
match (upstream issues getindata/kedro-sagemaker#28 and #29). :func:`resolve_resources`
is the project's lookup; ``plugin.ProjectSageMakerGenerator`` uses it instead of the
plugin's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from tsa_kedro.deploy.config import DeploymentConfigError, ProjectResourceConfig

DEFAULT_KEY = "__default__"
# The plugin's fallback when sagemaker.yml has no __default__ entry (ml.m5.large), with
# the instance count that SageMaker requires and the plugin leaves unset.
PLUGIN_FALLBACK = ProjectResourceConfig(instance_type="ml.m5.large", instance_count=1)


def _set_fields(entry: ProjectResourceConfig) -> dict:
    return {
        key: value for key, value in entry.model_dump().items() if value is not None
    }


def resolve_resources(
    resources: Mapping[str, ProjectResourceConfig],
    node_name: str,
    node_tags: Iterable[str],
) -> ProjectResourceConfig:
    """The resources of one node.

    The entry named after the node wins; otherwise the entry of one of its tags;
    otherwise none. The values set in that entry are laid over ``__default__``, which
    is laid over the plugin's own fallback (one ``ml.m5.large``).

    Args:
        resources: the ``aws.resources`` block of ``sagemaker.yml``.
        node_name: the Kedro node's name.
        node_tags: the Kedro node's tags.

    Returns:
        The merged resources.

    Raises:
        DeploymentConfigError: the node has no entry of its own and two of its tags
            have entries (the choice would be arbitrary).
    """
    merged = PLUGIN_FALLBACK.model_dump()
    if DEFAULT_KEY in resources:
        merged.update(_set_fields(resources[DEFAULT_KEY]))
    if node_name in resources:
        specific = resources[node_name]
    else:
        tagged = sorted(tag for tag in node_tags if tag in resources)
        if len(tagged) > 1:
            raise DeploymentConfigError(
                f"Node {node_name!r} has tags {tagged} that all have resources in "
                f"sagemaker.yml; give the node an entry of its own under its name."
            )
        specific = resources[tagged[0]] if tagged else None
    if specific is not None:
        merged.update(_set_fields(specific))
    return ProjectResourceConfig(**merged)
