"""Held-out comparison of the B-spline calibration with isotonic regression.

Runs the calibrate pipeline's own nodes (split, R fit, predictions, metrics) with the
default parameters of ``conf/base/parameters_calibrate.yml`` on several simulated score
distributions, sizes and seeds, and reports held-out log loss, Brier score and ECE of the
B-spline against scikit-learn's IsotonicRegression fitted on the same fitting part::

    python -m benchmarks.calibrate_holdout
    python -m benchmarks.calibrate_holdout --sizes 5000 --seeds 1
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd
import yaml

from tsa_kedro.calibration.simulation import TrueCurve, simulate_scores_and_tags
from tsa_kedro.pipelines.calibrate.nodes import (
    compute_calibration_metrics,
    fit_bspline,
    predict_holdout,
    split_calibration_data,
)

PARAMETERS = Path(__file__).resolve().parents[1] / "conf/base/parameters_calibrate.yml"

# Skewed score distributions with 1.5 % to 16 % positives.
SCENARIOS = {
    "default": {},
    "downsampled": {"curve": TrueCurve(-2.5, 1.0), "beta_a": 1.0, "beta_b": 4.0},
    "steep": {"curve": TrueCurve(0.5, 2.5), "beta_a": 0.8, "beta_b": 5.0},
    "flat": {"curve": TrueCurve(-0.5, 0.6), "beta_a": 1.0, "beta_b": 6.0},
    "skewed": {"curve": TrueCurve(-1.0, 1.0), "beta_a": 0.4, "beta_b": 10.0},
}


def run_one(scenario: str, n: int, seed: int, params: dict) -> dict:
    scores, tags, _ = simulate_scores_and_tags(n, seed, **SCENARIOS[scenario])
    fit_set, holdout_set = split_calibration_data(
        pd.DataFrame({"score": scores}), pd.DataFrame({"tag": tags}), params["split"]
    )
    parameters = fit_bspline(fit_set, params["bspline"], params["require_convergence"])
    predictions = predict_holdout(parameters, fit_set, holdout_set)
    methods = compute_calibration_metrics(predictions, parameters, params["metrics"])[
        "methods"
    ]
    row = {
        "scenario": scenario,
        "n": n,
        "seed": seed,
        "positive_rate": float(tags.mean()),
        "iterations": parameters["iterations"],
    }
    for metric in ("log_loss", "brier", "ece"):
        for method in ("raw", "bspline", "isotonic"):
            row[f"{metric}_{method}"] = methods[method][metric]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[5_000, 20_000, 100_000]
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--output", help="also write the rows to this CSV file")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    params = yaml.safe_load(PARAMETERS.read_text())["calibrate"]

    rows = [
        run_one(scenario, n, 100 + seed, params)
        for scenario in SCENARIOS
        for n in args.sizes
        for seed in range(args.seeds)
    ]
    frame = pd.DataFrame(rows)
    for metric in ("log_loss", "brier", "ece"):
        frame[f"{metric}_bspline_minus_isotonic"] = (
            frame[f"{metric}_bspline"] - frame[f"{metric}_isotonic"]
        )
    columns = [
        "positive_rate",
        "iterations",
        "log_loss_bspline",
        "log_loss_isotonic",
        "brier_bspline",
        "brier_isotonic",
        "ece_bspline",
        "ece_isotonic",
    ]
    with pd.option_context("display.width", 200):
        print(frame.groupby(["scenario", "n"])[columns].mean().round(5).to_string())
    print()
    for metric in ("log_loss", "brier", "ece"):
        difference = frame[f"{metric}_bspline_minus_isotonic"]
        print(
            f"{metric}: B-spline <= isotonic in {(difference <= 0).sum()} of {len(frame)} "
            f"runs; largest excess {difference.max():.6f} "
            f"({(difference / frame[f'{metric}_isotonic']).max():.2%} relative); "
            f"mean difference {difference.mean():.6f}"
        )
    print(
        f"IRLS iterations: {frame['iterations'].min()} to {frame['iterations'].max()}"
    )
    if args.output:
        frame.to_csv(args.output, index=False)


if __name__ == "__main__":
    main()
