"""Small hand-built inputs for the register stage's tests."""

from __future__ import annotations

import json

from tsa_kedro.serving.archive import MANIFEST_NAME, build_manifest, tar_gz_bytes

TRAIN_METRICS = {
    "tsa": {
        "roc_auc": 0.93,
        "pr_auc": 0.61,
        "operating_points": {"top_1%": {"recall": 0.4, "threshold": 0.9}},
    },
    "baseline": {"roc_auc": 0.88, "pr_auc": 0.52},
}
CALIBRATION_METRICS = {
    "methods": {
        "raw": {"log_loss": 0.12},
        "bspline": {"log_loss": 0.07, "brier": 0.02},
    },
    "fit": {"status": "converged"},
}
GATE_CHECKS = {
    "validation_pr_auc": {"metric": "train_metrics.tsa.pr_auc", "min": 0.3},
    "tsa_vs_baseline": {
        "metric": "train_metrics.tsa.pr_auc",
        "min": "train_metrics.baseline.pr_auc",
        "margin": 0.05,
    },
    "calibrated_log_loss": {
        "metric": "calibration_metrics.methods.bspline.log_loss",
        "max": 0.1,
    },
}


def tiny_package(seed: int = 0) -> bytes:
    """A small model.tar.gz with a manifest, as the package stage writes one."""
    files = {
        "model_config.json": json.dumps({"seed": seed}).encode(),
        "code/inference.py": b"def model_fn(model_dir):\n    return None\n",
    }
    manifest = build_manifest(
        files,
        {
            "package_version": "0.1.0",
            "git_commit": "abc123",
            "training_run_id": "run-42",
            "created_at": "2026-01-01T00:00:00+00:00",
            "data_windows": {"train": {"start": "2024-01-01", "end": "2024-03-01"}},
        },
    )
    return tar_gz_bytes({**files, MANIFEST_NAME: json.dumps(manifest).encode()})
