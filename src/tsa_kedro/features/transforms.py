"""Fitting the preprocessing transforms on the training split.

Three JSON-serialisable artefacts come out of one pass over the training chunks:

- ``cat_to_index``: ``{feature: {value: index}}``. Indices are contiguous and disjoint
  across features (feature order of the schema); index 0 is reserved for padding and for
  values the vocabulary does not hold.
- ``scaling``: ``{"sequence": {feature: {"min", "max"}}, "dense": {...}}``, min-max
  parameters of the current-order numerical sequence features and of the engineered
  dense features. An entry with ``"transform": "signed_log1p"`` (features matched by
  ``log_scale``) holds the bounds of ``sign(x) * log1p(|x|)``, and values go through
  that function before the min-max step; an entry without it is plain min-max.
- ``default_values``: ``{feature: value}`` for every categorical, numerical and
  engineered feature, used in place of a missing value (a categorical default of
  ``None`` leaves a missing value at index 0).

Scaling, defaults and the order of the vocabulary come from the current-order
columns: each training order counts once there, whereas a value inside a history
string is counted once per later order of the same customer or card. The vocabulary
also holds the values seen only in train's cid and ccid histories (a merchant a
customer used before the training window, say), after the current-order values and
ordered by their history counts, so such a value still has a row of its own.
Unlabelled rows take part (the transforms are unsupervised).
This module imports neither Kedro nor R.
"""

from __future__ import annotations

import fnmatch
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tsa_kedro.features.numeric_codes import canonical_code
from tsa_kedro.features.raw_orders import is_missing
from tsa_kedro.schema import ID_TYPES, RawSchema

logger = logging.getLogger(__name__)

CATEGORICAL_STRATEGIES = ("mode", "unknown")
NUMERICAL_STRATEGIES = ("median", "zero")
SIGNED_LOG1P = "signed_log1p"  # the one non-identity scaling transform


@dataclass(frozen=True)
class FitParams:
    """Parameters of the transform fit (``fit_transforms`` in the parameters).

    Attributes:
        min_frequency: A categorical value seen fewer times than this on train
            (current orders; for a value only in histories, history tokens) gets no
            index of its own (it encodes to 0, like an unseen value).
        categorical_default: ``mode`` (most frequent training value) or ``unknown``
            (missing values stay at index 0).
        numerical_default: ``median`` of the training values or ``zero``.
        default_overrides: ``{feature: value}`` configured defaults that win over the
            learned ones.
        median_sample_rows: At most this many rows per chunk feed the median (a seeded
            sample), which bounds memory on large training sets; the median is exact
            when no chunk is larger.
        seed: Seed of that sample.
        log_scale: ``fnmatch`` patterns of the numerical features (sequence and
            dense) that are scaled on a signed-log axis: ``sign(x) * log1p(|x|)``
            first, then min-max. Heavy-tailed amounts, counts and ratios otherwise
            min-max to a sliver near 0 (one outlier sets the span), which a network
            reads badly; trees do not care. ``[]`` (the default) keeps plain min-max.
    """

    min_frequency: int = 1
    categorical_default: str = "mode"
    numerical_default: str = "median"
    default_overrides: Mapping[str, Any] = field(default_factory=dict)
    median_sample_rows: int = 100_000
    seed: int = 0
    log_scale: tuple[str, ...] = ()

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> FitParams:
        """Build and validate from the ``fit_transforms`` parameters mapping."""
        try:
            fit = cls(**dict(params))
        except TypeError as exc:
            raise ValueError(f"fit_transforms parameters are invalid: {exc}") from exc
        if not isinstance(fit.min_frequency, int) or fit.min_frequency < 1:
            raise ValueError(
                "fit_transforms.min_frequency must be an integer >= 1, got "
                f"{fit.min_frequency!r}"
            )
        if fit.categorical_default not in CATEGORICAL_STRATEGIES:
            raise ValueError(
                f"fit_transforms.categorical_default must be one of "
                f"{CATEGORICAL_STRATEGIES}, got {fit.categorical_default!r}"
            )
        if fit.numerical_default not in NUMERICAL_STRATEGIES:
            raise ValueError(
                f"fit_transforms.numerical_default must be one of "
                f"{NUMERICAL_STRATEGIES}, got {fit.numerical_default!r}"
            )
        if fit.median_sample_rows < 1:
            raise ValueError("fit_transforms.median_sample_rows must be >= 1")
        patterns = fit.log_scale
        if not isinstance(patterns, list | tuple) or not all(
            isinstance(p, str) for p in patterns
        ):
            raise ValueError(
                "fit_transforms.log_scale must be a list of feature-name patterns, "
                f"got {patterns!r}"
            )
        return replace(fit, log_scale=tuple(patterns))

    def log_scaled(self, feature: str) -> bool:
        """Whether ``feature`` is scaled on the signed-log axis."""
        return any(fnmatch.fnmatchcase(feature, p) for p in self.log_scale)


