"""Registering a model package in the SageMaker Model Registry through boto3.

The package must already be on S3 (the catalog of the ``sagemaker`` environment puts
``model_package`` there). Registration creates the model package group if it is
missing, uploads the metrics as a JSON statistics file beside the package, and creates
a versioned model package (PendingManualApproval by default) whose inference
specification points at the package and the serving image. Endpoints and credentials
come from the usual AWS settings (``AWS_ENDPOINT_URL`` points boto3 at a test server).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlparse

import boto3
from botocore.exceptions import ClientError

logger = logging.getLogger(__name__)

# Limits of CreateModelPackage's CustomerMetadataProperties.
_MAX_PROPERTIES = 50
_MAX_KEY = 128
_MAX_VALUE = 256


class SageMakerRegistryError(RuntimeError):
    """The SageMaker registration cannot proceed (missing package, bad settings)."""


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` to ``(bucket, key)``.

    Raises:
        SageMakerRegistryError: ``uri`` is not an ``s3://`` URI with a key.
    """
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc or not parsed.path.strip("/"):
        raise SageMakerRegistryError(
            f"register_sagemaker.model_data_uri must be an s3://bucket/key URI of "
            f"model.tar.gz, got {uri!r}"
        )
    return parsed.netloc, parsed.path.lstrip("/")


def customer_metadata(properties: Mapping[str, Any]) -> dict[str, str]:
    """Properties trimmed to SageMaker's limits (50 keys, 128/256 characters)."""
    trimmed: dict[str, str] = {}
    for key, value in list(properties.items())[:_MAX_PROPERTIES]:
        trimmed[str(key)[:_MAX_KEY]] = str(value)[:_MAX_VALUE]
    return trimmed


def ensure_model_package_group(client: Any, name: str, description: str) -> str:
    """The ARN of model package group ``name``, created if it does not exist."""
    try:
        return client.describe_model_package_group(ModelPackageGroupName=name)[
            "ModelPackageGroupArn"
        ]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in (
            "ValidationException",
            "ResourceNotFound",
        ):
            raise
    logger.info("Creating SageMaker model package group %s", name)
    return client.create_model_package_group(
        ModelPackageGroupName=name, ModelPackageGroupDescription=description
    )["ModelPackageGroupArn"]


def register_package(
    *,
    model_data_uri: str,
    package_size: int,
    group_name: str,
    group_description: str,
    image_uri: str,
    content_types: Sequence[str],
    response_types: Sequence[str],
    realtime_instance_types: Sequence[str],
    transform_instance_types: Sequence[str],
    approval_status: str,
    description: str,
    metrics_document: Mapping[str, Any],
    properties: Mapping[str, Any],
    region_name: str | None = None,
) -> dict[str, Any]:
    """Create a new model package version for ``model_data_uri``.

    Args:
        model_data_uri: ``s3://`` URI of model.tar.gz; must exist with
            ``package_size`` bytes.
        package_size: Size in bytes of the package the pipeline built.
        group_name: Model package group (created if missing).
        group_description: Its description when created.
        image_uri: Serving image (SageMaker PyTorch inference container).
        content_types: Request MIME types the handler accepts.
        response_types: Response MIME types it returns.
        realtime_instance_types: Instance types allowed for endpoints.
        transform_instance_types: Instance types allowed for batch transform.
        approval_status: Initial approval status (``PendingManualApproval``).
        description: Model package description.
        metrics_document: Written as ``model_metrics.json`` beside the package and
            attached as the package's model-quality statistics.
        properties: Customer metadata (metrics, git commit, data windows, ...).
        region_name: AWS region; None uses the environment's.

    Returns:
        ``{"model_package_arn", "model_package_group_arn", "version",
        "model_data_uri", "metrics_uri", "approval_status"}``.

    Raises:
        SageMakerRegistryError: The package is not at ``model_data_uri`` or differs
            in size, or the image URI is empty.
    """
    if not image_uri or image_uri == "unset":
        raise SageMakerRegistryError(
            f"register_sagemaker.image_uri is not set (got {image_uri!r}); set "
            "TSA_INFERENCE_IMAGE_URI to the SageMaker PyTorch inference image"
        )
    bucket, key = split_s3_uri(model_data_uri)
    s3 = boto3.client("s3", region_name=region_name)
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        raise SageMakerRegistryError(
            f"model package not found at {model_data_uri} "
            f"(register_sagemaker.model_data_uri): {exc}"
        ) from exc
    if head["ContentLength"] != package_size:
        raise SageMakerRegistryError(
            f"{model_data_uri} holds {head['ContentLength']} bytes but the pipeline's "
            f"model_package has {package_size}: the URI points at another package"
        )
    metrics_key = (
        key.rsplit("/", 1)[0] + "/model_metrics.json"
        if "/" in key
        else ("model_metrics.json")
    )
    s3.put_object(
        Bucket=bucket,
        Key=metrics_key,
        Body=json.dumps(metrics_document, indent=2, sort_keys=True).encode(),
        ContentType="application/json",
    )
    metrics_uri = f"s3://{bucket}/{metrics_key}"

    client = boto3.client("sagemaker", region_name=region_name)
    group_arn = ensure_model_package_group(client, group_name, group_description)
    response = client.create_model_package(
        ModelPackageGroupName=group_name,
        ModelPackageDescription=description,
        InferenceSpecification={
            "Containers": [{"Image": image_uri, "ModelDataUrl": model_data_uri}],
            "SupportedContentTypes": list(content_types),
            "SupportedResponseMIMETypes": list(response_types),
            "SupportedRealtimeInferenceInstanceTypes": list(realtime_instance_types),
            "SupportedTransformInstanceTypes": list(transform_instance_types),
        },
        ModelApprovalStatus=approval_status,
        ModelMetrics={
            "ModelQuality": {
                "Statistics": {"ContentType": "application/json", "S3Uri": metrics_uri}
            }
        },
        CustomerMetadataProperties=customer_metadata(properties),
    )
    arn = response["ModelPackageArn"]
    described = client.describe_model_package(ModelPackageName=arn)
    logger.info(
        "Registered SageMaker model package %s (version %s, %s)",
        arn,
        described.get("ModelPackageVersion"),
        described.get("ModelApprovalStatus"),
    )
    return {
        "model_package_arn": arn,
        "model_package_group_arn": group_arn,
        "version": str(described.get("ModelPackageVersion")),
        "model_data_uri": model_data_uri,
        "metrics_uri": metrics_uri,
        "approval_status": described.get("ModelApprovalStatus"),
    }
