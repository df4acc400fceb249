"""The inference handler of ``model.tar.gz`` for the SageMaker PyTorch serving container.

``code/inference.py`` in the bundle re-exports ``model_fn``, ``input_fn``,
``predict_fn`` and ``output_fn`` from here. Raw orders go through exactly the code
that training preprocessing runs: ``normalize_raw_orders`` (validation and types) and
``build_tensors`` (history parsing, encoding, scaling, padding), with the fitted
transforms shipped in the bundle. On CPU the model scores through the bundle's
compiled artefact (``model.onnx`` run by ONNX Runtime, ``compiled.py``) when it loads
and agrees with the eager model on a probe batch; otherwise, and on the GPU (used when
one is visible; ``TSA_DEVICE`` overrides), the eager model scores, in float32, in eval
mode.

Per order the answer holds ``order_id``, ``score`` (the model's class-1 probability),
``percentile`` (from the bundle's percentile map: the percentile of the largest map
score not above the order's score, 0 below the smallest) and
``calibrated_probability`` (the B-spline calibration). An order that preprocessing
rejects (ragged history lists, a history order later than the order itself, a history
order without a time) gets ``error`` instead of the three numbers.

Reason codes (docs/source/explain.md): when the parsed request asks for them
(``payload.EXPLAIN_ATTR``), every scored order also gets ``reasons``: the top
features and past cid and ccid orders by integrated-gradient attribution of the
eager model (``tsa_kedro.models.explain``; Captum is imported only then).

Rejected requests (``PayloadError`` or ``RawDataError`` with the reason): see
``tsa_kedro.serving.payload``; also repeated order ids and missing contract columns.
This module imports neither Kedro nor R.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file

from tsa_kedro.calibration.evaluator import BSplineCalibrator
from tsa_kedro.features.raw_orders import normalize_raw_orders
from tsa_kedro.features.tensors import (
    PreparedTransforms,
    TensorParams,
    build_tensors,
    prepare_transforms,
)
from tsa_kedro.models.explain import DEFAULT_STEPS, Explainer, feature_names
from tsa_kedro.models.predict import choose_device, score_bundle
from tsa_kedro.models.tsa import TwoSeqMoEOrderFeatureAttentionClassifier
from tsa_kedro.schema import RawSchema
from tsa_kedro.serving import layout
from tsa_kedro.serving.archive import verify_manifest
from tsa_kedro.serving.compiled import CompiledModel, load_checked
from tsa_kedro.serving.cuda_graph import CudaGraphModel
from tsa_kedro.serving.payload import (
    EXPLAIN_ATTR,
    PayloadError,
    format_response,
    parse_request,
    reason_strings,
)

logger = logging.getLogger(__name__)

DEFAULT_MAX_BATCH_SIZE = 1000
DEFAULT_SCORE_BATCH_SIZE = 256
# Requests of up to this many orders replay CUDA graphs on a GPU (serving/cuda_graph.py)
DEFAULT_CUDA_GRAPH_MAX_BATCH = 32
# Integration points of a reason-code explanation (models/explain.py).
EXPLAIN_STEPS = DEFAULT_STEPS
# input_fn has no access to the model; model_fn records the bundle's limit here.
_REQUEST_LIMITS = {"max_batch_size": DEFAULT_MAX_BATCH_SIZE}


def _read_json(model_dir: Path, name: str) -> Any:
    path = model_dir / name
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise FileNotFoundError(
            f"model bundle file {path} cannot be read: {exc}"
        ) from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"model bundle file {path} is not valid JSON: {exc}") from exc


def percentile_lookup(
    percentile_map: list[list[float]],
) -> Callable[[np.ndarray], np.ndarray]:
    """A function from scores to percentiles for a list of ``[score, percentile]``.

    Raises:
        ValueError: The map is empty or its scores or percentiles decrease.
    """
    table = np.asarray(percentile_map, dtype=np.float64)
    if table.ndim != 2 or table.shape[1] != 2 or len(table) == 0:
        raise ValueError(
            "percentile_map must be a non-empty list of [score, percentile]"
        )
    scores, percentiles = table[:, 0], table[:, 1]
    if np.any(np.diff(scores) < 0) or np.any(np.diff(percentiles) < 0):
        raise ValueError("percentile_map scores and percentiles must be non-decreasing")

    def lookup(values: np.ndarray) -> np.ndarray:
        index = np.searchsorted(scores, np.asarray(values, dtype=np.float64), "right")
        return np.where(index > 0, percentiles[np.maximum(index - 1, 0)], 0.0)

    return lookup


class TSAPredictor:
    """A loaded bundle: model, fitted transforms, percentile map and calibration.

    ``compiled``, when given, scores instead of ``model`` (CPU only). On a CUDA
    device the model answers through ``CudaGraphModel`` (graphs replayed for batches
    up to ``cuda_graph_max_batch`` orders; 0 turns graphs off).
    """

    def __init__(
        self,
        *,
        model: torch.nn.Module,
        compiled: CompiledModel | None = None,
        schema: RawSchema,
        transforms: PreparedTransforms,
        tensor_params: TensorParams,
        percentile: Callable[[np.ndarray], np.ndarray],
        calibrator: BSplineCalibrator,
        device: torch.device,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        score_batch_size: int = DEFAULT_SCORE_BATCH_SIZE,
        cuda_graph_max_batch: int = DEFAULT_CUDA_GRAPH_MAX_BATCH,
    ) -> None:
        """Assemble a predictor from loaded parts (``from_model_dir`` reads a bundle)."""
        self.model = model.to(device).eval()
        self.compiled: Callable[..., torch.Tensor] | None = None
        if device.type == "cpu":
            self.compiled = compiled
        elif device.type == "cuda" and cuda_graph_max_batch > 0:
            self.compiled = CudaGraphModel(self.model, cuda_graph_max_batch)
        self.schema = schema
        self.transforms = transforms
        self.tensor_params = tensor_params
        self.percentile = percentile
        self.calibrator = calibrator
        self.device = device
        self.max_batch_size = int(max_batch_size)
        self.score_batch_size = int(score_batch_size)
        self.explain_steps = EXPLAIN_STEPS
        self._explainer: Any = None

    def explainer(self) -> Explainer:
        """The ``Explainer`` of the eager model with ``explain_steps`` integration
        points (built on first use and whenever ``explain_steps`` changes)."""
        if self._explainer is None or self._explainer.n_steps != self.explain_steps:
            names = feature_names(
                self.schema.cat_features,
                self.schema.num_features,
                self.schema.eng_features,
                self.model.config.history_match_features,
            )
            self._explainer = Explainer(self.model, names, n_steps=self.explain_steps)
        return self._explainer

    def _reasons(
        self, bundle: Mapping[str, np.ndarray], top_k: int
    ) -> list[dict[str, Any]]:
        """Reason codes of every order of ``bundle``, in bundle order."""
        rows_per_pass = max(1, self.score_batch_size // self.explain_steps)
        return self.explainer().explain_bundle(
            bundle, top_k, rows_per_pass, self.device
        )

    @classmethod
    def from_model_dir(
        cls,
        model_dir: str | os.PathLike,
        device: str | None = None,
        verify: bool = True,
    ) -> TSAPredictor:
        """Load an unpacked bundle (the folder holding ``model_config.json``).

        Args:
            model_dir: The bundle's folder (``/opt/ml/model`` on SageMaker).
            device: ``auto`` (default), ``cpu``, ``cuda``, ``cuda:1``...
            verify: Check every file against ``manifest.json`` first.

        Raises:
            ManifestError: A file differs from the manifest.
            FileNotFoundError, ValueError: A bundle file is missing or malformed.
        """
        model_dir = Path(model_dir)
        if verify:
            verify_manifest(model_dir)
        settings = _read_json(model_dir, layout.SERVING_CONFIG)
        schema = RawSchema.from_params(_read_json(model_dir, layout.RAW_SCHEMA))
        transforms = prepare_transforms(
            _read_json(model_dir, layout.CAT_TO_INDEX),
            _read_json(model_dir, layout.SCALING),
            _read_json(model_dir, layout.DEFAULT_VALUES),
            schema,
        )
        transforms.combined.warm()  # the requests' categorical lookup index
        model = TwoSeqMoEOrderFeatureAttentionClassifier.from_config(
            _read_json(model_dir, layout.MODEL_CONFIG)
        )
        model.load_state_dict(load_file(str(model_dir / layout.WEIGHTS), device="cpu"))
        device = choose_device(device or settings.get("device"))
        compiled = None
        if device.type == "cpu":
            compiled = load_checked(
                model_dir / layout.COMPILED_MODEL, model, model.config
            )
        return cls(
            model=model,
            compiled=compiled,
            schema=schema,
            transforms=transforms,
            tensor_params=TensorParams.from_params(
                _read_json(model_dir, layout.PREPROCESS_PARAMS)
            ),
            percentile=percentile_lookup(_read_json(model_dir, layout.PERCENTILE_MAP)),
            calibrator=BSplineCalibrator(
                _read_json(model_dir, layout.BSPLINE_PARAMETERS)
            ),
            device=device,
            max_batch_size=settings.get("max_batch_size", DEFAULT_MAX_BATCH_SIZE),
            score_batch_size=settings.get("score_batch_size", DEFAULT_SCORE_BATCH_SIZE),
            cuda_graph_max_batch=settings.get(
                "cuda_graph_max_batch", DEFAULT_CUDA_GRAPH_MAX_BATCH
            ),
        )

    def _scores(self, bundle: Mapping[str, np.ndarray]) -> np.ndarray:
        score = self.model if self.compiled is None else self.compiled
        return score_bundle(score, bundle, self.score_batch_size, self.device)

    def _score_orders(
        self,
        raw: pd.DataFrame,
        source: str,
        request: bool,
        explain_top_k: int | None = None,
    ) -> tuple[pd.DataFrame, list[str], pd.DataFrame, dict[str, Any]]:
        """Normalise, build tensors and score ``raw``; the one route of both answers.

        ``request``: a request of a few orders (columns converted and looked up all
        at once, ``build_tensors``' request route) rather than a batch of many
        (column by column, each column's text released once staged, which bounds
        memory). The same tensors either way. ``explain_top_k``: also the reason
        codes, ``top_k`` of each kind (column ``reasons``).

        Returns:
            The normalised orders; their ids in input order; the scored orders
            (``order_id``, ``score``, ``percentile``, ``calibrated_probability``
            [, ``reasons``]) in bundle order (rejected orders absent); the tensor
            statistics.
        """
        raw = raw.reset_index(drop=True)
        if self.schema.label not in raw.columns:
            raw = raw.assign(**{self.schema.label: None})
        # rows with ragged histories are kept here and answered with an error below
        orders = normalize_raw_orders(
            raw, self.schema, source, ragged_tolerance=1.0, columns_together=request
        )
        order_ids = orders[self.schema.order_id].astype(str).tolist()
        if len(set(order_ids)) != len(order_ids):
            repeated = sorted(i for i, n in Counter(order_ids).items() if n > 1)
            raise PayloadError(f"order ids repeat within the {source}: {repeated[:5]}")
        bundle, stats = build_tensors(
            orders,
            self.schema,
            self.transforms,
            self.tensor_params,
            labels=False,
            columns_together=request,
        )
        scores = self._scores(bundle)
        scored = pd.DataFrame(
            {
                "order_id": bundle["order_id"].astype(object),
                "score": scores.astype(np.float64),
                "percentile": self.percentile(scores).astype(np.float64),
                "calibrated_probability": np.asarray(
                    self.calibrator(scores), dtype=np.float64
                ),
            }
        )
        if explain_top_k is not None:
            reasons = self._reasons(bundle, explain_top_k) if len(scored) else []
            scored["reasons"] = pd.Series(reasons, index=scored.index, dtype=object)
        return orders, order_ids, scored, stats

    def _rejection_reason(self, orders: pd.DataFrame, position: int) -> str:
        """The first drop reason of one rejected order (its tensors built alone)."""
        _, stats = build_tensors(
            orders.iloc[[position]],
            self.schema,
            self.transforms,
            self.tensor_params,
            labels=False,
            columns_together=True,
        )
        reasons = [k for k, v in stats["dropped"].items() if v]
        return ", ".join(reasons) or "unknown"

    def predict(self, raw: pd.DataFrame) -> list[dict[str, Any]]:
        """Score raw orders; one answer per order, in request order.

        With ``raw.attrs[EXPLAIN_ATTR]`` (a ``top_k``, set by ``parse_request`` or
        ``payload.apply_query``) every scored order also gets ``reasons``.

        Raises:
            PayloadError: Too many orders, or order ids that repeat.
            RawDataError: Missing contract columns or unparsable values.
        """
        if len(raw) > self.max_batch_size:
            raise PayloadError(
                f"request holds {len(raw)} orders; the maximum batch size is "
                f"{self.max_batch_size}"
            )
        top_k = raw.attrs.get(EXPLAIN_ATTR)
        _, order_ids, scored, stats = self._score_orders(
            raw, "request", request=True, explain_top_k=top_k
        )
        answers = {}
        for row in scored.to_dict(orient="records"):
            answer = {
                "order_id": row["order_id"],
                "score": float(row["score"]),
                "percentile": float(row["percentile"]),
                "calibrated_probability": float(row["calibrated_probability"]),
            }
            if top_k is not None:
                answer["reasons"] = row["reasons"]
            answers[row["order_id"]] = answer
        reasons = sorted(k for k, v in stats["dropped"].items() if v)
        rejected = {
            "error": "order rejected by preprocessing; reasons in this request: "
            + ", ".join(reasons)
        }
        return [answers.get(i, {"order_id": i, **rejected}) for i in order_ids]

    def predict_frame(
        self,
        raw: pd.DataFrame,
        source: str = "batch",
        explain_top_k: int | None = None,
    ) -> pd.DataFrame:
        """Score any number of raw orders (batch scoring); one row per order, in
        input order.

        The same normalisation, tensors, model, percentiles and calibration as
        ``predict``, without the request size limit. An order that preprocessing
        rejects gets null numbers and ``error`` = ``order rejected by preprocessing:
        <reason>`` (its own first reason, e.g. ``ragged_history_cid``); ``error`` is
        null for scored orders.

        Args:
            raw: Raw orders in the raw contract (typed or every column text).
            source: What error messages call ``raw`` (a file name).
            explain_top_k: Also the reason codes, this many of each kind, as the
                texts of ``payload.reason_strings`` (None: no reason codes).

        Returns:
            Columns ``order_id`` (text), ``score``, ``calibrated_probability``,
            ``percentile`` (float64, NaN when rejected) and ``error`` (text or None);
            with ``explain_top_k`` also ``reason_features``, ``reason_cid_orders``
            and ``reason_ccid_orders`` (text; None when rejected).

        Raises:
            PayloadError: Order ids repeat within ``raw``.
            RawDataError: Missing contract columns or unparsable values (naming
                ``source``).
        """
        orders, order_ids, scored, _ = self._score_orders(
            raw, source, request=False, explain_top_k=explain_top_k
        )
        reason_columns = []
        if explain_top_k is not None:
            texts = pd.DataFrame(
                [reason_strings(r) for r in scored.pop("reasons")],
                index=scored.index,
                dtype=object,
            )
            reason_columns = list(texts.columns)
            scored = pd.concat([scored, texts], axis=1)
        frame = pd.DataFrame({"order_id": pd.Series(order_ids, dtype=object)}).merge(
            scored,
            on="order_id",
            how="left",
            sort=False,
            validate="1:1",
            indicator=True,
        )
        rejected = np.flatnonzero((frame.pop("_merge") == "left_only").to_numpy())
        texts = {
            c: frame[c].astype(object).where(frame[c].notna(), None)
            for c in reason_columns
        }
        frame = frame[["order_id", "score", "calibrated_probability", "percentile"]]
        frame["error"] = pd.Series([None] * len(frame), dtype=object)
        for column, values in texts.items():
            frame[column] = values
        for position in rejected:
            frame.loc[position, "error"] = (
                "order rejected by preprocessing: "
                + self._rejection_reason(orders, position)
            )
        return frame


def model_fn(model_dir: str) -> TSAPredictor:
    """SageMaker: load the bundle unpacked in ``model_dir``."""
    predictor = TSAPredictor.from_model_dir(model_dir)
    _REQUEST_LIMITS["max_batch_size"] = predictor.max_batch_size
    logger.info(
        "TSA model loaded from %s on %s (%s)",
        model_dir,
        predictor.device,
        "eager" if predictor.compiled is None else "compiled: ONNX Runtime",
    )
    return predictor


def input_fn(request_body: bytes | str, request_content_type: str) -> pd.DataFrame:
    """SageMaker: parse a JSON, CSV or TSV request into raw orders."""
    return parse_request(
        request_body, request_content_type, _REQUEST_LIMITS["max_batch_size"]
    )


def predict_fn(input_data: pd.DataFrame, model: TSAPredictor) -> list[dict[str, Any]]:
    """SageMaker: score the parsed orders."""
    return model.predict(input_data)


def output_fn(prediction: list[dict[str, Any]], accept: str) -> str:
    """SageMaker: the answers as a JSON array, or as CSV for ``text/csv``."""
    return format_response(prediction, accept)