def signed_log1p(values: np.ndarray | float) -> np.ndarray:
    """``sign(x) * log1p(|x|)``: increasing, odd, close to ``x`` near 0."""
    return np.sign(values) * np.log1p(np.abs(values))


def history_token_counts(
    histories: pd.Series, separator: str, null_tokens: Iterable[str]
) -> pd.Series:
    """How often each value occurs in separator-joined history strings (null tokens
    and empty histories left out), indexed by value."""
    text = pa.array(histories, pa.large_string(), from_pandas=True)
    tokens = pc.list_flatten(pc.split_pattern(pc.fill_null(text, ""), separator))
    counted = pc.value_counts(tokens.filter(~is_missing(tokens, ("", *null_tokens))))
    return pd.Series(
        counted.field("counts").to_numpy(zero_copy_only=False).astype(np.int64),
        index=pd.Index(counted.field("values").to_pylist(), dtype=object),
        dtype=np.int64,
    )


def _numeric_column(df: pd.DataFrame, column: str) -> np.ndarray:
    """A numerical column as float64, non-finite values turned into NaN."""
    if column not in df.columns:
        raise KeyError(f"raw orders lack the numerical column {column!r}")
    try:
        values = df[column].to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"raw column {column!r} must be numeric (float64), got {df[column].dtype}"
        ) from exc
    return np.where(np.isfinite(values), values, np.nan)


class _Accumulator:
    """Running counts, extremes and median samples over training chunks."""

    def __init__(self, schema: RawSchema, fit: FitParams):
        self.schema = schema
        self.fit = fit
        self.counts: dict[str, pd.Series] = {}
        self.history_counts: dict[str, pd.Series] = {}
        self.minimum: dict[str, float] = {}
        self.maximum: dict[str, float] = {}
        self.samples: dict[str, list[np.ndarray]] = {}
        self.rows = 0
        self.rng = np.random.default_rng(fit.seed)

    def add(self, df: pd.DataFrame) -> None:
        schema = self.schema
        self.rows += len(df)
        for feature in schema.cat_features:
            if feature not in df.columns:
                raise KeyError(f"raw orders lack the categorical column {feature!r}")
            column = df[feature]
            text = pa.array(
                column.astype("string"), pa.large_string(), from_pandas=True
            )
            present = column[~is_missing(text, schema.null_tokens)].astype(str)
            counts = present.value_counts(sort=False)
            previous = self.counts.get(feature)
            self.counts[feature] = (
                counts if previous is None else previous.add(counts, fill_value=0)
            )
            for id_type in ID_TYPES:
                column = schema.history_column(id_type, feature)
                if column not in df.columns:
                    raise KeyError(f"raw orders lack the history column {column!r}")
                tokens = history_token_counts(
                    df[column], schema.separator, schema.null_tokens
                )
                previous = self.history_counts.get(feature)
                self.history_counts[feature] = (
                    tokens if previous is None else previous.add(tokens, fill_value=0)
                )
        sample = None
        if len(df) > self.fit.median_sample_rows:
            sample = self.rng.choice(
                len(df), self.fit.median_sample_rows, replace=False
            )
        for feature in (*schema.num_features, *schema.eng_features):
            values = _numeric_column(df, feature)
            finite = values[~np.isnan(values)]
            if finite.size:
                self.minimum[feature] = min(
                    self.minimum.get(feature, math.inf), float(finite.min())
                )
                self.maximum[feature] = max(
                    self.maximum.get(feature, -math.inf), float(finite.max())
                )
            kept = values if sample is None else values[sample]
            self.samples.setdefault(feature, []).append(kept[~np.isnan(kept)])


def _configured_default(feature: str, value: Any, schema: RawSchema) -> Any:
    """A ``default_overrides`` value as the transforms store it."""
    if feature not in schema.cat_features:
        return float(value)
    if value is None:
        return None
    if feature in schema.numeric_cat_features:  # a YAML 3.0 names the code 3
        return canonical_code(str(value))
    return str(value)


