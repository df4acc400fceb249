"""Vectorised conversion of raw orders into the model's tensors.

``build_tensors`` turns a DataFrame of normalised raw orders (the ``<split>.raw_chunks``
contract, docs/source/architecture.md) into the tensor bundle the model reads. The same
function serves training preprocessing (many orders, labels required) and the inference
handler (one order, no label), so both produce identical tensors.

How it stays vectorised: every history column is split in bulk by Arrow
(``split_pattern``), which yields one flat array of tokens plus per-order offsets; the
tokens are encoded with one Arrow call per column (``index_in`` against the feature's
vocabulary, or a ``cast`` to float64 after a null-token mask found from the token
lengths). All history columns of an order hold as many values as its history
timestamps (rows that do not are dropped as ragged), so the encoded tokens of every
column of an id type are staged token-major in the timestamps' layout. The tokens to
keep (the last ``seq_len - 1`` of each history) and their destination rows in the
preallocated output are computed once per id type from the history lengths, and one
row gather per staged array moves them into place. There is no Python loop over orders,
only over columns.

Requests take a second route to the same tensors (``columns_together=True``, what
the inference handler passes): there per-column calls rather than tokens are the cost
(a production request has hundreds of columns of a few tokens each), so all text
columns are converted to Arrow in one call and each kind of history column (categorical, numerical) of an id type is
split in one call, the numerical tokens parsed and scaled in one call
(``_stage_together``), and the categorical tokens of all features (history and current
order) looked up in one call against one hash index of every feature's vocabulary
(``_CombinedLookup``, built on first use and kept). Chunks go column by column,
releasing each column's text once staged, which bounds a worker's memory.

Per order and id type (``cid``, ``ccid``) the sequence is the history (oldest first)
followed by the current order, truncated to the last ``seq_len`` rows and left-padded
with zeros. Numerical rows carry two extra trailing columns: the time delta
``t_current - t_k`` in seconds, capped at ``delta_cap_seconds``, and a 1/0 real-row flag.

Rejected rows (dropped and counted in ``stats["dropped"]``, first matching reason wins):

- ``unlabelled``: null or -1 label (only when labels are required);
- ``ragged_history_<id_type>``: a history column holds a different number of values
  than the history's timestamps (or values where the history is empty);
- ``missing_history_timestamp_<id_type>``: a history timestamp is a null token;
- ``negative_delta_<id_type>``: a history order is later than the current order.

Rejected inputs (``ValueError``/``KeyError`` naming the column): a missing column, a
label outside {0, 1, -1, null}, a null current-order timestamp, a numerical value or
history token that does not parse as a number. This module imports neither Kedro nor R.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tsa_kedro.features.contract import (
    CAT_PREFIX,
    DENSE_KEY,
    EXTRA_NUM_COLUMNS,
    LABEL_KEY,
    NUM_PREFIX,
    ORDER_ID_KEY,
)
from tsa_kedro.features.raw_orders import columns_as_text, is_object
from tsa_kedro.features.transforms import SIGNED_LOG1P, signed_log1p, vocabulary_size
from tsa_kedro.schema import ID_TYPES, RawSchema

DROP_REASONS = (
    "unlabelled",
    *(f"ragged_history_{t}" for t in ID_TYPES),
    *(f"missing_history_timestamp_{t}" for t in ID_TYPES),
    *(f"negative_delta_{t}" for t in ID_TYPES),
)
# Bins of the time-delta summary: a minute, an hour, a day, a week, 30 days, a year.
DELTA_BIN_EDGES = (0.0, 60.0, 3600.0, 86400.0, 604800.0, 2592000.0, 31536000.0)


@dataclass(frozen=True)
class TensorParams:
    """Shape parameters of the tensors (from the ``preprocess`` parameters).

    Attributes:
        seq_len: Rows per sequence, the current order included.
        delta_cap_seconds: Time deltas above this are set to it.
        scaled_clip: Scaled numericals (0..1 over the training range) are clipped to
            ``[-scaled_clip, 1 + scaled_clip]``: a value far outside what training
            saw (an amount of 1e308) cannot push the network anywhere it never was.
            Clipped values are counted per feature (``stats["clipped"]``).
    """

    seq_len: int
    delta_cap_seconds: float = 1e7
    scaled_clip: float = 3.0

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> TensorParams:
        """Read ``seq_len``, ``delta_cap_seconds`` and ``scaled_clip``; other keys
        are ignored."""
        seq_len = params.get("seq_len")
        if not isinstance(seq_len, int) or isinstance(seq_len, bool) or seq_len < 1:
            raise ValueError(
                f"preprocess.seq_len must be an integer >= 1, got {seq_len!r}"
            )
        cap = float(params.get("delta_cap_seconds", 1e7))
        if not cap > 0:
            raise ValueError(f"preprocess.delta_cap_seconds must be > 0, got {cap!r}")
        clip = params.get("scaled_clip", 3.0)
        if isinstance(clip, bool) or not isinstance(clip, int | float) or not clip > 0:
            raise ValueError(
                f"preprocess.scaled_clip must be a number > 0, got {clip!r}"
            )
        return cls(seq_len=seq_len, delta_cap_seconds=cap, scaled_clip=float(clip))


PRESENT, MISSING, UNSEEN = 0, 1, 2  # status of a categorical value


@dataclass(frozen=True)
class _Categorical:
    """One lookup finds a token's index and whether it is a null token."""

    lookup: pa.Array  # the feature's known values, then the null tokens
    codes: np.ndarray  # index per lookup position, plus 0 for "not found" (last)
    status: np.ndarray  # PRESENT / MISSING per lookup position, UNSEEN (last)
    default_code: int  # index used for a missing value (0 when none)
    # the same for history tokens that may end with the (one-byte) separator
    # (``_split_in_place``): each entry without the separator, then with it appended
    history: _Categorical | None = None


