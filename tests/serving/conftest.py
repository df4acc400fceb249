"""A tiny but real model bundle, built from synthetic orders with the project's code.

Orders come from the synthetic generator; transforms are fitted on the first part,
the rest plays the calibration split. The model is a small TSA classifier with seeded
random weights: packaging and serving must reproduce its scores whatever it learned.
The "pipeline's own scores" are those of the train stage's ``score_calibration_set``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from tests.model_params import model_params
from tsa_kedro.features.raw_orders import normalize_raw_orders
from tsa_kedro.features.tensors import TensorParams, build_tensors, prepare_transforms
from tsa_kedro.features.transforms import fit_transforms
from tsa_kedro.pipelines.package.nodes import build_model_package, select_sample_payload
from tsa_kedro.pipelines.train.nodes import (
    build_model,
    build_percentile_map,
    build_reference_profile,
    make_model_config,
    score_calibration_set,
)
from tsa_kedro.schema import RawSchema
from tsa_kedro.serving.archive import safe_extract
from tsa_kedro.synthetic import SyntheticConfig, generate_orders

PROJECT = Path(__file__).resolve().parents[2]
PREPROCESS = {"seq_len": 8, "delta_cap_seconds": 1.0e7}
PACKAGE = {
    "sample_size": 4,
    "max_batch_size": 500,
    "score_batch_size": 64,
    "device": "auto",
    "compiled_model": "onnx",
    "runtime_requirements": [
        "torch",
        "numpy",
        "pandas",
        "pyarrow",
        "scipy",
        "safetensors",
        "onnxruntime",
    ],
}
WINDOWS = {"train": {"start": "2024-01-01", "end": "2024-01-31"}}
# A monotone calibration curve in the exported format (format_version 1, logit link).
BSPLINE = {
    "format_version": 1,
    "link": "logit",
    "degree": 3,
    "knots": [0.0, 0.0, 0.0, 0.0, 0.2, 0.5, 1.0, 1.0, 1.0, 1.0],
    "coefficients": [-5.0, -4.0, -2.5, -1.0, 0.5, 2.0],
    "domain": [0.0, 1.0],
    "status": "converged",
}


@dataclass
class TinyModel:
    """Everything the package node needs, plus the pipeline's calibration scores."""

    schema_params: dict[str, Any]
    raw_cali: pd.DataFrame  # as exported: every column text
    cali_chunks: dict[str, pd.DataFrame]  # normalised, like cali.raw_chunks
    cat_to_index: dict
    scaling: dict
    default_values: dict
    weights: dict[str, torch.Tensor]
    model_config: dict
    score_file: pd.DataFrame
    percentile_map: list
    reference_profile: dict
    raw_train: pd.DataFrame  # as exported: every column text

    def package(
        self,
        sample_payload: list[dict[str, Any]] | None = None,
        **package_params: Any,
    ) -> tuple:
        payload = sample_payload or select_sample_payload(
            self.cali_chunks, self.score_file, self.schema_params, PACKAGE
        )
        bundle, output = build_model_package(
            self.weights,
            self.model_config,
            self.percentile_map,
            BSPLINE,
            self.cat_to_index,
            self.scaling,
            self.default_values,
            self.reference_profile,
            payload,
            self.schema_params,
            PREPROCESS,
            WINDOWS,
            {**PACKAGE, **package_params},
        )
        return bundle, payload, output


@pytest.fixture(scope="session")
def tiny_model() -> TinyModel:
    params = yaml.safe_load((PROJECT / "conf/base/parameters.yml").read_text())
    schema_params = params["raw_schema"]
    schema = RawSchema.from_params(schema_params)
    config = SyntheticConfig.from_params(
        {
            "seed": 3,
            "start_date": "2024-01-01",
            "end_date": "2024-02-15",
            "n_customers": 120,
            "orders_per_customer_per_day": 0.2,
            "history_length": 12,
            "fraud_rate": 0.05,
            "output_format": "text",
        }
    )
    raw = generate_orders(config, schema).orders
    split = int(len(raw) * 0.7)
    train_raw, cali_raw = raw.iloc[:split], raw.iloc[split:].reset_index(drop=True)
    train = normalize_raw_orders(train_raw, schema, "train", ragged_tolerance=0.05)
    cali = normalize_raw_orders(cali_raw, schema, "cali", ragged_tolerance=0.05)
    cat_to_index, scaling, default_values = fit_transforms(
        [train], schema, {"min_frequency": 1}
    )
    prepared = prepare_transforms(cat_to_index, scaling, default_values, schema)
    tensor_params = TensorParams.from_params(PREPROCESS)
    train_bundle, _ = build_tensors(train, schema, prepared, tensor_params)
    cali_bundle, _ = build_tensors(cali, schema, prepared, tensor_params)
    model_config = make_model_config(
        train_bundle,
        cat_to_index,
        model_params("small", n_layers_order=1, n_layers_feature=1),
    ).to_dict()
    torch.manual_seed(0)
    weights = build_model(model_config).state_dict()
    score_file, _ = score_calibration_set(
        weights, model_config, cali_bundle, {"score_batch_size": 128}
    )
    assert np.ptp(score_file["score"].to_numpy()) > 1e-4, "scores must vary"
    half = len(cali) // 2
    return TinyModel(
        schema_params=schema_params,
        raw_cali=cali_raw,
        cali_chunks={"part-00000": cali.iloc[:half], "part-00001": cali.iloc[half:]},
        cat_to_index=cat_to_index,
        scaling=scaling,
        default_values=default_values,
        weights=weights,
        model_config=model_config,
        score_file=score_file,
        percentile_map=build_percentile_map(score_file),
        reference_profile=build_reference_profile(
            {"part-00000": train}, score_file, schema_params
        ),
        raw_train=train_raw,
    )


@pytest.fixture(scope="session")
def tiny_package(tiny_model: TinyModel) -> tuple[bytes, list, list]:
    """``(model.tar.gz bytes, sample payload, sample output)``."""
    return tiny_model.package()


@pytest.fixture(scope="module")
def model_dir(tiny_package, tmp_path_factory) -> Path:
    """The tiny bundle unpacked, once per test module."""
    folder = tmp_path_factory.mktemp("bundle")
    archive = folder / "model.tar.gz"
    archive.write_bytes(tiny_package[0])
    safe_extract(archive, folder / "model")
    return folder / "model"
