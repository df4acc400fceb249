"""Gradient-boosted trees baseline on the current order plus simple history aggregates.

The baseline sees what a model without sequence modelling would see: the current
order's categorical and numerical features (the last row of the cid sequence), the
engineered features ``X_num``, and per id type (cid, ccid) the number of previous
orders and the mean and maximum of each numerical feature over them. Everything is
derived from the tensor bundle, in chunks of rows, so a memory-mapped bundle is never
loaded whole.

With ``history_match_features`` (off by default: the reported baseline is the plain
one) it also gets the TSA's history match rates (``models/tsa.py``), the same
function, to show how much of the TSA's lead is that one sequence summary.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingClassifier

from tsa_kedro.features.contract import EXTRA_NUM_COLUMNS, REAL_ROW_COLUMN, Bundle
from tsa_kedro.models.tsa import history_match_rates

CHUNK_ROWS = 16384


@dataclass(frozen=True)
class BaselineSettings:
    """Hyper-parameters of the baseline (``params:train.baseline``).

    Attributes:
        max_iter: Boosting iterations.
        learning_rate: Shrinkage.
        max_leaf_nodes: Leaves per tree.
        l2_regularization: L2 penalty on leaf values.
        max_train_rows: Fit on at most this many training rows (drawn with
            ``random_state``); ``None`` uses all.
        random_state: Seed of the row sample and of the booster.
        history_match_features: Also give the trees the TSA's history match rates.
    """

    max_iter: int = 200
    learning_rate: float = 0.1
    max_leaf_nodes: int = 31
    l2_regularization: float = 0.0
    max_train_rows: int | None = None
    random_state: int = 0
    history_match_features: bool = False

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> BaselineSettings:
        """Build from the parameters block, rejecting unknown keys."""
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown baseline parameters: {sorted(unknown)}")
        return cls(**values)


def _sequence_aggregates(num: np.ndarray) -> np.ndarray:
    """History aggregates of one numerical sequence chunk ``(B, L, F + 2)``."""
    history = num[..., REAL_ROW_COLUMN] > 0.5
    history[:, -1] = False  # the last row is the current order
    counts = history.sum(axis=1)
    values = num[..., :-EXTRA_NUM_COLUMNS]
    mask = history[..., None]
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(mask, values, 0.0).sum(axis=1) / counts[:, None]
    maxima = np.where(mask, values, -np.inf).max(axis=1)
    none = counts == 0
    means[none] = np.nan
    maxima[none] = np.nan
    return np.concatenate([counts[:, None], means, maxima], axis=1).astype(np.float32)


def _match_rates(cat: np.ndarray, num: np.ndarray) -> np.ndarray:
    rates = history_match_rates(
        torch.from_numpy(cat.astype(np.int64)), torch.from_numpy(num[..., -1])
    )
    return rates.numpy()


def baseline_features(
    bundle: Bundle, rows: np.ndarray | None = None, match_rates: bool = False
) -> np.ndarray:
    """Feature matrix of the baseline for ``rows`` (all rows when ``None``); with
    ``match_rates`` the history match rates of both id types are appended."""
    rows = np.arange(bundle["X_num"].shape[0]) if rows is None else np.sort(rows)
    parts = []
    for start in range(0, rows.size, CHUNK_ROWS):
        index = rows[start : start + CHUNK_ROWS]
        num_cid = np.asarray(bundle["X_seq_num_cid"][index], dtype=np.float32)
        num_ccid = np.asarray(bundle["X_seq_num_ccid"][index], dtype=np.float32)
        current_cat = bundle["X_seq_cat_cid"][index, -1, :].astype(np.float32)
        current_num = num_cid[:, -1, :-EXTRA_NUM_COLUMNS]
        columns = [
            current_cat,
            current_num,
            np.asarray(bundle["X_num"][index], dtype=np.float32),
            _sequence_aggregates(num_cid),
            _sequence_aggregates(num_ccid),
        ]
        if match_rates:
            columns += [
                _match_rates(np.asarray(bundle["X_seq_cat_cid"][index]), num_cid),
                _match_rates(np.asarray(bundle["X_seq_cat_ccid"][index]), num_ccid),
            ]
        parts.append(np.concatenate(columns, axis=1))
    return np.concatenate(parts)


def fit_baseline(
    train: Bundle, labels: np.ndarray, settings: BaselineSettings
) -> HistGradientBoostingClassifier:
    """Fit the baseline on (a sample of) the training bundle."""
    n_rows = labels.size
    rows = np.arange(n_rows)
    if settings.max_train_rows is not None and settings.max_train_rows < n_rows:
        rng = np.random.default_rng(settings.random_state)
        rows = np.sort(rng.choice(n_rows, size=settings.max_train_rows, replace=False))
    model = HistGradientBoostingClassifier(
        max_iter=settings.max_iter,
        learning_rate=settings.learning_rate,
        max_leaf_nodes=settings.max_leaf_nodes,
        l2_regularization=settings.l2_regularization,
        early_stopping=False,
        random_state=settings.random_state,
    )
    model.fit(
        baseline_features(train, rows, settings.history_match_features), labels[rows]
    )
    return model


def baseline_scores(
    model: HistGradientBoostingClassifier,
    bundle: Bundle,
    settings: BaselineSettings | None = None,
) -> np.ndarray:
    """Class-1 probabilities of the baseline for every row of ``bundle`` (``settings``
    as at fitting; only ``history_match_features`` matters here)."""
    match = settings is not None and settings.history_match_features
    scores = [
        model.predict_proba(baseline_features(bundle, np.arange(start, stop), match))[
            :, 1
        ]
        for start, stop in _chunks(bundle["X_num"].shape[0])
    ]
    return np.concatenate(scores).astype(np.float32)


def _chunks(n_rows: int) -> list[tuple[int, int]]:
    return [(s, min(s + CHUNK_ROWS, n_rows)) for s in range(0, n_rows, CHUNK_ROWS)]
