"""Calibration metrics on probabilities and 0/1 tags (numpy only).

Rejected inputs (``ValueError``): arrays of different lengths, empty arrays, NaN
probabilities, probabilities outside [0, 1], tags other than 0/1.
"""

from __future__ import annotations

import numpy as np


def _checked(
    probabilities: np.ndarray, tags: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(tags, dtype=np.float64)
    if p.shape != y.shape or p.ndim != 1:
        raise ValueError(
            f"probabilities {p.shape} and tags {y.shape} must be 1-d of the same length"
        )
    if p.size == 0:
        raise ValueError("no records to evaluate")
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError("probabilities must lie in [0, 1] without NaN")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("tags must be 0 or 1")
    return p, y


def log_loss(probabilities: np.ndarray, tags: np.ndarray, clip: float = 1e-6) -> float:
    """Mean negative log-likelihood, probabilities clipped to [clip, 1 - clip].

    The clip keeps a method that predicts exactly 0 or 1 (isotonic regression does on
    score ranges without positives) finite, and applies to every method alike.
    """
    p, y = _checked(probabilities, tags)
    p = np.clip(p, clip, 1 - clip)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def brier_score(probabilities: np.ndarray, tags: np.ndarray) -> float:
    """Mean squared difference between probability and tag."""
    p, y = _checked(probabilities, tags)
    return float(np.mean((p - y) ** 2))


def equal_mass_bins(
    probabilities: np.ndarray, tags: np.ndarray, n_bins: int = 10
) -> dict[str, np.ndarray]:
    """Reliability table: records sorted by probability, split into ``n_bins`` bins of
    (almost) equal size.

    Returns:
        ``{"mean_probability", "observed_rate", "count"}`` arrays, one entry per bin.
    """
    p, y = _checked(probabilities, tags)
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    order = np.argsort(p, kind="stable")
    bins = [b for b in np.array_split(order, min(n_bins, p.size)) if b.size]
    return {
        "mean_probability": np.array([p[b].mean() for b in bins]),
        "observed_rate": np.array([y[b].mean() for b in bins]),
        "count": np.array([b.size for b in bins]),
    }


def expected_calibration_error(
    probabilities: np.ndarray, tags: np.ndarray, n_bins: int = 10
) -> float:
    """ECE with equal-mass bins: sum over bins of (bin share) * |mean p - observed rate|."""
    table = equal_mass_bins(probabilities, tags, n_bins)
    weights = table["count"] / table["count"].sum()
    gaps = np.abs(table["mean_probability"] - table["observed_rate"])
    return float(np.sum(weights * gaps))


def calibration_report(
    probabilities: np.ndarray, tags: np.ndarray, n_bins: int = 10, clip: float = 1e-6
) -> dict[str, float]:
    """Log loss, Brier score and ECE of one method."""
    return {
        "log_loss": log_loss(probabilities, tags, clip),
        "brier": brier_score(probabilities, tags),
        "ece": expected_calibration_error(probabilities, tags, n_bins),
    }
