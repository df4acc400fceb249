"""Resources by node name, then tag, then __default__, and the plugin bug they fix."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from kedro_sagemaker.generator import KedroSageMakerGenerator

from tsa_kedro.deploy.config import DeploymentConfigError, ProjectResourceConfig
from tsa_kedro.deploy.plugin import ProjectSageMakerGenerator
from tsa_kedro.deploy.resources import resolve_resources

RESOURCES = {
    "__default__": ProjectResourceConfig(
        instance_type="ml.m5.xlarge", instance_count=1, timeout_seconds=3600
    ),
    "gpu": ProjectResourceConfig(
        instance_type="ml.g5.48xlarge", instance_count=2, volume_size_gb=1000
    ),
    "highmem": ProjectResourceConfig(instance_type="ml.r5.24xlarge"),
    "train.build_tensor_chunks": ProjectResourceConfig(instance_type="ml.r5.4xlarge"),
}


def test_tag_entry_applies_when_the_name_has_none():
    resources = resolve_resources(RESOURCES, "train_tsa_model", {"gpu", "training"})
    assert resources.instance_type == "ml.g5.48xlarge"
    assert resources.instance_count == 2
    assert resources.volume_size_gb == 1000
    assert resources.timeout_seconds == 3600  # inherited from __default__


def test_name_entry_wins_over_tag_entry():
    resources = resolve_resources(RESOURCES, "train.build_tensor_chunks", {"highmem"})
    assert resources.instance_type == "ml.r5.4xlarge"


def test_untagged_node_gets_default():
    resources = resolve_resources(RESOURCES, "ingest_vali", set())
    assert resources.instance_type == "ml.m5.xlarge"
    assert resources.volume_size_gb is None


def test_without_default_entry_the_plugin_fallback_applies():
    resources = resolve_resources({"gpu": RESOURCES["gpu"]}, "report", {"other"})
    assert resources.instance_type == "ml.m5.large"
    assert resources.instance_count == 1


def test_two_tags_with_entries_are_ambiguous():
    with pytest.raises(DeploymentConfigError, match="'fit'.*gpu.*highmem"):
        resolve_resources(RESOURCES, "fit", {"highmem", "gpu"})


def test_project_generator_finds_the_tag_entry_the_plugin_misses():
    """The plugin's own lookup stops at the node name and misses the tag entry
    (getindata/kedro-sagemaker#28); the project's generator finds it."""
    arguments = {
        "pipeline_name": "__default__",
        "kedro_context": None,
        "config": SimpleNamespace(
            aws=SimpleNamespace(resources=RESOURCES), docker=None
        ),
        "docker_image": "image",
    }
    node = SimpleNamespace(name="train_tsa_model", tags={"gpu"})
    plugin_choice = KedroSageMakerGenerator(**arguments)._get_resources_for_node(node)
    assert plugin_choice.instance_type == "ml.m5.xlarge"
    project_choice = ProjectSageMakerGenerator(**arguments)._get_resources_for_node(
        node
    )
    assert project_choice.instance_type == "ml.g5.48xlarge"
    assert project_choice.volume_size_gb == 1000
