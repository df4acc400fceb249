"""Nodes of the package pipeline."""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

import tsa_kedro
from tsa_kedro.features.tensors import TensorParams
from tsa_kedro.models.tsa import TwoSeqMoEOrderFeatureAttentionClassifier
from tsa_kedro.schema import RawSchema
from tsa_kedro.serving import layout
from tsa_kedro.serving.archive import MANIFEST_NAME, build_manifest, tar_gz_bytes
from tsa_kedro.serving.bundle import (
    COMPILED_FORMATS,
    PackageError,
    artefact_files,
    code_files,
    export_onnx,
    git_commit,
    json_bytes,
)
from tsa_kedro.serving.handler import TSAPredictor
from tsa_kedro.serving.payload import JSON, parse_request

logger = logging.getLogger(__name__)

Chunk = pd.DataFrame | Callable[[], pd.DataFrame]


def _is_fraud(frame: pd.DataFrame, label: str) -> np.ndarray:
    """Rows tagged 1 (unlabelled rows count as not fraud)."""
    return frame[label].eq(1).fillna(False).to_numpy(dtype=bool)


def select_sample_payload(
    cali_raw_chunks: Mapping[str, Chunk],
    score_file: pd.DataFrame,
    raw_schema: dict[str, Any],
    package: dict[str, Any],
) -> list[dict[str, Any]]:
    """A few raw calibration orders that the pipeline scored, as a request payload.

    Orders come from the calibration split's raw chunks (in chunk order) and must
    appear in ``score_file``, so their pipeline scores are known. One fraud order is
    included when the chunks read hold one. The label column is left out: requests
    carry none.

    Args:
        cali_raw_chunks: ``cali.raw_chunks`` partitions.
        score_file: The calibration scores (``order_id``, ``score``).
        raw_schema: The ``raw_schema`` parameters.
        package: ``package`` parameters (``sample_size``).

    Returns:
        The payload: a list of order records (JSON-safe; missing values as null).

    Raises:
        ValueError: ``sample_size`` is not a positive integer, or no scored order is
            found in the chunks.
    """
    schema = RawSchema.from_params(raw_schema)
    size = package.get("sample_size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"package.sample_size must be an integer >= 1, got {size!r}")
    scored = set(score_file["order_id"].astype(str))
    picked: list[pd.DataFrame] = []
    n_picked, has_fraud = 0, False
    for chunk_id in sorted(cali_raw_chunks):
        chunk = cali_raw_chunks[chunk_id]
        frame = chunk() if callable(chunk) else chunk
        frame = frame[frame[schema.order_id].astype(str).isin(scored)]
        picked.append(frame)
        n_picked += len(frame)
        has_fraud = has_fraud or bool(_is_fraud(frame, schema.label).any())
        if n_picked >= size and has_fraud:
            break
    candidates = pd.concat(picked, ignore_index=True) if picked else pd.DataFrame()
    if candidates.empty:
        raise ValueError("cali.raw_chunks holds no order that score_file scored")
    fraud = candidates.index[_is_fraud(candidates, schema.label)][:1]
    others = candidates.index.difference(fraud)[: size - len(fraud)]
    sample = candidates.loc[sorted([*fraud, *others])].drop(columns=[schema.label])
    logger.info("sample payload: %d orders (%d fraud)", len(sample), len(fraud))
    return json.loads(sample.to_json(orient="records"))


def _weights_bytes(model_weights: Any) -> bytes:
    if isinstance(model_weights, bytes | bytearray):
        return bytes(model_weights)
    return save_safetensors(dict(model_weights))


def compile_model(
    weights: bytes, model_config: dict[str, Any], compiled_format: str
) -> bytes | None:
    """The trained model exported for serving: ``model.onnx`` bytes, or None.

    Args:
        weights: The safetensors weights.
        model_config: The model configuration.
        compiled_format: ``onnx`` (export; a failure stops packaging) or ``none``.

    Raises:
        ValueError: An unknown ``compiled_format``.
        PackageError: The export fails.
    """
    if compiled_format not in COMPILED_FORMATS:
        raise ValueError(
            f"package.compiled_model must be one of {COMPILED_FORMATS}, got "
            f"{compiled_format!r}"
        )
    if compiled_format == "none":
        logger.info("no compiled model: the bundle serves the eager model")
        return None
    model = TwoSeqMoEOrderFeatureAttentionClassifier.from_config(model_config)
    model.load_state_dict(load_safetensors(weights))
    content = export_onnx(model, model.config)
    logger.info(
        "compiled model: %s, %.1f kB", layout.COMPILED_MODEL, len(content) / 1024
    )
    return content


def build_model_package(  # noqa: PLR0917 - Kedro passes node inputs by position
    model_weights: Any,
    model_config: dict[str, Any],
    percentile_map: list[list[float]],
    bspline_parameters: dict[str, Any],
    cat_to_index: dict[str, Any],
    scaling: dict[str, Any],
    default_values: dict[str, Any],
    reference_profile: dict[str, Any],
    sample_payload: list[dict[str, Any]],
    raw_schema: dict[str, Any],
    preprocess: dict[str, Any],
    data_windows: dict[str, Any],
    package: dict[str, Any],
    training_run: dict[str, Any] | None = None,
) -> tuple[bytes, list[dict[str, Any]]]:
    """Build ``model.tar.gz`` and score its sample payload with the bundled handler.

    The bundle holds the weights (safetensors), the compiled model (``model.onnx``,
    unless ``package.compiled_model`` is ``none``), model config, percentile map, B-spline
    parameters, fitted transforms, raw schema, tensor parameters, serving settings, the
    reference profile for drift monitoring, the sample payload and its output,
    ``code/`` (``inference.py``, the handler's ``tsa_kedro`` modules,
    ``requirements.txt``) and ``manifest.json``.

    Args:
        model_weights: The state dict (or its safetensors bytes).
        model_config: The model configuration.
        percentile_map: ``[score, percentile]`` pairs.
        bspline_parameters: The calibration's exported parameters.
        cat_to_index: Fitted vocabulary.
        scaling: Fitted min-max parameters.
        default_values: Fitted defaults.
        reference_profile: The training data's profile for drift monitoring
            (``tsa_kedro.monitoring.drift``).
        sample_payload: Raw orders to score as the bundle's example.
        raw_schema: The ``raw_schema`` parameters.
        preprocess: The ``preprocess`` parameters (``seq_len``, ``delta_cap_seconds``).
        data_windows: The ``ingest.windows`` parameters, recorded in the manifest.
        package: ``package`` parameters (``max_batch_size``, ``score_batch_size``,
            ``device``, ``cuda_graph_max_batch``, ``compiled_model``, ``runtime_requirements``).
        training_run: The train stage's ``training_run`` record; its
            ``training_run_id`` goes into the manifest. Never the packaging run's own
            id: when this stage runs alone, that run trained nothing.

    Returns:
        The bundle's bytes and the sample output.
    """
    serving_config = {
        "max_batch_size": int(package["max_batch_size"]),
        "score_batch_size": int(package["score_batch_size"]),
        "device": package.get("device", "auto"),
        "cuda_graph_max_batch": int(package.get("cuda_graph_max_batch", 32)),
    }
    tensor_params = dataclasses.asdict(TensorParams.from_params(preprocess))
    weights = _weights_bytes(model_weights)
    files = artefact_files(
        weights=weights,
        compiled_model=compile_model(
            weights, model_config, package.get("compiled_model", "onnx")
        ),
        model_config=model_config,
        percentile_map=percentile_map,
        bspline_parameters=bspline_parameters,
        cat_to_index=cat_to_index,
        scaling=scaling,
        default_values=default_values,
        raw_schema=raw_schema,
        preprocess_params=tensor_params,
        serving_config=serving_config,
        reference_profile=reference_profile,
    )
    with tempfile.TemporaryDirectory() as staging:
        for name, content in files.items():
            path = Path(staging) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        predictor = TSAPredictor.from_model_dir(staging, device="cpu", verify=False)
        if layout.COMPILED_MODEL in files and predictor.compiled is None:
            raise PackageError(
                f"the exported {layout.COMPILED_MODEL} does not load or does not "
                "score like the eager model (see the log)"
            )
        request = parse_request(
            json.dumps(sample_payload), JSON, predictor.max_batch_size
        )
        sample_output = predictor.predict(request)
    files[layout.SAMPLE_PAYLOAD] = json_bytes(sample_payload)
    files[layout.SAMPLE_OUTPUT] = json_bytes(sample_output)
    files.update(code_files(package["runtime_requirements"]))
    manifest = build_manifest(
        files,
        {
            "package_version": tsa_kedro.__version__,
            **git_commit(),
            "training_run_id": (training_run or {}).get("training_run_id"),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "data_windows": data_windows,
            "entry_point": layout.ENTRY_POINT,
        },
    )
    files[MANIFEST_NAME] = json_bytes(manifest)
    bundle = tar_gz_bytes(files)
    logger.info(
        "model package: %d files, %.1f kB, %d sample orders scored",
        len(files),
        len(bundle) / 1024,
        len(sample_output),
    )
    return bundle, sample_output
