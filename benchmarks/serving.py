"""Latency of one scoring request through the inference handler, stage by stage.

Run from the project root (by hand, never in CI)::

    PYTHONPATH=src .venv/bin/python -m benchmarks.serving [--threads 2] [--rounds 5]

For each profile (``default``: the widths of ``conf/base/parameters.yml``, seq_len 32,
the small preset; ``production``: 109 categorical / 67 numerical / 297 engineered
features, seq_len 51, histories of about 25 orders, the production preset) it builds a
``TSAPredictor`` from random raw orders (``benchmarks/preprocess.py``), transforms
fitted on them, a model with seeded random weights, a uniform percentile map and a flat
calibration spline, and times a JSON request of ``--orders`` orders (1 by default: the
real-time path) through each stage of ``input_fn`` / ``predict_fn`` / ``output_fn``:

- ``parse``: the request body to raw orders (``parse_request``);
- ``normalize``: validation and types (``normalize_raw_orders``);
- ``tensors``: history parsing, encoding, scaling, padding (``build_tensors``);
- ``model``: the forward pass and softmax (``TSAPredictor._scores``, eager model);
- ``answer``: percentiles, calibration and the JSON answer;
- ``end_to_end``: the three handler calls in a row;
- ``end_to_end_csv``: the same for the same orders sent as CSV (every value text).

Stages are timed in turns, round by round, and reported as medians (ms) with each
stage's share of the end-to-end median, so load from other processes on the shared
machine hits every stage alike.

Requests are preprocessed with all columns of a kind together (``columns_together``:
text converted in one pass, history columns split, parsed and looked up together);
``normalize_by_column`` and ``tensors_by_column`` time the same calls column by
column, as chunks are preprocessed, in the same turns: the baseline of
``speedup_over_column_by_column``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from benchmarks._output import write_results
from benchmarks._presets import preset_config
from benchmarks.preprocess import PROFILES, profile_schema, random_raw_chunk
from tsa_kedro.calibration.evaluator import BSplineCalibrator
from tsa_kedro.features.raw_orders import normalize_raw_orders
from tsa_kedro.features.tensors import TensorParams, build_tensors, prepare_transforms
from tsa_kedro.features.transforms import fit_transforms, vocabulary_size
from tsa_kedro.models import TwoSeqMoEOrderFeatureAttentionClassifier
from tsa_kedro.serving import handler
from tsa_kedro.serving.payload import format_response, parse_request

PRESETS = {"default": "small", "production": "production"}
FIT_ROWS = 300
# A flat spline (calibrated probability 0.5 everywhere): only its cost matters here.
FLAT_SPLINE = {
    "format_version": 1,
    "link": "logit",
    "degree": 3,
    "knots": [0.0] * 4 + [1.0] * 4,
    "coefficients": [0.0] * 4,
}


def build_predictor(profile: str, seed: int = 0) -> tuple[handler.TSAPredictor, str]:
    """A predictor for ``profile`` and a JSON request holding orders of its data."""
    settings = PROFILES[profile]
    schema = profile_schema(settings)
    raw = random_raw_chunk(schema, FIT_ROWS, settings["history_mean"], seed)
    cat_to_index, scaling, defaults = fit_transforms(
        [raw], schema, {"min_frequency": 1}
    )
    config = preset_config(
        PRESETS[profile],
        n_cat_features=len(schema.cat_features),
        n_num_features=len(schema.num_features),
        n_eng_features=len(schema.eng_features),
        vocab_size=vocabulary_size(cat_to_index),
        seq_len=settings["seq_len"],
    )
    torch.manual_seed(seed)
    model = TwoSeqMoEOrderFeatureAttentionClassifier(config)
    percentiles = np.linspace(0.0, 100.0, 1000)
    predictor = handler.TSAPredictor(
        model=model,
        schema=schema,
        transforms=prepare_transforms(cat_to_index, scaling, defaults, schema),
        tensor_params=TensorParams(seq_len=settings["seq_len"], delta_cap_seconds=1e7),
        percentile=handler.percentile_lookup(
            [[p / 100.0, p] for p in percentiles.tolist()]
        ),
        calibrator=BSplineCalibrator(FLAT_SPLINE),
        device=torch.device("cpu"),
    )
    request = raw.drop(columns=[schema.label]).to_json(orient="records")
    return predictor, request


Stage = tuple[Callable[[], object], Callable[[object], object]]


def stage_calls(predictor: handler.TSAPredictor, body: str) -> dict[str, Stage]:
    """Per stage, an untimed set-up giving its input (the previous stage's real
    output; frames are fresh copies, so pandas' per-frame column cache starts empty
    as in a real request) and the timed call on it."""
    schema = predictor.schema
    raw = parse_request(body, "application/json", handler.DEFAULT_MAX_BATCH_SIZE)
    labelled = raw.assign(**{schema.label: None})
    orders = normalize_raw_orders(
        labelled, schema, "request", ragged_tolerance=1.0, columns_together=True
    )
    bundle, _ = build_tensors(
        orders,
        schema,
        predictor.transforms,
        predictor.tensor_params,
        labels=False,
        columns_together=True,
    )
    scores = predictor._scores(bundle)
    answers = predictor.predict(raw)

    def answer(_: object) -> str:
        predictor.percentile(scores)
        predictor.calibrator(scores)
        return format_response(answers, "application/json")

    csv_body = raw.to_csv(index=False)  # the same orders as a CSV request

    def end_to_end(_: object) -> str:
        parsed = handler.input_fn(body, "application/json")
        return handler.output_fn(
            handler.predict_fn(parsed, predictor), "application/json"
        )

    def end_to_end_csv(_: object) -> str:
        parsed = handler.input_fn(csv_body, "text/csv")
        return handler.output_fn(
            handler.predict_fn(parsed, predictor), "application/json"
        )

    def nothing() -> None:
        return None

    return {
        "parse": (
            nothing,
            lambda _: parse_request(
                body, "application/json", handler.DEFAULT_MAX_BATCH_SIZE
            ),
        ),
        **{
            f"normalize{suffix}": (
                labelled.copy,
                lambda df, together=together: normalize_raw_orders(
                    df,
                    schema,
                    "request",
                    ragged_tolerance=1.0,
                    columns_together=together,
                ),
            )
            for suffix, together in (("", True), ("_by_column", False))
        },
        **{
            f"tensors{suffix}": (
                orders.copy,
                lambda df, together=together: build_tensors(
                    df,
                    schema,
                    predictor.transforms,
                    predictor.tensor_params,
                    labels=False,
                    columns_together=together,
                ),
            )
            for suffix, together in (("", True), ("_by_column", False))
        },
        "model": (nothing, lambda _: predictor._scores(bundle)),
        "answer": (nothing, answer),
        "end_to_end": (nothing, end_to_end),
        "end_to_end_csv": (nothing, end_to_end_csv),
    }


def time_stages(
    stages: dict[str, Stage], rounds: int, repeats: int
) -> dict[str, float]:
    """Median ms per call of every stage, stages timed in turns."""
    times: dict[str, list[float]] = {name: [] for name in stages}
    for setup, call in stages.values():
        call(setup())  # warm-up
    for _ in range(rounds):
        for name, (setup, call) in stages.items():
            for _ in range(repeats):
                argument = setup()
                start = time.perf_counter()
                call(argument)
                times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}


def run_profile(profile: str, args: argparse.Namespace) -> dict:
    predictor, request = build_predictor(profile)
    records = json.loads(request)
    body = json.dumps(records[: args.orders])
    stages = stage_calls(predictor, body)
    ms = time_stages(stages, args.rounds, args.repeats)
    total = ms["end_to_end"]
    result = {
        "profile": profile,
        "preset": PRESETS[profile],
        "orders_per_request": args.orders,
        "request_bytes": len(body),
        "columns": len(records[0]),
        "ms": ms,
        "share_of_end_to_end": {
            name: ms[name] / total
            for name in ("parse", "normalize", "tensors", "model", "answer")
        },
        "speedup_over_column_by_column": {
            name: ms[f"{name}_by_column"] / ms[name]
            for name in ("normalize", "tensors")
        },
    }
    print(json.dumps(result, indent=1), flush=True)
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--orders", type=int, default=1, help="orders per request")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5, help="calls per round")
    parser.add_argument(
        "--profiles", nargs="+", default=["default", "production"], choices=PROFILES
    )
    parser.add_argument("--output", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = {
        "threads": args.threads,
        "torch": torch.__version__,
        "profiles": [run_profile(p, args) for p in args.profiles],
    }
    write_results(results, args.output, echo=False)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
