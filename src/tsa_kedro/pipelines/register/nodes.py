"""Nodes of the register pipeline."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from tsa_kedro.registry import mlflow_registry, sagemaker_registry
from tsa_kedro.registry.gate import evaluate_gate
from tsa_kedro.registry.metrics import flatten_numbers
from tsa_kedro.serving.archive import MANIFEST_NAME, read_tar_gz, sha256_bytes

logger = logging.getLogger(__name__)

REGISTRIES = ("mlflow", "sagemaker")


def check_registration_gate(
    train_metrics: dict[str, Any],
    calibration_metrics: dict[str, Any],
    gate_checks: dict[str, Any],
) -> dict[str, Any]:
    """Compare the model's metrics with the gate's thresholds.

    A failing model is a normal outcome: the result says which checks failed and by
    how much, and the register node then skips registration.

    Args:
        train_metrics: The train stage's validation metrics (``tsa``, ``baseline``).
        calibration_metrics: The calibrate stage's metrics.
        gate_checks: ``register_gate`` parameters: check name to metric and bound.

    Returns:
        The gate result (``passed``, ``checks``, ``failed``, ``summary``).

    Raises:
        GateConfigError: A check is malformed or names a missing metric.
    """
    result = evaluate_gate(
        {"train_metrics": train_metrics, "calibration_metrics": calibration_metrics},
        gate_checks,
    )
    for check in result["checks"]:
        logger.info("Registration gate: %s", check["description"])
    if result["passed"]:
        logger.info("Registration gate passed (%d checks)", len(result["checks"]))
    else:
        logger.warning("Registration gate FAILED: %s", result["summary"])
    return result


def _manifest(model_package: bytes) -> dict[str, Any]:
    files = read_tar_gz(model_package, name="model_package")
    if MANIFEST_NAME not in files:
        raise ValueError(f"model_package has no {MANIFEST_NAME}; rebuild the package")
    return json.loads(files[MANIFEST_NAME])


def _version_tags(
    manifest: Mapping[str, Any],
    package_sha256: str,
    metrics: Mapping[str, float],
    gate: Mapping[str, Any],
) -> dict[str, Any]:
    tags: dict[str, Any] = {
        "package_sha256": package_sha256,
        "package_version": manifest.get("package_version"),
        "git_commit": manifest.get("git_commit"),
        "training_run_id": manifest.get("training_run_id"),
        "gate": gate["summary"],
    }
    for split, window in (manifest.get("data_windows") or {}).items():
        tags[f"data_window.{split}"] = json.dumps(window, sort_keys=True)
    tags.update({f"metric.{k}": f"{v:.6g}" for k, v in metrics.items()})
    return {k: v for k, v in tags.items() if v is not None}


def register_model(  # noqa: PLR0917 - Kedro passes node inputs by position
    model_package: bytes,
    registration_gate: dict[str, Any],
    train_metrics: dict[str, Any],
    calibration_metrics: dict[str, Any],
    register: dict[str, Any],
    register_mlflow: dict[str, Any],
    register_sagemaker: dict[str, Any],
) -> dict[str, Any]:
    """Register ``model_package`` if the gate passed; say what happened either way.

    Args:
        model_package: Bytes of model.tar.gz.
        registration_gate: The gate result.
        train_metrics: Validation metrics, attached to the registered version.
        calibration_metrics: Calibration metrics, attached likewise.
        register: ``registry`` (``mlflow`` or ``sagemaker``), ``model_name``,
            ``description``.
        register_mlflow: MLflow store settings (tracking URI, experiment, ...).
        register_sagemaker: SageMaker registry settings (group, image, S3 URI, ...).

    Returns:
        The registration decision: ``registered``, ``reason``, the registry's answer.

    Raises:
        ValueError: ``register.registry`` is not ``mlflow`` or ``sagemaker``.
    """
    registry = register.get("registry")
    if registry not in REGISTRIES:
        raise ValueError(
            f"parameter register.registry must be one of {list(REGISTRIES)}, "
            f"got {registry!r}"
        )
    manifest = _manifest(model_package)
    package_sha256 = sha256_bytes(model_package)
    decision: dict[str, Any] = {
        "registry": registry,
        "model_name": register["model_name"],
        "package_sha256": package_sha256,
        "git_commit": manifest.get("git_commit"),
        "training_run_id": manifest.get("training_run_id"),
        "gate": registration_gate,
        "decided_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if not registration_gate["passed"]:
        decision.update(
            registered=False,
            reason=f"registration gate failed: {registration_gate['summary']}",
        )
        logger.warning("Model NOT registered: %s", decision["reason"])
        return decision

    metrics = {
        **flatten_numbers(train_metrics, "train."),
        **flatten_numbers(calibration_metrics, "calibration."),
    }
    tags = _version_tags(manifest, package_sha256, metrics, registration_gate)
    if registry == "mlflow":
        answer = mlflow_registry.register_package(
            model_package,
            model_name=register["model_name"],
            tracking_uri=register_mlflow["tracking_uri"],
            experiment_name=register_mlflow["experiment_name"],
            artifact_location=register_mlflow.get("artifact_location"),
            tags=tags,
            metrics=metrics,
            extra_files={
                MANIFEST_NAME: json.dumps(manifest, indent=2).encode(),
                "registration_gate.json": json.dumps(
                    registration_gate, indent=2
                ).encode(),
            },
            description=register.get("description", ""),
            alias=register_mlflow.get("alias"),
        )
    else:
        answer = sagemaker_registry.register_package(
            model_data_uri=register_sagemaker["model_data_uri"],
            package_size=len(model_package),
            group_name=register_sagemaker.get("model_package_group")
            or register["model_name"],
            group_description=register.get("description", ""),
            image_uri=register_sagemaker["image_uri"],
            content_types=register_sagemaker["content_types"],
            response_types=register_sagemaker["response_types"],
            realtime_instance_types=register_sagemaker["realtime_instance_types"],
            transform_instance_types=register_sagemaker["transform_instance_types"],
            approval_status=register_sagemaker.get(
                "approval_status", "PendingManualApproval"
            ),
            description=register.get("description", ""),
            metrics_document={
                "train_metrics": train_metrics,
                "calibration_metrics": calibration_metrics,
                "registration_gate": registration_gate,
                "manifest": {k: v for k, v in manifest.items() if k != "files"},
            },
            properties=tags,
            region_name=register_sagemaker.get("region"),
        )
    decision.update(registered=True, reason="registration gate passed", **answer)
    logger.info("Model registered in %s: %s", registry, answer)
    return decision
