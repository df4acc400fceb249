"""Reference profiles of the training data and their comparison with scored orders.

The comparison is the Population Stability Index (PSI) over fixed bins, computed with
numpy here rather than with a drift library: the one that offers it (evidently) brings
about 25 packages, among them a telemetry client, for a few lines of arithmetic.

A profile (``build_reference_profile``) holds, per feature of the raw schema:

- numerical and engineered features: up to 9 cut points at the training deciles
  (10 bins; tied deciles merge bins), the share of values per bin, the share missing,
  and the training range ``[min, max]`` that the min-max scaling clips to;
- categorical features: the share of each of the 20 most frequent training values,
  of all other values together (``other``) and of missing values;
- the calibration scores: cut points at their deciles and the share per bin.

``PSI = sum_i (c_i - r_i) * ln(c_i / r_i)`` over the bins (the missing share is one
bin more), with reference shares ``r_i`` and current shares ``c_i`` both floored at
``SHARE_FLOOR`` so that an empty bin gives a large, finite term.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from tsa_kedro.schema import RawSchema

FORMAT_VERSION = 1
BINS = 10
TOP_VALUES = 20
SHARE_FLOOR = 1e-4
OTHER = "__other__"
MISSING = "__missing__"
STATUSES = ("ok", "warn", "fail")


class ProfileError(ValueError):
    """A reference profile that cannot be built or read; the message says which part."""


def psi(reference: Sequence[float], current: Sequence[float]) -> float:
    """Population Stability Index of two share vectors over the same bins.

    Shares are floored at ``SHARE_FLOOR`` (not renormalised): identical shares give 0.

    Raises:
        ValueError: The vectors differ in length, are empty or hold negative or
            non-finite shares.
    """
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    if ref.shape != cur.shape or ref.ndim != 1 or ref.size == 0:
        raise ValueError(
            f"PSI needs two share vectors of one length, got {ref.shape} and "
            f"{cur.shape}"
        )
    if not (np.isfinite(ref).all() and np.isfinite(cur).all()):
        raise ValueError("PSI shares must be finite")
    if (ref < 0).any() or (cur < 0).any():
        raise ValueError("PSI shares must not be negative")
    ref = np.maximum(ref, SHARE_FLOOR)
    cur = np.maximum(cur, SHARE_FLOOR)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def _numbers(values: Any) -> np.ndarray:
    out = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan
    )
    return np.where(np.isfinite(out), out, np.nan)


def bin_shares(values: np.ndarray, edges: Sequence[float]) -> tuple[list[float], float]:
    """``(share per bin, share missing)`` of ``values`` over bins cut at ``edges``
    (bin ``i`` holds ``edges[i-1] < x <= edges[i]``); shares of all values, NaN being
    missing; empty input gives zeros."""
    values = np.asarray(values, dtype=np.float64)
    total = values.size
    if total == 0:
        return [0.0] * (len(edges) + 1), 0.0
    present = values[~np.isnan(values)]
    index = np.searchsorted(np.asarray(edges, dtype=np.float64), present, side="left")
    counts = np.bincount(index, minlength=len(edges) + 1)
    return (counts / total).tolist(), float((total - present.size) / total)


def quantile_edges(values: np.ndarray, bins: int = BINS) -> list[float]:
    """The distinct inner cut points at the ``bins``-quantiles of the finite values
    (none when there are none)."""
    present = values[~np.isnan(values)]
    if present.size == 0:
        return []
    inner = np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1])
    return sorted({float(x) for x in inner})


def _missing_text(column: pd.Series, null_tokens: Iterable[str]) -> np.ndarray:
    text = column.astype("string")
    return (text.isna() | text.isin([*null_tokens, ""])).to_numpy(dtype=bool)


def category_shares(
    column: pd.Series, top: Sequence[str], null_tokens: Iterable[str]
) -> dict[str, float]:
    """Share of each ``top`` value, of all other values (``OTHER``) and of missing
    values (``MISSING``) in ``column``."""
    total = len(column)
    shares = dict.fromkeys([*top, OTHER, MISSING], 0.0)
    if total == 0:
        return shares
    missing = _missing_text(column, null_tokens)
    counts = column[~missing].astype(str).value_counts()
    in_top = counts[counts.index.isin(list(top))]
    for value, count in in_top.items():
        shares[value] = float(count / total)
    shares[OTHER] = float((counts.sum() - in_top.sum()) / total)
    shares[MISSING] = float(missing.sum() / total)
    return shares


def build_reference_profile(
    chunks: Iterable[pd.DataFrame],
    scores: pd.Series | np.ndarray,
    schema: RawSchema,
) -> dict[str, Any]:
    """The reference profile of the training orders and the calibration scores.

    Args:
        chunks: Normalised raw training orders (``normalize_raw_orders``).
        scores: The calibration set's model scores.
        schema: The raw contract (its categorical, numerical, engineered features).

    Returns:
        A JSON-serialisable profile (module docstring), a few KB.

    Raises:
        ProfileError: No training orders, a feature column absent from the chunks,
            or no finite calibration score.
    """
    frames = list(chunks)
    features = [*schema.cat_features, *schema.num_features, *schema.eng_features]
    columns: dict[str, list[pd.Series]] = {f: [] for f in features}
    for number, frame in enumerate(frames):
        absent = [f for f in features if f not in frame.columns]
        if absent:
            raise ProfileError(f"training chunk {number} lacks the columns {absent}")
        for feature in features:
            columns[feature].append(frame[feature])
    rows = sum(len(frame) for frame in frames)
    if rows == 0:
        raise ProfileError("no training orders to profile")
    numerical: dict[str, Any] = {}
    for feature in (*schema.num_features, *schema.eng_features):
        values = _numbers(pd.concat(columns[feature], ignore_index=True))
        edges = quantile_edges(values)
        shares, missing = bin_shares(values, edges)
        present = values[~np.isnan(values)]
        numerical[feature] = {
            "family": "numerical" if feature in schema.num_features else "engineered",
            "edges": edges,
            "shares": shares,
            "missing_share": missing,
            "min": float(present.min()) if present.size else None,
            "max": float(present.max()) if present.size else None,
        }
    categorical: dict[str, Any] = {}
    for feature in schema.cat_features:
        column = pd.concat(columns[feature], ignore_index=True)
        missing = _missing_text(column, schema.null_tokens)
        counts = column[~missing].astype(str).value_counts()
        ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        top = [value for value, _ in ordered[:TOP_VALUES]]
        categorical[feature] = {
            "shares": category_shares(column, top, schema.null_tokens),
            "distinct_values": len(counts),
        }
    score_values = _numbers(scores)
    if np.isnan(score_values).all():
        raise ProfileError("the calibration score_file holds no finite score")
    score_edges = quantile_edges(score_values)
    score_shares, _ = bin_shares(score_values[~np.isnan(score_values)], score_edges)
    return {
        "format_version": FORMAT_VERSION,
        "rows": rows,
        "bins": BINS,
        "top_values": TOP_VALUES,
        "numerical": numerical,
        "categorical": categorical,
        "score": {
            "edges": score_edges,
            "shares": score_shares,
            "rows": int((~np.isnan(score_values)).sum()),
        },
    }


def _status(value: float, warn: float, fail: float | None = None) -> str:
    if fail is not None and value >= fail:
        return "fail"
    return "warn" if value >= warn else "ok"


def _worst(statuses: Iterable[str]) -> str:
    return max(statuses, key=STATUSES.index, default="ok")


def compare_to_profile(  # noqa: PLR0914 - one pass over the profile's parts
    profile: Mapping[str, Any],
    orders: pd.DataFrame,
    scores: pd.Series | np.ndarray,
    vocabulary: Mapping[str, Iterable[str]],
    schema: RawSchema,
    thresholds: Mapping[str, Any],
) -> dict[str, Any]:
    """Compare normalised orders and their scores with a reference profile.

    A feature's status is ``fail`` when its PSI reaches ``psi_fail``, ``warn`` when it
    reaches ``psi_warn`` or when its share of categorical values unknown to the
    vocabulary exceeds ``unknown_share_warn`` (of numericals outside the training
    range, ``clipped_share_warn``), else ``ok``. The score's PSI has a status too; the
    overall status is the worst of all.

    Args:
        profile: A profile from ``build_reference_profile``.
        orders: The normalised orders (``normalize_raw_orders``).
        scores: Their model scores (NaN for orders not scored are left out).
        vocabulary: Per categorical feature, the values the model's vocabulary holds.
        schema: The raw contract of the model.
        thresholds: ``psi_warn``, ``psi_fail``, ``unknown_share_warn``,
            ``clipped_share_warn``.

    Returns:
        A dict with ``status``, ``orders``, ``scored``, ``thresholds``, ``failed``
        and ``warned`` (feature names), ``score`` (PSI, status, shares),
        ``features`` (one entry per feature, sorted by PSI, largest first),
        ``unknown_share`` and ``clipped_share`` (per feature).

    Raises:
        ProfileError: The profile has another format version or lacks a feature of
            the schema; the orders lack a feature column.
    """
    if profile.get("format_version") != FORMAT_VERSION:
        raise ProfileError(
            f"reference profile format_version {profile.get('format_version')!r} is "
            f"not {FORMAT_VERSION}"
        )
    warn, fail = float(thresholds["psi_warn"]), float(thresholds["psi_fail"])
    unknown_warn = float(thresholds["unknown_share_warn"])
    clipped_warn = float(thresholds["clipped_share_warn"])
    features: list[dict[str, Any]] = []
    for feature in (*schema.num_features, *schema.eng_features):
        reference = profile["numerical"].get(feature)
        if reference is None:
            raise ProfileError(f"the reference profile lacks the feature {feature!r}")
        if feature not in orders.columns:
            raise ProfileError(f"the scored orders lack the column {feature!r}")
        values = _numbers(orders[feature])
        shares, missing = bin_shares(values, reference["edges"])
        value = psi(
            [*reference["shares"], reference["missing_share"]], [*shares, missing]
        )
        present = values[~np.isnan(values)]
        low, high = reference["min"], reference["max"]
        outside = (
            int(((present < low) | (present > high)).sum()) if low is not None else 0
        )
        clipped = outside / len(values) if len(values) else 0.0
        status = _worst([_status(value, warn, fail), _status(clipped, clipped_warn)])
        labels = [
            f"<= {reference['edges'][0]:.4g}" if reference["edges"] else "all",
            *(
                f"({a:.4g}, {b:.4g}]"
                for a, b in zip(
                    reference["edges"], reference["edges"][1:], strict=False
                )
            ),
            *([f"> {reference['edges'][-1]:.4g}"] if reference["edges"] else []),
            "missing",
        ]
        features.append(
            {
                "feature": feature,
                "kind": reference["family"],
                "psi": value,
                "status": status,
                "clipped_share": clipped,
                "training_range": [low, high],
                "bins": labels,
                "reference_shares": [*reference["shares"], reference["missing_share"]],
                "current_shares": [*shares, missing],
            }
        )
    for feature in schema.cat_features:
        reference = profile["categorical"].get(feature)
        if reference is None:
            raise ProfileError(f"the reference profile lacks the feature {feature!r}")
        if feature not in orders.columns:
            raise ProfileError(f"the scored orders lack the column {feature!r}")
        ref_shares = reference["shares"]
        top = [v for v in ref_shares if v not in {OTHER, MISSING}]
        column = orders[feature]
        shares = category_shares(column, top, schema.null_tokens)
        value = psi(list(ref_shares.values()), [shares[k] for k in ref_shares])
        missing = _missing_text(column, schema.null_tokens)
        known = set(vocabulary.get(feature, ()))
        present = column[~missing].astype(str)
        unknown = (
            float((~present.isin(known)).sum() / len(column)) if len(column) else 0.0
        )
        status = _worst([_status(value, warn, fail), _status(unknown, unknown_warn)])
        features.append(
            {
                "feature": feature,
                "kind": "categorical",
                "psi": value,
                "status": status,
                "unknown_share": unknown,
                "bins": [
                    {OTHER: "other", MISSING: "missing"}.get(k, k) for k in ref_shares
                ],
                "reference_shares": list(ref_shares.values()),
                "current_shares": [shares[k] for k in ref_shares],
            }
        )
    features.sort(key=lambda item: (-item["psi"], item["feature"]))
    score_values = _numbers(scores)
    score_values = score_values[~np.isnan(score_values)]
    reference = profile["score"]  # no scored order at all: the score status is warn
    if score_values.size:
        score_shares, _ = bin_shares(score_values, reference["edges"])
        score_psi: float | None = psi(reference["shares"], score_shares)
        score_status = _status(score_psi, warn, fail)
    else:
        score_shares, score_psi, score_status = [], None, "warn"
    failed = [f["feature"] for f in features if f["status"] == "fail"]
    warned = [f["feature"] for f in features if f["status"] == "warn"]
    return {
        "status": _worst([*(f["status"] for f in features), score_status]),
        "orders": len(orders),
        "scored": int(score_values.size),
        "thresholds": {
            "psi_warn": warn,
            "psi_fail": fail,
            "unknown_share_warn": unknown_warn,
            "clipped_share_warn": clipped_warn,
        },
        "failed": failed,
        "warned": warned,
        "score": {
            "psi": score_psi,
            "status": score_status,
            "reference_shares": reference["shares"],
            "current_shares": score_shares,
        },
        "features": features,
        "unknown_share": {
            f["feature"]: f["unknown_share"] for f in features if "unknown_share" in f
        },
        "clipped_share": {
            f["feature"]: f["clipped_share"] for f in features if "clipped_share" in f
        },
    }