def _history_encoder(encoder: _Categorical, separator: str) -> _Categorical:
    """``encoder`` for tokens split in place, which keep their trailing separator.

    A value holding the separator can never be a history token (splitting breaks it),
    so such entries are left out; the others appear as themselves and followed by the
    separator, with the same code and status.
    """
    values = encoder.lookup.to_pylist()
    kept = [i for i, value in enumerate(values) if separator not in value]
    entries = [values[i] for i in kept]
    position = np.asarray([*kept, *kept, len(values)], dtype=np.intp)
    return _Categorical(
        lookup=pa.array([*entries, *(e + separator for e in entries)], pa.string()),
        codes=encoder.codes[position],
        status=encoder.status[position],
        default_code=encoder.default_code,
    )


class _CombinedLookup:
    """Every categorical feature's lookup table in one hash index (requests).

    A request holds a few tokens per categorical column across hundreds of columns;
    ``_lookup`` per column then costs mostly its fixed overhead and hashing the
    feature's vocabulary. Here the keys are ``"<feature>\x1f<value>"`` over all
    features, in one pandas ``Index`` whose hash table is built on the first lookup
    and kept, so one call finds the tokens of every feature. Positions follow
    ``_lookup``: a feature's value, its null tokens (missing), not found (unseen), and
    a null token value as the feature's first null token (as unseen if it has none).
    """

    def __init__(self, encoders: Mapping[str, _Categorical]):
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

    categorical: dict[str, _Categorical]
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
    combined: _CombinedLookup  # the categorical lookups together, for requests


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
        encoder = _Categorical(
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
        combined=_CombinedLookup(categorical),
    )


def _arrow_text(raw: pd.DataFrame, column: str) -> pa.Array:
    """A text column as one Arrow string array (nulls kept)."""
    if column not in raw.columns:
        raise KeyError(f"raw orders lack the column {column!r}")
    values = raw[column]
    try:
        if values.dtype == object:  # the common case: skip type inference
            try:
                array = pa.array(values.to_numpy(), type=pa.string(), from_pandas=True)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                array = pa.array(values, from_pandas=True)
        else:
            array = pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ValueError(f"raw column {column!r} must hold text: {exc}") from exc
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if array.type != pa.string():
        try:
            array = array.cast(pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ValueError(f"raw column {column!r} must hold text: {exc}") from exc
    return array


def _all_text_columns(raw: pd.DataFrame) -> dict[str, pa.Array]:
    """Every object column, converted to Arrow text in one call when all of them
    hold only text and nulls; otherwise none (``_arrow_text`` then converts each
    column, or names the one it cannot convert)."""
    objects = [c for c, dtype in raw.dtypes.items() if is_object(dtype)]
    text = columns_as_text(raw, objects, pa.string()) if objects else None
    if text is None:
        return {}
    rows = len(raw)
    return {c: text.slice(i * rows, rows) for i, c in enumerate(objects)}


class _Columns:
    """The raw orders, each text column converted to Arrow at most once per build."""

    def __init__(self, raw: pd.DataFrame, together: bool):
        self.frame = raw
        self.together = together  # columns of a kind converted and looked up at once
        self._texts: dict[str, pa.Array] = _all_text_columns(raw) if together else {}

    def __len__(self) -> int:
        return len(self.frame)

    def text(self, column: str) -> pa.Array:
        if column not in self._texts:
            self._texts[column] = _arrow_text(self.frame, column)
        return self._texts[column]

    def history_text(self, column: str) -> pa.Array:
        """A history column with null read as "" (no history)."""
        text = self.text(column)
        return pc.fill_null(text, "") if text.null_count else text

    def release(self, column: str) -> None:
        """Forget a converted column once it is no longer needed."""
        self._texts.pop(column, None)

    def numbers(self, column: str) -> np.ndarray:
        return _numbers(self.frame, column)


def _numbers(raw: pd.DataFrame, column: str) -> np.ndarray:
    """A numerical column as float64 (NaN for missing)."""
    if column not in raw.columns:
        raise KeyError(f"raw orders lack the column {column!r}")
    try:
        return raw[column].to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"raw column {column!r} must be numeric, got dtype {raw[column].dtype}"
        ) from exc


