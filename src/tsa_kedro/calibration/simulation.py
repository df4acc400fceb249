"""Simulated calibration data with a known true calibration curve.

Used by the tests, the benchmark and the documentation to check that a calibration
method recovers the truth. Scores are skewed towards 0 like a fraud model's scores, and
the true curve ``p(s) = expit(intercept + slope * logit(s))`` is monotone in the score
for ``slope > 0``. ``slope = 1`` with a negative intercept is what a model trained on
negatives down-sampled to a higher positive rate produces on natural data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit, logit


@dataclass(frozen=True)
class TrueCurve:
    """``p(s) = expit(intercept + slope * logit(s))`` on scores clipped into (0, 1)."""

    intercept: float
    slope: float

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        """True probability of a positive tag at each score."""
        s = np.clip(np.asarray(scores, dtype=np.float64), 1e-12, 1 - 1e-12)
        return expit(self.intercept + self.slope * logit(s))


def simulate_scores_and_tags(
    n: int,
    seed: int,
    curve: TrueCurve = TrueCurve(intercept=-1.0, slope=1.2),
    beta_a: float = 0.7,
    beta_b: float = 6.0,
) -> tuple[np.ndarray, np.ndarray, TrueCurve]:
    """Draw ``n`` scores from Beta(beta_a, beta_b) and tags from the true curve.

    The defaults give about 4 % positives, most scores below 0.2, and a curve that
    rises steeply in the top few percent of scores.

    Returns:
        ``(scores, tags, curve)``: float64 scores in [0, 1], 0/1 int8 tags, the curve.
    """
    rng = np.random.default_rng(seed)
    scores = rng.beta(beta_a, beta_b, size=n)
    tags = (rng.random(n) < curve(scores)).astype(np.int8)
    return scores, tags, curve
