"""The fitted JSON transforms as lookup arrays, and the lookups themselves.

``prepare_transforms`` checks ``cat_to_index``, ``scaling`` and ``default_values``
against the schema once and builds ``PreparedTransforms``, used for many chunks or
requests: per categorical feature a lookup table (its vocabulary, then the null tokens
not in it) with the code and status (``PRESENT`` / ``MISSING`` / ``UNSEEN``) of each
position; per numerical family the min, span, default and ``signed_log1p`` flag of each
feature. ``lookup_positions`` finds one column's tokens in a feature's table,
``CombinedLookup`` the tokens of every feature in one call (the request route);
``impute_scale`` imputes and scales numericals; ``CategoryCounts`` counts the statuses
for the preprocessing report.

Rejected (``KeyError`` / ``ValueError`` naming the feature): a schema feature without a
vocabulary, scaling or default entry, and a scaling ``transform`` other than
``signed_log1p``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tsa_kedro.features.transforms import SIGNED_LOG1P, signed_log1p, vocabulary_size
from tsa_kedro.schema import RawSchema

PRESENT, MISSING, UNSEEN = 0, 1, 2  # status of a categorical value


@dataclass(frozen=True)
class CategoricalEncoder:
    """One lookup finds a token's index and whether it is a null token."""

    lookup: pa.Array  # the feature's known values, then the null tokens
    codes: np.ndarray  # index per lookup position, plus 0 for "not found" (last)
    status: np.ndarray  # PRESENT / MISSING per lookup position, UNSEEN (last)
    default_code: int  # index used for a missing value (0 when none)
    # the same for history tokens that may end with the (one-byte) separator
    # (``columns.split_column_in_place``): each entry without the separator, then
    # with it appended
    history: CategoricalEncoder | None = None


def _history_encoder(encoder: CategoricalEncoder, separator: str) -> CategoricalEncoder:
    """``encoder`` for tokens split in place, which keep their trailing separator.

    A value holding the separator can never be a history token (splitting breaks it),
    so such entries are left out; the others appear as themselves and followed by the
    separator, with the same code and status.
    """
    values = encoder.lookup.to_pylist()
    kept = [i for i, value in enumerate(values) if separator not in value]
    entries = [values[i] for i in kept]
    position = np.asarray([*kept, *kept, len(values)], dtype=np.intp)
    return CategoricalEncoder(
        lookup=pa.array([*entries, *(e + separator for e in entries)], pa.string()),
        codes=encoder.codes[position],
        status=encoder.status[position],
        default_code=encoder.default_code,
    )