def _matrix(raw: _Columns, features: tuple[str, ...], rows: np.ndarray) -> np.ndarray:
    """Numerical columns of the kept rows as a float64 ``[rows, features]`` matrix.

    All columns are converted in one call when they allow it: a request of one order
    has hundreds of numerical columns, and there the per-column access, not the
    conversion, is the cost. Otherwise column by column, which names the column at
    fault (missing or not numeric).
    """
    frame = raw.frame
    if all(feature in frame.columns for feature in features):
        try:
            block = frame[list(features)].to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError):
            pass  # some column is not numeric: the loop below names it
        else:
            if block.shape[1] == len(features):  # no repeated column names
                return block[rows]
    matrix = np.empty((rows.size, len(features)), dtype=np.float64)
    for i, feature in enumerate(features):
        matrix[:, i] = raw.numbers(feature)[rows]
    return matrix


def _token_lengths(tokens: pa.Array) -> np.ndarray:
    """Byte length of each token, read from the offsets buffer (no Arrow kernel)."""
    if not len(tokens) or not (
        pa.types.is_string(tokens.type) or pa.types.is_large_string(tokens.type)
    ):
        return np.asarray(pc.fill_null(pc.binary_length(tokens), 0), dtype=np.int64)
    width = np.int64 if pa.types.is_large_string(tokens.type) else np.int32
    offsets = np.frombuffer(
        tokens.buffers()[1], dtype=width, count=tokens.offset + len(tokens) + 1
    )
    return np.diff(offsets[tokens.offset :])


def _null_token_mask(tokens: pa.Array, null_tokens: pa.Array) -> np.ndarray:
    """True where a token is null or a null token.

    Candidates are found by length first: only tokens as long as some null token are
    compared, so a column without null tokens costs one pass over its offsets.
    """
    lengths = _token_lengths(tokens)
    missing = np.zeros(len(tokens), dtype=bool)
    for null in null_tokens.to_pylist():
        size = len(null.encode())
        if size == 0:
            missing |= lengths == 0
            continue
        candidates = np.flatnonzero(lengths == size)
        if candidates.size:
            same = pc.equal(tokens.take(pa.array(candidates)), null)
            missing[candidates[np.asarray(pc.fill_null(same, False))]] = True
    if tokens.null_count:
        missing |= np.asarray(tokens.is_null())
    return missing


def _masked(tokens: pa.Array, missing: np.ndarray) -> pa.Array:
    """``tokens`` with the ``missing`` ones turned into nulls."""
    if (
        tokens.type == pa.string()
        and tokens.offset == 0
        and tokens.null_count == 0
        and len(tokens)
    ):
        # same buffers, new validity bitmap: no copy of the text
        validity = pa.py_buffer(np.packbits(~missing, bitorder="little"))
        _, offsets, data = tokens.buffers()
        return pa.StringArray.from_buffers(len(tokens), offsets, data, validity)
    return pc.if_else(pa.array(missing), pa.scalar(None, tokens.type), tokens)


def _parse_tokens(tokens: pa.Array, null_tokens: pa.Array, column: str) -> np.ndarray:
    """Text tokens as float64, NaN for null tokens; unparsable text is an error."""
    missing = _null_token_mask(tokens, null_tokens)
    cleaned = _masked(tokens, missing) if missing.any() else tokens
    try:
        values = pc.cast(cleaned, pa.float64())
    except pa.ArrowInvalid as exc:
        raise ValueError(f"column {column!r} holds a non-numeric value: {exc}") from exc
    return values.to_numpy(zero_copy_only=False)


def _lookup(tokens: pa.Array, encoder: _Categorical) -> np.ndarray:
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


