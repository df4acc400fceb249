"""Benchmark of the monotone B-spline calibration (R through rpy2).

Run from the project root::

    python -m benchmarks.calibrate                   # 1e4, 1e5, 1e6 scores
    python -m benchmarks.calibrate --sizes 10000 --naive-sizes 10000

For each size, on simulated scores with a known true curve
(``tsa_kedro.calibration.simulation``), it measures:

- the R fit through rpy2: wall time, process CPU time (R runs in this process), IRLS
  iterations and status;
- the curve's error against the truth (max over 1000 score quantiles from 0.5 % to 99.5 %,
  and mean over all records), next to scikit-learn's IsotonicRegression fitted on the
  same data in the same run;
- a naive reference fit in R (same knots and constraints, no convergence measures: dense
  design, glm start on all distinct scores, tiny second-difference penalty, no ridge,
  full Newton steps, stop on coefficient change only, capped at ``--naive-cap``), for the
  ratio of fit times and iterations;
- the Python evaluator's throughput (scores/s) against R's own prediction on the same
  scores.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
from sklearn.isotonic import IsotonicRegression

from tsa_kedro.calibration import r_bridge
from tsa_kedro.calibration.evaluator import BSplineCalibrator
from tsa_kedro.calibration.r_bridge import ro
from tsa_kedro.calibration.simulation import simulate_scores_and_tags

TARGET_SECONDS = {10_000: 2.0, 100_000: 5.0, 1_000_000: 20.0}

# The same model and constraints as the shipped script, without its convergence
# measures. Evaluated in a child of the script's environment to reuse its validation,
# aggregation and knot placement.
NAIVE_R = r"""
function(scores, tags, max_iterations, coefficient_tolerance = 1e-6, penalty = 1e-6) {
  started <- proc.time()[["elapsed"]]
  validate_calibration_input(scores, tags, 1000L, 10L)
  agg <- aggregate_scores(scores, tags)
  knots <- padded_knots(place_knots(agg, 0.1, 8L, 50L)$interior)
  basis <- splineDesign(knots, agg$score, ord = 4L)
  k <- ncol(basis)
  start <- suppressWarnings(glm.fit(
    basis, agg$positives / agg$count, weights = agg$count, family = binomial()
  ))
  beta <- start$coefficients
  beta[is.na(beta)] <- 0
  pen <- second_difference_penalty(k)
  constraints <- monotone_constraints(k)
  status <- "iteration_cap"
  iterations <- max_iterations
  for (iteration in seq_len(max_iterations)) {
    eta <- drop(basis %*% beta)
    p <- plogis(eta)
    w <- agg$count * p * (1 - p)
    hessian <- crossprod(basis * sqrt(w)) + penalty * pen + diag(1e-10, k)
    rhs <- drop(crossprod(basis, w * eta + agg$positives - agg$count * p))
    qp <- tryCatch(
      solve.QP(hessian, rhs, constraints, rep(0, k - 1L))$solution,
      error = function(e) NULL
    )
    if (is.null(qp)) { status <- "qp_failed"; iterations <- iteration; break }
    change <- max(abs(qp - beta))
    beta <- qp
    if (change < coefficient_tolerance) {
      status <- "converged"; iterations <- iteration; break
    }
  }
  list(knots = knots, coefficients = beta, degree = 3L, status = status,
       iterations = iterations, elapsed = proc.time()[["elapsed"]] - started)
}
"""


def _naive_fit() -> Any:
    env = ro.r["new.env"](parent=r_bridge._r_environment())
    return ro.r["eval"](ro.r["parse"](text=NAIVE_R), envir=env)


def curve_errors(
    predict: Any, scores: np.ndarray, curve: Any, grid: np.ndarray
) -> dict[str, float]:
    """Max error over the quantile grid, mean error over all records."""
    return {
        "max_abs_error": float(np.max(np.abs(predict(grid) - curve(grid)))),
        "mean_abs_error": float(np.mean(np.abs(predict(scores) - curve(scores)))),
    }


def timed(function: Any, *args: Any) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def bench_size(n: int, seed: int, naive: bool, naive_cap: int) -> dict[str, Any]:
    scores, tags, curve = simulate_scores_and_tags(n, seed)
    grid = np.quantile(scores, np.linspace(0.005, 0.995, 1000))
    row: dict[str, Any] = {"n": n, "positive_rate": float(tags.mean())}

    parameters, wall, cpu = timed(r_bridge.fit_bspline_calibration, scores, tags)
    calibrator = BSplineCalibrator(parameters)
    row["bspline"] = {
        "status": parameters["status"],
        "iterations": parameters["iterations"],
        "wall_s": wall,
        "cpu_s": cpu,
        "target_s": TARGET_SECONDS.get(n),
        "n_coefficients": parameters["fit_statistics"]["n_coefficients"],
        **curve_errors(calibrator, scores, curve, grid),
    }

    isotonic = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
    _, wall, cpu = timed(isotonic.fit, scores, tags)
    row["isotonic"] = {
        "wall_s": wall,
        "cpu_s": cpu,
        **curve_errors(isotonic.predict, scores, curve, grid),
    }

    if naive:
        fit = _naive_fit()
        result, wall, cpu = timed(
            fit,
            r_bridge._to_r(scores),
            r_bridge._to_r(tags.astype(np.float64)),
            ro.IntVector([naive_cap]),
        )
        naive_parameters = r_bridge._to_python(result)
        naive_calibrator = BSplineCalibrator(
            {**naive_parameters, "format_version": 1, "link": "logit"}
        )
        row["naive"] = {
            "status": naive_parameters["status"],
            "iterations": naive_parameters["iterations"],
            "iteration_cap": naive_cap,
            "wall_s": wall,
            "cpu_s": cpu,
            **curve_errors(naive_calibrator, scores, curve, grid),
        }
        row["naive_over_bspline_wall"] = wall / row["bspline"]["wall_s"]
        row["naive_over_bspline_cpu"] = cpu / row["bspline"]["cpu_s"]
    return row


def bench_evaluator(parameters: dict[str, Any], n: int, repeats: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    scores = rng.beta(0.7, 6.0, size=n)
    calibrator = BSplineCalibrator(parameters)
    python_best = min(timed(calibrator, scores)[1] for _ in range(repeats))
    r_best = min(
        timed(r_bridge.predict_in_r, parameters, scores)[1] for _ in range(repeats)
    )
    return {
        "n_scores": n,
        "python_scores_per_s": n / python_best,
        "r_scores_per_s": n / r_best,
        "python_over_r_throughput": r_best / python_best,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000]
    )
    parser.add_argument(
        "--naive-sizes",
        type=int,
        nargs="*",
        default=[10_000, 100_000],
        help="sizes at which the naive reference also runs (its dense design needs "
        "~150 MB and minutes at 1e6)",
    )
    parser.add_argument("--naive-cap", type=int, default=200)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--evaluator-scores", type=int, default=1_000_000)
    parser.add_argument("--output", help="also write the results to this JSON file")
    args = parser.parse_args()

    # Cold start (R itself started when r_bridge was imported): the script sourced, then
    # a first fit that pays for R's byte-compilation of the script's functions and of
    # glm.fit. A second fit completes the warm-up, so the timed fits measure the algorithm.
    _, startup_wall, startup_cpu = timed(r_bridge._r_environment)
    scores, tags, _ = simulate_scores_and_tags(10_000, args.seed + 1)
    warm, first_wall, first_cpu = timed(r_bridge.fit_bspline_calibration, scores, tags)
    r_bridge.fit_bspline_calibration(scores, tags)
    results: dict[str, Any] = {
        "cold_start": {
            "source_script_wall_s": startup_wall,
            "source_script_cpu_s": startup_cpu,
            "first_fit_1e4_wall_s": first_wall,
            "first_fit_1e4_cpu_s": first_cpu,
        },
        "sizes": [],
    }
    print(json.dumps(results["cold_start"]), flush=True)
    for n in args.sizes:
        row = bench_size(n, args.seed, n in args.naive_sizes, args.naive_cap)
        results["sizes"].append(row)
        print(json.dumps(row, indent=None), flush=True)
    results["evaluator"] = bench_evaluator(warm, args.evaluator_scores, repeats=5)
    print(json.dumps(results["evaluator"]), flush=True)

    print()
    header = (
        f"{'n':>9} {'status':>10} {'iter':>5} {'wall s':>7} {'cpu s':>6} {'target':>6} "
        f"{'max err':>8} {'iso max':>8} {'mean err':>9} {'iso mean':>9} "
        f"{'naive it':>9} {'naive s':>8} {'ratio':>6}"
    )
    print(header)
    for row in results["sizes"]:
        b, i = row["bspline"], row["isotonic"]
        naive = row.get("naive")
        naive_cells = (
            f"{naive['iterations']:>9} {naive['wall_s']:>8.2f} "
            f"{row['naive_over_bspline_wall']:>6.1f}"
            if naive
            else f"{'-':>9} {'-':>8} {'-':>6}"
        )
        print(
            f"{row['n']:>9} {b['status']:>10} {b['iterations']:>5} {b['wall_s']:>7.2f} "
            f"{b['cpu_s']:>6.2f} {b['target_s'] or float('nan'):>6.1f} "
            f"{b['max_abs_error']:>8.4f} {i['max_abs_error']:>8.4f} "
            f"{b['mean_abs_error']:>9.5f} {i['mean_abs_error']:>9.5f} {naive_cells}"
        )
    c = results["cold_start"]
    print(
        f"cold start: sourcing the R script {c['source_script_wall_s']:.2f} s wall / "
        f"{c['source_script_cpu_s']:.2f} s cpu, first 1e4 fit {c['first_fit_1e4_wall_s']:.2f} s wall / "
        f"{c['first_fit_1e4_cpu_s']:.2f} s cpu"
    )
    e = results["evaluator"]
    print(
        f"evaluator: {e['python_scores_per_s']:.3g} scores/s (R splineDesign: "
        f"{e['r_scores_per_s']:.3g} scores/s, ratio {e['python_over_r_throughput']:.1f})"
    )
    if args.output:
        with open(args.output, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