def _vocabulary(
    acc: _Accumulator, schema: RawSchema, fit: FitParams
) -> tuple[dict[str, dict[str, int]], dict[str, Any]]:
    """``cat_to_index`` and the categorical defaults from the accumulated counts:
    per feature, the current-order values (most frequent first, ties by value), then
    the values seen only in histories (likewise, by history count)."""
    cat_to_index: dict[str, dict[str, int]] = {}
    default_values: dict[str, Any] = {}
    next_index = 1
    for feature in schema.cat_features:
        seen = acc.counts[feature]
        counts = seen[seen >= fit.min_frequency]
        ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        history = acc.history_counts[feature]
        history = history[
            (history >= fit.min_frequency) & ~history.index.isin(seen.index)
        ]
        history_only = sorted(history.items(), key=lambda item: (-item[1], item[0]))
        cat_to_index[feature] = {
            value: next_index + i
            for i, (value, _) in enumerate([*ordered, *history_only])
        }
        next_index += len(ordered) + len(history_only)
        mode = ordered[0][0] if ordered else None
        default_values[feature] = mode if fit.categorical_default == "mode" else None
    return cat_to_index, default_values


def fit_transforms(
    chunks: Iterable[pd.DataFrame], schema: RawSchema, params: Mapping[str, Any]
) -> tuple[dict[str, dict[str, int]], dict[str, dict], dict[str, Any]]:
    """Fit the vocabulary, the min-max scaling and the default values.

    Args:
        chunks: Normalised raw training orders, one DataFrame per chunk.
        schema: The raw contract.
        params: The ``fit_transforms`` parameters (see ``FitParams``).

    Returns:
        ``(cat_to_index, scaling, default_values)``, plain JSON-serialisable dicts.

    Raises:
        ValueError: When there are no training rows, or a parameter or a numerical
            column is invalid.
        KeyError: When a feature column of the schema is absent.
    """
    fit = FitParams.from_params(params)
    unknown = set(fit.default_overrides) - {
        *schema.cat_features,
        *schema.num_features,
        *schema.eng_features,
    }
    if unknown:
        raise ValueError(
            f"fit_transforms.default_overrides names unknown features {sorted(unknown)}"
        )
    acc = _Accumulator(schema, fit)
    for chunk in chunks:
        acc.add(chunk)
    if acc.rows == 0:
        raise ValueError("cannot fit transforms: the training chunks hold no rows")

    cat_to_index, default_values = _vocabulary(acc, schema, fit)

    scaling: dict[str, dict] = {"sequence": {}, "dense": {}}
    for family, features in (
        ("sequence", schema.num_features),
        ("dense", schema.eng_features),
    ):
        for feature in features:
            if feature not in acc.minimum:
                logger.warning(
                    "feature %r has no finite training value; scaling [0, 1], "
                    "default 0",
                    feature,
                )
                scaling[family][feature] = {"min": 0.0, "max": 1.0}
                default_values[feature] = 0.0
                continue
            if fit.log_scaled(feature):
                # signed_log1p is increasing: the bounds of the transformed values
                # are the transformed bounds.
                scaling[family][feature] = {
                    "min": float(signed_log1p(acc.minimum[feature])),
                    "max": float(signed_log1p(acc.maximum[feature])),
                    "transform": SIGNED_LOG1P,
                }
            else:
                scaling[family][feature] = {
                    "min": acc.minimum[feature],
                    "max": acc.maximum[feature],
                }
            if fit.numerical_default == "median":
                default_values[feature] = float(
                    np.median(np.concatenate(acc.samples[feature]))
                )
            else:
                default_values[feature] = 0.0

    for feature, value in fit.default_overrides.items():
        default_values[feature] = _configured_default(feature, value, schema)
    logger.info(
        "fitted transforms on %d training rows: %d categorical indices",
        acc.rows,
        vocabulary_size(cat_to_index) - 1,
    )
    return cat_to_index, scaling, default_values


def vocabulary_size(cat_to_index: Mapping[str, Mapping[str, int]]) -> int:
    """Number of categorical embedding rows: the largest index plus one (for 0)."""
    return 1 + max(
        (i for vocab in cat_to_index.values() for i in vocab.values()), default=0
    )
