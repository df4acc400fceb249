"""Registration in the SageMaker Model Registry, against moto's server on 127.0.0.1."""

from __future__ import annotations

import json

import boto3
import pytest

from tsa_kedro.pipelines.register.nodes import check_registration_gate, register_model
from tsa_kedro.registry.sagemaker_registry import SageMakerRegistryError

from .helpers import CALIBRATION_METRICS, GATE_CHECKS, TRAIN_METRICS, tiny_package

REGISTER = {"registry": "sagemaker", "model_name": "tsa-fraud", "description": "TSA"}
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.6.0-cpu-py312"


def _params(bucket: str, group: str) -> dict:
    return {
        "model_package_group": group,
        "model_data_uri": f"s3://{bucket}/runs/06_models/model.tar.gz",
        "image_uri": IMAGE,
        "approval_status": "PendingManualApproval",
        "region": None,
        "content_types": ["application/json", "text/csv"],
        "response_types": ["application/json"],
        "realtime_instance_types": ["ml.m5.xlarge"],
        "transform_instance_types": ["ml.m5.xlarge"],
    }


def _register(package: bytes, params: dict) -> dict:
    gate = check_registration_gate(TRAIN_METRICS, CALIBRATION_METRICS, GATE_CHECKS)
    return register_model(
        package, gate, TRAIN_METRICS, CALIBRATION_METRICS, REGISTER, {}, params
    )


def test_registers_versions_pending_approval_with_metrics(
    s3_bucket: str, aws_env: dict, request: pytest.FixtureRequest
) -> None:
    group = "tsa-" + str(abs(hash(request.node.nodeid)) % 10**8)
    params = _params(s3_bucket, group)
    s3 = boto3.client("s3")
    package = tiny_package(0)
    s3.put_object(Bucket=s3_bucket, Key="runs/06_models/model.tar.gz", Body=package)

    first = _register(package, params)
    second = _register(package, params)
    assert first["registered"] and second["registered"]
    assert (first["version"], second["version"]) == ("1", "2")

    sm = boto3.client("sagemaker")
    assert (
        sm.describe_model_package_group(ModelPackageGroupName=group)[
            "ModelPackageGroupArn"
        ]
        == first["model_package_group_arn"]
    )
    described = sm.describe_model_package(ModelPackageName=second["model_package_arn"])
    assert described["ModelApprovalStatus"] == "PendingManualApproval"
    container = described["InferenceSpecification"]["Containers"][0]
    assert container == {"Image": IMAGE, "ModelDataUrl": params["model_data_uri"]}
    assert described["CustomerMetadataProperties"]["git_commit"] == "abc123"
    assert described["CustomerMetadataProperties"]["metric.train.tsa.pr_auc"] == "0.61"
    stats = described["ModelMetrics"]["ModelQuality"]["Statistics"]
    bucket, key = stats["S3Uri"].removeprefix("s3://").split("/", 1)
    document = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert document["train_metrics"]["tsa"]["roc_auc"] == 0.93
    assert document["registration_gate"]["passed"] is True
    listed = sm.list_model_packages(ModelPackageGroupName=group)
    assert len(listed["ModelPackageSummaryList"]) == 2


def test_missing_package_on_s3_is_a_clear_error(s3_bucket: str, aws_env: dict) -> None:
    with pytest.raises(
        SageMakerRegistryError, match="model package not found at s3://"
    ):
        _register(tiny_package(), _params(s3_bucket, "tsa-missing"))


def test_package_of_another_size_is_refused(s3_bucket: str, aws_env: dict) -> None:
    boto3.client("s3").put_object(
        Bucket=s3_bucket, Key="runs/06_models/model.tar.gz", Body=b"stale"
    )
    with pytest.raises(SageMakerRegistryError, match="another package"):
        _register(tiny_package(), _params(s3_bucket, "tsa-stale"))


def test_unset_image_and_non_s3_uri_are_refused(s3_bucket: str, aws_env: dict) -> None:
    params = {**_params(s3_bucket, "g"), "image_uri": "unset"}
    with pytest.raises(SageMakerRegistryError, match="TSA_INFERENCE_IMAGE_URI"):
        _register(tiny_package(), params)
    params = {
        **_params(s3_bucket, "g"),
        "model_data_uri": "data/06_models/model.tar.gz",
    }
    with pytest.raises(SageMakerRegistryError, match="s3://bucket/key"):
        _register(tiny_package(), params)