def _impute_scale(
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


def _labels(raw: _Columns, column: str) -> np.ndarray:
    """Labels as int8 with -1 for unlabelled; other values are rejected."""
    values = raw.numbers(column)
    unlabelled = np.isnan(values) | (values == -1)
    bad = ~unlabelled & (values != 0) & (values != 1)
    if bad.any():
        examples = sorted(set(values[bad].tolist()))[:5]
        raise ValueError(
            f"label column {column!r} must hold 0, 1, -1 or null; found {examples}"
        )
    return np.where(unlabelled, -1, values).astype(np.int8)


@dataclass
class _History:
    """Lengths, validity and the staged, encoded tokens of one id type.

    The tokens of every history column are staged token-major in the layout of the
    history timestamps (row ``r``'s tokens at ``offsets[r]:offsets[r + 1]``), so one
    row gather per array moves them into the output, whatever the number of features.
    """

    length: np.ndarray  # history orders per row
    ragged: np.ndarray
    missing_time: np.ndarray
    negative: np.ndarray
    offsets: np.ndarray  # int64 start of each row's tokens in the staged arrays
    delta: np.ndarray  # float64 ``t_current - t_k`` per staged token
    cat: np.ndarray | None  # int32 [tokens, n_cat] codes
    status: np.ndarray | None  # int8 [tokens, n_cat] PRESENT / MISSING / UNSEEN
    num: np.ndarray | None  # float32 [tokens, n_num + 2] scaled values, delta, 1


def _split(
    raw: _Columns, column: str, sep: str
) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Split one history column (converted text released once split).

    Returns the flat tokens, the int64 offsets of each row's tokens (``rows + 1``
    entries, from 0) and the rows whose text is empty. An empty text splits into one
    empty token, like ``str.split``.
    """
    text = raw.history_text(column)
    raw.release(column)
    lists = pc.split_pattern(text, sep)
    offsets = lists.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
    tokens = lists.flatten()
    offsets -= offsets[0]
    empty = np.asarray(pc.binary_length(text)) == 0
    return tokens, offsets, empty


def _split_in_place(
    raw: _Columns, column: str, sep: str
) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """``_split`` without copying the text, for a one-byte separator.

    The tokens are new offsets into the column's own text buffer, so every token but
    the last of a row keeps its trailing separator (``"a~b"`` gives ``"a~"``, ``"b"``);
    ``_history_encoder`` tables match both forms. Token counts, offsets and empty rows
    are those of ``_split``.
    """
    text = raw.history_text(column)
    raw.release(column)
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    large = pa.types.is_large_string(text.type)
    width = np.int64 if large else np.int32
    rows = len(text)
    _, offset_buffer, data_buffer = text.buffers()
    text_offsets = np.frombuffer(
        offset_buffer, dtype=width, count=text.offset + rows + 1
    )[text.offset :].astype(np.int64)
    start, end = int(text_offsets[0]), int(text_offsets[-1])
    data = np.frombuffer(data_buffer, dtype=np.uint8, count=end)[start:]
    separators = np.flatnonzero(data == ord(sep)) + start
    before = np.searchsorted(separators, text_offsets)  # separators before each row
    offsets = np.arange(rows + 1) + before  # first token of each row
    tokens = int(offsets[-1])
    bounds = np.empty(tokens + 1, dtype=width)
    follows_separator = np.ones(tokens, dtype=bool)
    follows_separator[offsets[:-1]] = False
    bounds[offsets[:-1]] = text_offsets[:-1]
    bounds[:-1][follows_separator] = separators + 1
    bounds[-1] = end
    array_type = pa.LargeStringArray if large else pa.StringArray
    values = array_type.from_buffers(tokens, pa.py_buffer(bounds), data_buffer)
    return values, offsets, np.diff(text_offsets) == 0


def _aligned(
    offsets: np.ndarray, reference: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Token positions of ``rows`` in a column (``offsets``) and in the staged layout."""
    counts = np.diff(reference)[rows]
    rank = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    return (
        np.repeat(offsets[rows], counts) + rank,
        np.repeat(reference[rows], counts) + rank,
    )