class CombinedLookup:
    """Every categorical feature's lookup table in one hash index (requests).

    A request holds a few tokens per categorical column across hundreds of columns;
    ``lookup_positions`` per column then costs mostly its fixed overhead and hashing
    the feature's vocabulary. Here the keys are ``"<feature>\x1f<value>"`` over all
    features, in one pandas ``Index`` whose hash table is built on the first lookup
    and kept, so one call finds the tokens of every feature. Positions follow
    ``lookup_positions``: a feature's value, its null tokens (missing), not found
    (unseen), and a null token value as the feature's first null token (as unseen if
    it has none).
    """

    def __init__(self, encoders: Mapping[str, CategoricalEncoder]):
        self.features = {feature: i for i, feature in enumerate(encoders)}
        self._encoders = list(encoders.values())
        self._built: tuple | None = None

    def _build(self) -> tuple:
        first: dict[str, int] = {}  # key -> position of its first entry
        codes, status, missing, start = [], [], [], 0
        for i, encoder in enumerate(self._encoders):
            values = encoder.lookup.to_pylist()
            for position, value in enumerate(values, start):
                first.setdefault(f"{i}\x1f{value}", position)
            codes.append(encoder.codes[:-1])
            status.append(encoder.status[:-1])
            missing.append(np.flatnonzero(encoder.status[:-1] == MISSING)[:1] + start)
            start += len(values)
        missing = [m[0] if m.size else start for m in missing]
        built = (
            pd.Index(list(first), dtype=object),
            np.fromiter(first.values(), dtype=np.intp, count=len(first)),
            np.concatenate([*codes, np.zeros(1, np.int32)]),  # last: not found
            np.concatenate([*status, np.full(1, UNSEEN, np.int8)]),
            np.asarray(missing, dtype=np.intp),
            pa.array([f"{i}\x1f" for i in range(len(self._encoders))], pa.string()),
        )
        self._built = built
        return built

    def warm(self) -> None:
        """Build the index and its hash table now (a server's first request would)."""
        if self._encoders:
            self.encode(pa.array([""], pa.string()), np.zeros(1, np.intp))

    def encode(
        self, tokens: pa.Array, feature: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Codes (int32) and statuses (int8) of ``tokens``; ``feature[i]`` is the
        position (in ``features``) of token i's feature."""
        index, where, codes, status, missing, prefixes = self._built or self._build()
        keys = pc.binary_join_element_wise(
            prefixes.take(pa.array(feature, pa.int64())), tokens, ""
        )
        found = index.get_indexer(keys.to_numpy(zero_copy_only=False))
        position = np.where(found < 0, len(codes) - 1, where[found])
        if tokens.null_count:
            null = np.asarray(tokens.is_null())
            position[null] = missing[feature[null]]
        return codes[position], status[position]


@dataclass(frozen=True)
class PreparedTransforms:
    """The fitted JSON transforms turned into lookup arrays, ready for many chunks."""

    categorical: dict[str, CategoricalEncoder]
    seq_min: np.ndarray
    seq_span: np.ndarray
    seq_default: np.ndarray
    seq_log: np.ndarray  # bool per feature: signed_log1p before min-max
    dense_min: np.ndarray
    dense_span: np.ndarray
    dense_default: np.ndarray
    dense_log: np.ndarray
    null_tokens: pa.Array
    vocab_size: int
    combined: CombinedLookup  # the categorical lookups together, for requests


def _scaling_arrays(
    scaling: Mapping[str, Mapping[str, float]],
    defaults: Mapping[str, Any],
    features: tuple[str, ...],
    family: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(min, span, default, log flag) per feature.

    Rejected (``KeyError`` / ``ValueError`` naming the feature): a feature without a
    scaling or default entry, and a ``transform`` other than ``signed_log1p``.
    """
    minimum, span, default, log = [], [], [], []
    for feature in features:
        if feature not in scaling:
            raise KeyError(f"scaling[{family!r}] has no entry for feature {feature!r}")
        if feature not in defaults:
            raise KeyError(f"default_values has no entry for feature {feature!r}")
        entry = scaling[feature]
        transform = entry.get("transform")
        if transform not in (None, SIGNED_LOG1P):
            raise ValueError(
                f"scaling[{family!r}][{feature!r}] has an unknown transform "
                f"{transform!r}; known: {SIGNED_LOG1P!r} (or none)"
            )
        low, high = float(entry["min"]), float(entry["max"])
        minimum.append(low)
        # a constant training column scales to 0 instead of dividing by zero
        span.append(high - low if high > low else 1.0)
        default.append(float(defaults[feature]))
        log.append(transform == SIGNED_LOG1P)
    return (
        np.asarray(minimum, dtype=np.float64),
        np.asarray(span, dtype=np.float64),
        np.asarray(default, dtype=np.float64),
        np.asarray(log, dtype=bool),
    )


def prepare_transforms(
    cat_to_index: Mapping[str, Mapping[str, int]],
    scaling: Mapping[str, Mapping[str, Mapping[str, float]]],
    default_values: Mapping[str, Any],
    schema: RawSchema,
) -> PreparedTransforms:
    """Check the fitted transforms against the schema and build lookup arrays.

    Raises:
        KeyError: When a schema feature has no vocabulary, scaling or default entry.
    """
    categorical = {}
    for feature in schema.cat_features:
        if feature not in cat_to_index:
            raise KeyError(f"cat_to_index has no vocabulary for feature {feature!r}")
        vocab = cat_to_index[feature]
        if feature not in default_values:
            raise KeyError(f"default_values has no entry for feature {feature!r}")
        default = default_values[feature]
        default_code = int(vocab.get(default, 0)) if default is not None else 0
        nulls = [t for t in schema.null_tokens if t not in vocab]
        encoder = CategoricalEncoder(
            lookup=pa.array([*vocab, *nulls], type=pa.string()),
            codes=np.asarray(
                [*vocab.values(), *[default_code] * len(nulls), 0], dtype=np.int32
            ),
            status=np.asarray(
                [PRESENT] * len(vocab) + [MISSING] * len(nulls) + [UNSEEN], np.int8
            ),
            default_code=default_code,
        )
        if len(schema.separator.encode()) == 1:
            encoder = replace(
                encoder, history=_history_encoder(encoder, schema.separator)
            )
        categorical[feature] = encoder
    seq = _scaling_arrays(
        scaling.get("sequence", {}), default_values, schema.num_features, "sequence"
    )
    dense = _scaling_arrays(
        scaling.get("dense", {}), default_values, schema.eng_features, "dense"
    )
    return PreparedTransforms(
        categorical=categorical,
        seq_min=seq[0],
        seq_span=seq[1],
        seq_default=seq[2],
        seq_log=seq[3],
        dense_min=dense[0],
        dense_span=dense[1],
        dense_default=dense[2],
        dense_log=dense[3],
        null_tokens=pa.array(list(schema.null_tokens), type=pa.string()),
        vocab_size=vocabulary_size(cat_to_index),
        combined=CombinedLookup(categorical),
    )


def lookup_positions(tokens: pa.Array, encoder: CategoricalEncoder) -> np.ndarray:
    """Position of each token in the feature's lookup table (last: not found).

    Index ``encoder.codes`` and ``encoder.status`` with it; null values (only in
    current-order columns) point at the first null-token entry, i.e. missing.
    """
    not_found = len(encoder.codes) - 1
    position = pc.index_in(tokens, value_set=encoder.lookup)
    if position.null_count:
        position = pc.fill_null(position, not_found)
    position = position.to_numpy(zero_copy_only=False)
    if tokens.null_count:
        missing_position = int(np.flatnonzero(encoder.status == MISSING)[0])
        position = np.where(np.asarray(tokens.is_null()), missing_position, position)
    return position


def impute_scale(
    values: np.ndarray,
    minimum: np.ndarray,
    span: np.ndarray,
    default: np.ndarray,
    log: np.ndarray,
) -> np.ndarray:
    """Replace non-finite values by the defaults, take ``signed_log1p`` where ``log``
    says so, then min-max scale (all broadcasting over the last axis)."""
    values = np.where(np.isfinite(values), values, default)
    if np.any(log):
        values = np.where(log, signed_log1p(values), values)
    return (values - minimum) / span


class CategoryCounts:
    """Present and unseen categorical values per feature (for the report)."""

    def __init__(self, schema: RawSchema):
        self.unseen = dict.fromkeys(schema.cat_features, 0)
        self.present = dict.fromkeys(schema.cat_features, 0)

    def add(self, feature: str, status: np.ndarray) -> None:
        self.present[feature] += int(np.count_nonzero(status != MISSING))
        self.unseen[feature] += int(np.count_nonzero(status == UNSEEN))

    def add_all(self, status: np.ndarray) -> None:
        """Statuses of every feature at once, ``[n_cat, values]``."""
        present = np.count_nonzero(status != MISSING, axis=1)
        unseen = np.count_nonzero(status == UNSEEN, axis=1)
        for i, feature in enumerate(self.present):
            self.present[feature] += int(present[i])
            self.unseen[feature] += int(unseen[i])

    def counts(self) -> dict[str, dict[str, int]]:
        return {
            f: {"unseen": self.unseen[f], "present": self.present[f]}
            for f in self.unseen
        }