def _scan_history(
    raw: _Columns,
    schema: RawSchema,
    prepared: PreparedTransforms,
    id_type: str,
    now: np.ndarray,
    params: TensorParams,
) -> _History:
    """Split, check, encode and stage every history column of ``id_type`` once."""
    sep = schema.separator
    time_column = schema.history_timestamp_column(id_type)
    time_tokens, offsets, empty = _split(raw, time_column, sep)
    counts = np.diff(offsets)
    length = np.where(empty, 0, counts)

    id_column = schema.history_order_id_column(id_type)
    id_text = raw.history_text(id_column)
    raw.release(id_column)
    id_counts = pc.count_substring(id_text, sep).to_numpy(zero_copy_only=False) + 1
    id_empty = np.asarray(pc.binary_length(id_text)) == 0
    ragged = np.where(length == 0, ~id_empty, id_counts != length)

    times = _parse_tokens(time_tokens, prepared.null_tokens, time_column)
    del time_tokens
    tokens = times.size
    token_row = np.repeat(np.arange(len(raw)), counts)
    real = np.repeat(length > 0, counts)
    delta = now[token_row] - times
    missing_time = np.zeros(len(raw), dtype=bool)
    missing_time[token_row[real & np.isnan(times)]] = True
    negative = np.zeros(len(raw), dtype=bool)
    negative[token_row[real & (delta < 0)]] = True
    del token_row, real, times

    n_cat, n_num = len(prepared.categorical), prepared.seq_min.size
    cat = np.zeros((tokens, n_cat), dtype=np.int32)
    status = np.zeros((tokens, n_cat), dtype=np.int8)
    num = np.zeros((tokens, n_num + EXTRA_NUM_COLUMNS), dtype=np.float32)
    num[:, n_num] = np.minimum(delta, params.delta_cap_seconds)
    num[:, n_num + 1] = 1.0
    staged = _History(
        length=length,
        ragged=ragged,
        missing_time=missing_time,
        negative=negative,
        offsets=offsets,
        delta=delta,
        cat=cat,
        status=status,
        num=num,
    )
    if raw.together:
        _stage_together(raw, schema, prepared, id_type, staged)
    else:
        _stage_by_column(raw, schema, prepared, id_type, staged)
    return staged


def _stage_by_column(
    raw: _Columns,
    schema: RawSchema,
    prepared: PreparedTransforms,
    id_type: str,
    history: _History,
) -> None:
    """Encode and stage the feature columns of ``id_type`` one at a time."""
    sep, n_cat = schema.separator, len(prepared.categorical)
    offsets, length, ragged = history.offsets, history.length, history.ragged
    cat, status, num = history.cat, history.status, history.num
    counts = np.diff(offsets)
    for i, feature in enumerate(schema.seq_features):
        column = schema.history_column(id_type, feature)
        encoder = prepared.categorical.get(feature)
        in_place = encoder is not None and encoder.history is not None
        split = _split_in_place if in_place else _split
        values, column_offsets, column_empty = split(raw, column, sep)
        column_counts = np.diff(column_offsets)
        ragged |= np.where(length == 0, ~column_empty, column_counts != length)
        # a column agrees with the timestamps on every row but its ragged ones: only
        # the tokens of agreeing rows are staged (ragged rows are dropped anyway)
        source = target = slice(None)
        if not np.array_equal(column_counts, counts):
            source, target = _aligned(
                column_offsets, offsets, np.flatnonzero(column_counts == counts)
            )
        if i < n_cat:
            encoder = encoder.history if in_place else encoder
            position = _lookup(values, encoder)[source]
            cat[target, i] = encoder.codes[position]
            status[target, i] = encoder.status[position]
        else:
            j = i - n_cat
            parsed = _parse_tokens(values, prepared.null_tokens, column)[source]
            num[target, j] = _impute_scale(
                parsed,
                prepared.seq_min[j],
                prepared.seq_span[j],
                prepared.seq_default[j],
                prepared.seq_log[j],
            )


def _split_together(
    raw: _Columns, columns: list[str], sep: str
) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """``_split`` of several history columns at once, feature-major.

    Returns the flat tokens, the int64 token offsets of every (column, row) cell
    (``len(columns) * rows + 1`` entries, from 0) and the empty cells as a
    ``[columns, rows]`` bool array.
    """
    texts = [raw.history_text(column) for column in columns]
    for column in columns:
        raw.release(column)
    text = pa.concat_arrays(texts)
    lists = pc.split_pattern(text, sep)
    offsets = lists.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
    offsets -= offsets[0]
    empty = np.asarray(pc.binary_length(text)) == 0
    return lists.flatten(), offsets, empty.reshape(len(columns), len(raw))


def _stage_together(
    raw: _Columns,
    schema: RawSchema,
    prepared: PreparedTransforms,
    id_type: str,
    history: _History,
) -> None:
    """``_stage_by_column`` with each kind of column split (and the numerical ones
    parsed and scaled) in one pass: a request of one order has hundreds of history
    columns of a few tokens each, where per-column calls, not tokens, are the cost.
    Same tensors, same errors naming the column."""
    sep, rows = schema.separator, len(raw)
    if rows == 0:
        return
    n_cat = len(prepared.categorical)
    offsets, length = history.offsets, history.length
    counts = np.diff(offsets)
    kinds = (schema.seq_features[:n_cat], schema.seq_features[n_cat:])
    for first, features in zip((0, n_cat), kinds, strict=True):
        if not features:
            continue
        columns = [schema.history_column(id_type, f) for f in features]
        tokens, cells, empty = _split_together(raw, columns, sep)
        cell_counts = np.diff(cells).reshape(len(features), rows)
        history.ragged |= np.where(length == 0, ~empty, cell_counts != length).any(0)
        starts = cells[::rows]  # first token of each column (and the end)

        def aligned(k: int) -> tuple[slice | np.ndarray, slice | np.ndarray]:
            """Source tokens of column k (within its own tokens) and target rows:
            only rows whose token count agrees with the timestamps."""
            if np.array_equal(cell_counts[k], counts):
                return slice(None), slice(None)
            own = cells[k * rows : (k + 1) * rows + 1] - starts[k]
            return _aligned(own, offsets, np.flatnonzero(cell_counts[k] == counts))

        if first == 0:
            feature = [prepared.combined.features[f] for f in features]
            codes, status = prepared.combined.encode(
                tokens, np.repeat(feature, np.diff(starts))
            )
            if (cell_counts == counts).all():  # the common case: no ragged row
                history.cat[:] = codes.reshape(len(features), -1).T
                history.status[:] = status.reshape(len(features), -1).T
                continue
            for k in range(len(features)):
                source, target = aligned(k)
                own = slice(int(starts[k]), int(starts[k + 1]))
                history.cat[target, k] = codes[own][source]
                history.status[target, k] = status[own][source]
            continue
        try:
            parsed = _parse_tokens(tokens, prepared.null_tokens, columns[0])
        except ValueError:
            for k, column in enumerate(columns):  # raises naming the column at fault
                own = tokens.slice(int(starts[k]), int(starts[k + 1] - starts[k]))
                _parse_tokens(own, prepared.null_tokens, column)
            raise
        scale = (
            prepared.seq_min,
            prepared.seq_span,
            prepared.seq_default,
            prepared.seq_log,
        )
        if (cell_counts == counts).all():  # the common case: one scaling call
            values = parsed.reshape(len(features), -1).T  # (tokens, n_num)
            history.num[:, : len(features)] = _impute_scale(values, *scale)
            continue
        for k in range(len(features)):
            source, target = aligned(k)
            own = parsed[starts[k] : starts[k + 1]][source]
            history.num[target, k] = _impute_scale(own, *(a[k] for a in scale))


@dataclass
class _Gather:
    """Where the kept history tokens of one id type come from and go to."""

    source_row: np.ndarray  # input row of each kept token
    within: np.ndarray  # index of the token inside its row's history
    target: np.ndarray  # flat cell ``out_row * seq_len + position`` in the output


def _gather_plan(length: np.ndarray, rows: np.ndarray, seq_len: int) -> _Gather:
    """Keep the last ``seq_len - 1`` history orders of each kept row, left-padded."""
    n = length[rows]
    kept = np.minimum(n, seq_len - 1)
    total = int(kept.sum())
    first = np.cumsum(kept) - kept
    rank = np.arange(total) - np.repeat(first, kept)  # 0 .. kept-1 within the row
    within = np.repeat(n - kept, kept) + rank
    position = np.repeat(seq_len - 1 - kept, kept) + rank
    out_row = np.repeat(np.arange(len(rows)), kept)
    return _Gather(
        source_row=np.repeat(rows, kept),
        within=within,
        target=out_row * seq_len + position,
    )


def _delta_summary(deltas: np.ndarray, cap: float) -> dict[str, Any]:
    """Mergeable summary of the real history rows' uncapped time deltas."""
    edges = np.asarray((*DELTA_BIN_EDGES, np.inf))
    histogram, _ = np.histogram(deltas, bins=edges)
    return {
        "count": int(deltas.size),
        "sum": float(deltas.sum()),
        "min": float(deltas.min()) if deltas.size else None,
        "max": float(deltas.max()) if deltas.size else None,
        "capped": int(np.count_nonzero(deltas > cap)),
        "bin_edges_seconds": list(DELTA_BIN_EDGES),
        "histogram": histogram.tolist(),
    }


class _CategoryCounts:
    """Present and unseen categorical values per feature (for the report)."""

    def __init__(self, schema: RawSchema):
        self.unseen = dict.fromkeys(schema.cat_features, 0)
        self.present = dict.fromkeys(schema.cat_features, 0)

    def add(self, feature: str, status: np.ndarray) -> None:
        self.present[feature] += int(np.count_nonzero(status != MISSING))
        self.unseen[feature] += int(np.count_nonzero(status == UNSEEN))

    def add_all(self, status: np.ndarray) -> None:
        """Statuses of every feature at once, ``[values, n_cat]``."""
        present = np.count_nonzero(status != MISSING, axis=0)
        unseen = np.count_nonzero(status == UNSEEN, axis=0)
        for i, feature in enumerate(self.present):
            self.present[feature] += int(present[i])
            self.unseen[feature] += int(unseen[i])

    def counts(self) -> dict[str, dict[str, int]]:
        return {
            f: {"unseen": self.unseen[f], "present": self.present[f]}
            for f in self.unseen
        }


def _select_rows(
    raw: _Columns,
    schema: RawSchema,
    transforms: PreparedTransforms,
    now: np.ndarray,
    params: TensorParams,
    labels: bool,
) -> tuple[np.ndarray, np.ndarray | None, dict[str, _History], dict[str, int]]:
    """Apply the label filter and the history checks, first reason wins.

    Returns:
        Kept row positions, labels (-1 = unlabelled; None without labels), the
        scanned histories and the drop counts by reason.
    """
    dropped = dict.fromkeys(DROP_REASONS, 0)
    keep = np.ones(len(raw), dtype=bool)

    def drop(reason: str, mask: np.ndarray) -> None:
        newly = keep & mask
        dropped[reason] += int(np.count_nonzero(newly))
        keep[newly] = False

    y = None
    if labels:
        y = _labels(raw, schema.label)
        drop("unlabelled", y < 0)
    history = {
        t: _scan_history(raw, schema, transforms, t, now, params) for t in ID_TYPES
    }
    for check, reason in (
        ("ragged", "ragged_history"),
        ("missing_time", "missing_history_timestamp"),
        ("negative", "negative_delta"),
    ):
        for id_type in ID_TYPES:
            drop(f"{reason}_{id_type}", getattr(history[id_type], check))
    return np.flatnonzero(keep), y, history, dropped


def _sequences(
    hist: _History,
    *,
    counts: _CategoryCounts,
    rows: np.ndarray,
    seq_len: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The history rows of one id type's sequences, row-major like the output.

    Returns ``(cat [rows * seq_len, n_cat], num [rows * seq_len, n_num + 2],
    deltas)``: the kept staged tokens gathered row by row into their cells, the rest
    zero. The staged arrays are released once used.
    """
    gather = _gather_plan(hist.length, rows, seq_len)
    source = hist.offsets[gather.source_row] + gather.within
    counts.add_all(hist.status[source])
    hist.status = None
    cat = np.zeros((rows.size * seq_len, hist.cat.shape[1]), dtype=np.int32)
    cat[gather.target] = hist.cat[source]
    hist.cat = None
    num = np.zeros((rows.size * seq_len, hist.num.shape[1]), dtype=np.float32)
    num[gather.target] = hist.num[source]
    hist.num = None
    return cat, num, hist.delta[source]


def _current_categoricals(
    raw: _Columns,
    schema: RawSchema,
    transforms: PreparedTransforms,
    rows: np.ndarray,
    counts: _CategoryCounts,
) -> np.ndarray:
    """The kept rows' categorical codes, ``[rows, n_cat]`` int32; counts statuses."""
    features = schema.cat_features
    taken = pa.array(rows, type=pa.int64())
    if raw.together:  # all features in one lookup
        texts = [raw.text(feature) for feature in features]
        if rows.size < len(raw):
            texts = [text.take(taken) for text in texts]
        feature = [transforms.combined.features[f] for f in features]
        codes, status = transforms.combined.encode(
            pa.concat_arrays(texts), np.repeat(feature, rows.size)
        )
        counts.add_all(status.reshape(len(features), rows.size).T)
        return np.ascontiguousarray(codes.reshape(len(features), rows.size).T)
    current = np.empty((rows.size, len(features)), dtype=np.int32)
    for i, feature in enumerate(features):
        encoder = transforms.categorical[feature]
        position = _lookup(raw.text(feature).take(taken), encoder)
        current[:, i] = encoder.codes[position]
        counts.add(feature, encoder.status[position])
    return current


def _clip_scaled(
    bundle: dict[str, np.ndarray], schema: RawSchema, clip: float
) -> dict[str, int]:
    """Clip the scaled numericals of ``bundle`` to ``[-clip, 1 + clip]`` in place
    (sequence features of both id types, then the engineered ones); how many values
    each feature had outside that range."""
    low, high = -clip, 1.0 + clip
    n_num = len(schema.num_features)
    clipped = dict.fromkeys((*schema.num_features, *schema.eng_features), 0)
    blocks = [
        (bundle[NUM_PREFIX + t][..., :n_num], schema.num_features) for t in ID_TYPES
    ]
    blocks.append((bundle[DENSE_KEY], schema.eng_features))
    for values, features in blocks:
        outside = (values < low) | (values > high)
        if outside.any():
            per_feature = outside.reshape(-1, len(features)).sum(axis=0)
            for feature, count in zip(features, per_feature.tolist(), strict=True):
                clipped[feature] += count
            np.clip(values, low, high, out=values)
    return clipped


def build_tensors(
    raw: pd.DataFrame,
    schema: RawSchema,
    transforms: PreparedTransforms,
    params: TensorParams,
    labels: bool = True,
    columns_together: bool = False,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Turn normalised raw orders into the model's tensor bundle.

    Args:
        raw: Normalised raw orders (one row per order).
        schema: The raw contract.
        transforms: ``prepare_transforms`` of the fitted JSON transforms.
        params: Sequence length and time-delta cap.
        labels: Whether labels are required: unlabelled rows are dropped and ``Y`` is
            part of the bundle. Inference passes False (no label column needed).
        columns_together: The request route (the inference handler): all text
            columns converted in one call, each kind of history column of an id type
            split and parsed in one call, every categorical token looked up in one
            call. Otherwise column by column (chunks: each column's text released
            once staged, which bounds a worker's memory). The same tensors either way.

    Returns:
        ``(bundle, stats)``: the arrays of docs/source/architecture.md (``Y`` only with
        labels) and counts: ``rows_in``, ``rows_out``, ``dropped`` by reason,
        ``clipped`` scaled numericals by feature,
        ``positives``, per-feature ``unseen``/``present`` categorical counts, and the
        time-delta summary.

    Raises:
        KeyError: A column of the schema is absent.
        ValueError: A label, timestamp or numerical value is invalid (see module doc).
    """
    raw = _Columns(raw, columns_together)
    now = raw.numbers(schema.timestamp)
    if np.isnan(now).any():
        raise ValueError(f"timestamp column {schema.timestamp!r} holds null values")
    rows, y, history, dropped = _select_rows(
        raw, schema, transforms, now, params, labels
    )
    counts = _CategoryCounts(schema)

    # the current order is the last row of both sequences
    current_cat = _current_categoricals(raw, schema, transforms, rows, counts)
    current_num = _impute_scale(
        _matrix(raw, schema.num_features, rows),
        transforms.seq_min,
        transforms.seq_span,
        transforms.seq_default,
        transforms.seq_log,
    )
    n_cat, n_num = current_cat.shape[1], current_num.shape[1]
    seq_len = params.seq_len
    last = np.arange(rows.size) * seq_len + seq_len - 1  # the current order's cells

    bundle: dict[str, np.ndarray] = {}
    deltas = []
    for id_type in ID_TYPES:
        cat, num, delta = _sequences(
            history.pop(id_type), counts=counts, rows=rows, seq_len=seq_len
        )
        cat[last] = current_cat
        num[last, :n_num] = current_num
        num[last, n_num + 1] = 1.0  # the current order's delta stays 0
        bundle[CAT_PREFIX + id_type] = cat.reshape(rows.size, seq_len, n_cat)
        bundle[NUM_PREFIX + id_type] = num.reshape(
            rows.size, seq_len, n_num + EXTRA_NUM_COLUMNS
        )
        del cat, num
        deltas.append(delta)

    bundle[DENSE_KEY] = _impute_scale(
        _matrix(raw, schema.eng_features, rows),
        transforms.dense_min,
        transforms.dense_span,
        transforms.dense_default,
        transforms.dense_log,
    ).astype(np.float32)
    if y is not None:
        bundle[LABEL_KEY] = y[rows]
    order_ids = raw.frame[schema.order_id].to_numpy()[rows]
    bundle[ORDER_ID_KEY] = np.asarray(order_ids.astype(str), dtype=np.str_)

    stats = {
        "rows_in": len(raw),
        "rows_out": int(rows.size),
        "dropped": dropped,
        "clipped": _clip_scaled(bundle, schema, params.scaled_clip),
        "positives": (
            int(np.count_nonzero(bundle[LABEL_KEY] == 1)) if y is not None else None
        ),
        "unseen": counts.counts(),
        "delta": _delta_summary(np.concatenate(deltas), params.delta_cap_seconds),
    }
    return bundle, stats
