"""Validation at the door and normalisation of raw order exports.

Every consumer of raw orders (ingest, preprocessing, the inference handler) calls
:func:`normalize_raw_orders`, so an export means the same thing everywhere. It needs only
numpy, pandas and pyarrow, and works on whole columns at once.

Normalised types (docs/source/architecture.md, "Raw orders"):

- order id, customer and card ids: text (object dtype; missing ids are ``None``);
- timestamp: int64 epoch seconds (fractions of a second are truncated);
- label: nullable ``Int8``: 0, 1 or null (unlabelled; ``-1``, null and null tokens);
- current-order numerical and engineered features: float64, missing = NaN;
- current-order categoricals: text, missing (null or a null token) = ``None``;
  integral numbers (``3.0``) become their integer text (``"3"``);
- history columns: text, exactly as exported (null tokens inside them are kept);
  a null history becomes ``""`` (no history);
- the categoricals of ``raw_schema.numeric_cat_features``, current order and every
  history token: one spelling per numeric code (``3.0``, `` 3 `` -> ``3``;
  ``tsa_kedro.features.numeric_codes``).

Columns outside the contract are dropped; contract columns keep ``RawSchema.all_columns()``
order.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tsa_kedro.features.numeric_codes import canonicalise_columns, column_batches
from tsa_kedro.schema import ID_TYPES, RawSchema

EXAMPLES = 5
DEFAULT_RAGGED_TOLERANCE = 0.001
FUTURE_SLACK_SECONDS = 86_400  # clocks of export jobs and servers may disagree a bit
# Characters that, inside a history token, suggest a separator other than the schema's.
OTHER_SEPARATORS = (",", ";", "|", "\t")
_LABELS = {"0": 0, "1": 1, "-1": -1, "0.0": 0, "1.0": 1, "-1.0": -1}


class RawDataError(ValueError):
    """A raw export violates the contract; the message names source, column and rows."""


def normalize_raw_orders(
    df: pd.DataFrame,
    schema: RawSchema,
    source: str,
    ragged_tolerance: float = DEFAULT_RAGGED_TOLERANCE,
    canonicalised: Counter | None = None,
    columns_together: bool = False,
) -> pd.DataFrame:
    """Validate one raw export (file, partition or request) and normalise its types.

    Args:
        df: Raw orders, typed or every column as text.
        schema: Column names of the raw contract.
        source: Where ``df`` comes from (file, partition, request), quoted in errors.
        ragged_tolerance: Largest share of rows whose history lists disagree in length
            (per id type) that passes; such rows are kept for preprocessing to drop.
            1 turns the check off (a caller that judges a larger batch itself).
        canonicalised: If given, gains per numeric-code feature the number of values
            (current-order cells and history tokens) rewritten to their one spelling.
        columns_together: Convert all text columns of a kind in one pass over all of
            them (requests: a request of one order has hundreds of columns, where
            per-column calls, not values, are the cost), instead of column by column
            (chunks: bounded memory). The same frame either way.

    Returns:
        A new frame with the contract's columns, in contract order, normalised.

    Raises:
        RawDataError: Rejected inputs: missing contract columns; missing order ids;
            missing (null, empty or null-token) customer or card ids; timestamps that
            are null, not numbers, not finite, before ``raw_schema.earliest_order_date``
            or more than a day in the future; labels outside {0, 1, -1, null, null
            tokens}; numerical or engineered values that are neither numbers nor null
            tokens, are infinite or exceed ``raw_schema.max_abs_number``; history
            tokens of numerical features or timestamps that are neither numbers nor
            null tokens (a wrong separator shows up here); more ragged histories than
            ``ragged_tolerance``.
    """
    check_columns(df, schema, source)
    order_ids = _order_ids(df, schema, source)
    out: dict[str, object] = {schema.order_id: order_ids}
    text_columns = [*(schema.id_columns[t] for t in ID_TYPES), *schema.cat_features]
    history_columns = [c for t in ID_TYPES for c in schema.history_columns(t)]
    texts = (
        _texts_together(df, text_columns, history_columns, schema.null_tokens)
        if columns_together
        else None
    )
    for column in text_columns[: len(ID_TYPES)]:
        out[column] = _text_of(texts, df, column, schema)
        _check_present(out[column], column, source, order_ids)
    out[schema.timestamp] = parse_timestamps(df, schema, source, order_ids)
    out[schema.label] = _labels(df, schema, source, order_ids)
    for column in schema.cat_features:
        out[column] = _text_of(texts, df, column, schema)
    out |= _number_columns(
        df,
        (*schema.num_features, *schema.eng_features),
        schema,
        source,
        order_ids,
        columns_together,
    )
    lengths: dict[str, np.ndarray] = {}
    check_ragged = ragged_tolerance < 1
    for column in history_columns:
        if texts is None:
            out[column], text = _history_text(df[column])
        else:
            out[column], text = texts[column]
        if check_ragged:
            lengths[column] = history_lengths(text, schema.separator)
    _check_magnitudes(out, schema, source, order_ids)
    _check_numeric_histories(out, schema, source, order_ids)
    counts = _canonicalise_numeric_codes(out, schema)
    if canonicalised is not None:
        canonicalised.update(counts)
    result = _assemble(out, len(df))
    if check_ragged:
        check_ragged_histories(result, schema, source, ragged_tolerance, lengths)
    return result


def _check_present(
    ids: np.ndarray, column: str, source: str, order_ids: np.ndarray
) -> None:
    """Raise ``RawDataError`` where a customer or card id is missing."""
    bad = pd.isna(ids) | (ids == "")
    if bad.any():
        raise RawDataError(
            f"{source}: column {column}: {int(bad.sum())} id(s) are missing (null, "
            f"empty or a null token) (order ids {_example_ids(order_ids, bad)})"
        )


def _check_magnitudes(
    out: dict[str, object], schema: RawSchema, source: str, order_ids: np.ndarray
) -> None:
    """Raise ``RawDataError`` naming the first numerical or engineered column with a
    value beyond ``raw_schema.max_abs_number``."""
    columns = [*schema.num_features, *schema.eng_features]
    if not columns or not len(order_ids):
        return
    block = np.stack([out[c] for c in columns])  # (columns, rows)
    with np.errstate(invalid="ignore"):
        beyond = np.abs(block) > schema.max_abs_number
    if beyond.any():
        first = int(np.flatnonzero(beyond.any(axis=1))[0])
        bad = beyond[first]
        raise RawDataError(
            f"{source}: column {columns[first]}: {int(bad.sum())} value(s) exceed "
            f"{schema.max_abs_number:g} in magnitude (raw_schema.max_abs_number), "
            f"e.g. {block[first][bad][:EXAMPLES].tolist()} "
            f"(order ids {_example_ids(order_ids, bad)})"
        )


def _check_numeric_histories(
    out: dict[str, object], schema: RawSchema, source: str, order_ids: np.ndarray
) -> None:
    """Raise ``RawDataError`` naming the first history column of a numerical feature
    or of timestamps holding a token that is neither a number nor a null token."""
    columns = [
        column
        for id_type in ID_TYPES
        for column in (
            *(schema.history_column(id_type, f) for f in schema.num_features),
            schema.history_timestamp_column(id_type),
        )
    ]
    rows = len(order_ids)
    for batch in column_batches(len(columns), rows):
        text = pa.concat_arrays(
            [
                pa.array(out[c], pa.large_string(), from_pandas=True)
                for c in columns[batch]
            ]
        )
        lists = pc.split_pattern(text, schema.separator)
        tokens = pc.list_flatten(lists)
        _, bad = _text_numbers(tokens, (*schema.null_tokens, ""))
        if not bad.any():
            continue
        parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
        first_cell = int(parents[np.flatnonzero(bad)[0]])
        column = columns[batch][first_cell // rows]
        in_column = np.zeros(rows, dtype=bool)
        cells = parents[bad]
        cells = cells[cells // rows == first_cell // rows] % rows
        in_column[cells] = True
        examples = tokens.filter(pa.array(bad)).to_pylist()[:EXAMPLES]
        hint = ""
        if any(sep in token for token in examples for sep in OTHER_SEPARATORS):
            hint = (
                f"; are the histories joined by raw_schema.separator "
                f"{schema.separator!r}?"
            )
        raise RawDataError(
            f"{source}: column {column}: history tokens of {int(in_column.sum())} "
            f"order(s) are neither numbers nor null tokens, e.g. {examples} "
            f"(order ids {_example_ids(order_ids, in_column)}){hint}"
        )


def _canonicalise_numeric_codes(out: dict[str, object], schema: RawSchema) -> Counter:
    """Rewrite the numeric-code categoricals of ``out`` (current order, then both
    histories) to one spelling per value, in place; the rewritten values by feature."""
    features = schema.numeric_cat_features
    counts: Counter = Counter()
    if not features:
        return counts
    current, rewritten = canonicalise_columns([out[f] for f in features], None)
    for feature, values, count in zip(features, current, rewritten, strict=True):
        out[feature] = values
        counts[feature] += count
    pairs = [(f, schema.history_column(t, f)) for t in ID_TYPES for f in features]
    histories, rewritten = canonicalise_columns(
        [out[column] for _, column in pairs], schema.separator
    )
    for (feature, column), values, count in zip(
        pairs, histories, rewritten, strict=True
    ):
        out[column] = values
        counts[feature] += count
    return counts


def _assemble(columns: dict[str, object], rows: int) -> pd.DataFrame:
    """``pd.DataFrame(columns)``, built from one 2-D block per numpy dtype.

    The same frame (columns, order, dtypes, C-contiguous blocks), without pandas'
    per-column checks and type inference: at production widths (833 columns) those cost
    a single-order request about 5 ms, four times the block construction. Object
    columns here hold text and nulls only, which inference leaves as they are.
    """
    index = pd.RangeIndex(rows)
    by_dtype: dict[np.dtype, list[str]] = {}
    other: dict[str, object] = {}
    for name, values in columns.items():
        if isinstance(values, np.ndarray) and values.ndim == 1:
            by_dtype.setdefault(values.dtype, []).append(name)
        else:  # extension arrays (the label's Int8)
            other[name] = values
    parts = [
        pd.DataFrame(
            np.stack([columns[name] for name in names]).T,  # a (rows, k) view
            columns=names,
            index=index,
            dtype=dtype,
        )
        for dtype, names in by_dtype.items()
    ]
    if other:
        parts.append(pd.DataFrame(other, index=index))
    frame = pd.concat(parts, axis=1, copy=False)
    return frame.reindex(columns=list(columns), copy=False)


def _texts_together(
    df: pd.DataFrame,
    text_columns: Sequence[str],
    history_columns: Sequence[str],
    null_tokens: Sequence[str],
) -> dict[str, object] | None:
    """``_text`` of every text column and ``_history_text`` (object text, Arrow text)
    of every history column, each computed once over all the columns together.

    Only for frames whose columns are all of object dtype and hold only text and
    nulls (what a JSON or CSV request gives); otherwise None, and the caller converts
    column by column (which also names a column it cannot read).
    """
    columns = [*text_columns, *history_columns]
    rows = len(df)
    dtypes = dict(zip(df.columns, df.dtypes, strict=True))
    if not all(is_object(dtypes[c]) for c in columns):
        return None
    text = columns_as_text(df, columns, pa.large_string())
    if text is None:
        return None
    split = len(text_columns) * rows
    plain, history = text.slice(0, split), pc.fill_null(text.slice(split), "")
    if null_tokens:
        plain = pc.if_else(is_missing(plain, null_tokens), None, plain)
    plain_values = plain.to_numpy(zero_copy_only=False)
    history_values = history.to_numpy(zero_copy_only=False)
    texts: dict[str, object] = {
        c: plain_values[i * rows : (i + 1) * rows] for i, c in enumerate(text_columns)
    }
    for i, column in enumerate(history_columns):
        part = slice(i * rows, (i + 1) * rows)
        texts[column] = (history_values[part], history.slice(i * rows, rows))
    return texts


def is_object(dtype: object) -> bool:
    """numpy's object dtype (not an extension dtype such as Arrow-backed text)."""
    return isinstance(dtype, np.dtype) and dtype.kind == "O"


def columns_as_text(
    df: pd.DataFrame, columns: Sequence[str], text_type: pa.DataType
) -> pa.Array | None:
    """Object columns of text as one Arrow array, column after column (``len(df)``
    values each), in one conversion; None when some value is not text or null, or
    when column names repeat (the caller then converts column by column)."""
    if not df.columns.is_unique:
        return None
    values = df[list(columns)].to_numpy().ravel(order="F")
    try:
        return pa.array(values, text_type, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None


def _text_of(
    texts: dict[str, object] | None, df: pd.DataFrame, column: str, schema: RawSchema
) -> np.ndarray:
    """A text column from ``_texts_together`` when it converted the frame."""
    if texts is None:
        return _text(df[column], schema.null_tokens)
    return texts[column]


def check_columns(df: pd.DataFrame, schema: RawSchema, source: str) -> None:
    """Raise ``RawDataError`` naming every contract column ``df`` lacks."""
    present = set(df.columns)
    missing = [c for c in schema.all_columns() if c not in present]
    if missing:
        shown = ", ".join(missing[:20]) + (" ..." if len(missing) > 20 else "")
        raise RawDataError(
            f"{source}: {len(missing)} required column(s) missing: {shown} "
            f"(column names come from raw_schema)"
        )


def parse_timestamps(
    df: pd.DataFrame,
    schema: RawSchema,
    source: str,
    order_ids: np.ndarray | None = None,
) -> np.ndarray:
    """The timestamp column as int64 epoch seconds.

    Accepts integers, floats, numeric text and datetime64 columns (read as UTC).

    Raises:
        RawDataError: Some timestamps are null, not numbers, not finite, before
            ``raw_schema.earliest_order_date`` or more than a day in the future.
    """
    column = schema.timestamp
    if column not in df.columns:
        raise RawDataError(f"{source}: required column {column} (timestamp) is missing")
    values = df[column]
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        if values.dt.tz is not None:
            values = values.dt.tz_convert("UTC").dt.tz_localize(None)
        stamps = values
        bad = stamps.isna().to_numpy()
        seconds = np.where(bad, 0, stamps.to_numpy("datetime64[s]").astype(np.int64))
    else:
        parsed = _to_float(values)
        bad = ~np.isfinite(parsed)
        seconds = np.where(bad, 0, parsed).astype(np.int64)
    if bad.any():
        ids = order_ids if order_ids is not None else _raw_ids(df, schema)
        raise RawDataError(
            f"{source}: column {column}: {int(bad.sum())} timestamp(s) are not epoch "
            f"seconds, e.g. {_examples(values, bad)} (order ids {_example_ids(ids, bad)})"
        )
    latest = int(time.time()) + FUTURE_SLACK_SECONDS
    impossible = (seconds < schema.earliest_timestamp) | (seconds > latest)
    if impossible.any():
        ids = order_ids if order_ids is not None else _raw_ids(df, schema)
        raise RawDataError(
            f"{source}: column {column}: {int(impossible.sum())} timestamp(s) are "
            f"before {schema.earliest_order_date} (raw_schema.earliest_order_date) or "
            f"more than a day in the future, e.g. {_examples(values, impossible)} "
            f"(order ids {_example_ids(ids, impossible)})"
        )
    return seconds


def history_lengths(values: pd.Series | pa.Array, separator: str) -> np.ndarray:
    """Number of values in each history string (``""`` and null = 0)."""
    if not isinstance(values, pa.Array | pa.ChunkedArray):
        values = pa.array(values, pa.large_string(), from_pandas=True)
    text = pc.fill_null(values, "")
    counts = pc.count_substring(text, separator).to_numpy(zero_copy_only=False) + 1
    empty = pc.equal(pc.binary_length(text), 0).to_numpy(zero_copy_only=False)
    return np.where(empty, 0, counts).astype(np.int64)


def ragged_rows(
    df: pd.DataFrame,
    schema: RawSchema,
    id_type: str,
    lengths: Mapping[str, np.ndarray] | None = None,
) -> pd.DataFrame:
    """Per row, whether each value list of ``id_type`` disagrees with its timestamps.

    A value list ``""`` agrees with one timestamp too: a single missing value exported
    as the empty null token looks exactly like an empty history.

    Args:
        df: Orders holding ``id_type``'s history columns.
        schema: Column names of the raw contract.
        id_type: ``cid`` or ``ccid``.
        lengths: Already counted :func:`history_lengths` by column, if any.

    Returns:
        Boolean frame, one column per history value column (order ids included).
    """

    def count(column: str) -> np.ndarray:
        if lengths is not None and column in lengths:
            return lengths[column]
        return history_lengths(df[column], schema.separator)

    ts_column = schema.history_timestamp_column(id_type)
    expected = count(ts_column)
    flags = {}
    for column in schema.history_columns(id_type):
        if column != ts_column:
            found = count(column)
            flags[column] = (found != expected) & ~((found == 0) & (expected == 1))
    return pd.DataFrame(flags, index=df.index)


def check_ragged_histories(
    df: pd.DataFrame,
    schema: RawSchema,
    source: str,
    tolerance: float,
    lengths: Mapping[str, np.ndarray] | None = None,
) -> None:
    """Raise ``RawDataError`` if more than ``tolerance`` of rows have ragged histories.

    ``lengths`` optionally holds already counted :func:`history_lengths` by column.
    """
    if not len(df):
        return
    for id_type in ID_TYPES:
        flags = ragged_rows(df, schema, id_type, lengths)
        bad = flags.to_numpy().any(axis=1)
        share = bad.mean()
        if share > tolerance:
            worst = flags.sum().sort_values(ascending=False)
            columns = ", ".join(
                f"{c} ({n})" for c, n in worst[worst > 0].head(5).items()
            )
            raise RawDataError(
                f"{source}: {int(bad.sum())} of {len(df)} rows ({share:.2%}) have "
                f"{id_type} history lists whose lengths disagree with column "
                f"{schema.history_timestamp_column(id_type)}, more than the tolerance "
                f"{tolerance:.2%} (parameter ragged_tolerance); worst columns: {columns}; "
                f"order ids {_example_ids(df[schema.order_id].to_numpy(), bad)}"
            )


def _order_ids(df: pd.DataFrame, schema: RawSchema, source: str) -> np.ndarray:
    ids = _text(df[schema.order_id], ())
    bad = pd.isna(ids) | (ids == "")
    if bad.any():
        rows = np.flatnonzero(bad)[:EXAMPLES].tolist()
        raise RawDataError(
            f"{source}: column {schema.order_id}: {int(bad.sum())} order id(s) are "
            f"missing, e.g. at rows {rows}"
        )
    return ids


def _labels(
    df: pd.DataFrame, schema: RawSchema, source: str, order_ids: np.ndarray
) -> pd.arrays.IntegerArray:
    column = schema.label
    values = df[column]
    if _is_number_dtype(values.dtype):
        codes = _to_float(values)
        missing = np.isnan(codes)
    else:
        text = pc.utf8_trim_whitespace(_arrow_text(values))
        missing = is_missing(text, schema.null_tokens)
        codes = (
            pd.Series(text.to_numpy(zero_copy_only=False), dtype=object)
            .map(_LABELS)
            .to_numpy(np.float64, na_value=np.nan)
        )
    bad = ~missing & ~np.isin(codes, (0, 1, -1))
    if bad.any():
        raise RawDataError(
            f"{source}: column {column}: {int(bad.sum())} label(s) are not 0, 1, -1 or "
            f"null, e.g. {_examples(values, bad)} "
            f"(order ids {_example_ids(order_ids, bad)})"
        )
    unlabelled = missing | (codes == -1)
    labels = pd.array(np.where(unlabelled, 0, codes).astype(np.int8), dtype="Int8")
    labels[unlabelled] = pd.NA
    return labels


def _number_columns(
    df: pd.DataFrame,
    columns: Sequence[str],
    schema: RawSchema,
    source: str,
    order_ids: np.ndarray,
    together: bool,
) -> dict[str, np.ndarray]:
    """``_numbers`` of every column in ``columns``, by name.

    The columns already of a numpy number dtype (what a JSON request of numbers
    gives) are converted in one call, and with ``together`` so are the object
    columns of text (a CSV request's): a request of one order has hundreds of them,
    and there the per-column calls, not the values, are the cost. A column with a bad value, and every other column, goes through
    ``_numbers`` on its own, which names the column at fault.
    """
    dtypes = dict(zip(df.columns, df.dtypes, strict=True))
    plain = [
        c
        for c in dict.fromkeys(columns)
        if isinstance(dtypes[c], np.dtype) and dtypes[c].kind in "iuf"
    ]
    out: dict[str, np.ndarray] = {}
    unique = df.columns.is_unique  # with repeated names, dtypes is not one per column
    if plain and unique:
        block = np.ascontiguousarray(df[plain].to_numpy(dtype=np.float64).T)
        infinite = np.isinf(block).any(axis=1)  # block: (columns, rows)
        out = {c: block[i] for i, c in enumerate(plain) if not infinite[i]}
    texts = [c for c in dict.fromkeys(columns) if is_object(dtypes[c])]
    if texts and unique and together:
        out |= _text_number_columns(df, texts, schema.null_tokens)
    return {
        c: out[c] if c in out else _numbers(df[c], c, schema, source, order_ids)
        for c in columns
    }


def _text_number_columns(
    df: pd.DataFrame, columns: list[str], null_tokens: Sequence[str]
) -> dict[str, np.ndarray]:
    """``_numbers`` of object columns of text (a CSV request's), parsed in one pass
    over all of them; columns with a bad value are left out (``_numbers`` names
    them), and all are when some value is not text."""
    text = columns_as_text(df, columns, pa.large_string())
    if text is None:
        return {}
    numbers, bad = _text_numbers(text, null_tokens)
    numbers = numbers.reshape(len(columns), len(df))
    bad = bad.reshape(len(columns), len(df)).any(axis=1)
    return {c: numbers[i] for i, c in enumerate(columns) if not bad[i]}


def _numbers(
    values: pd.Series,
    column: str,
    schema: RawSchema,
    source: str,
    order_ids: np.ndarray,
) -> np.ndarray:
    if _is_number_dtype(values.dtype):
        numbers = _to_float(values)
        bad = np.isinf(numbers)
    else:
        numbers, bad = _text_numbers(_arrow_text(values), schema.null_tokens)
    if bad.any():
        raise RawDataError(
            f"{source}: column {column}: {int(bad.sum())} value(s) are neither finite "
            f"numbers nor null tokens {list(schema.null_tokens)}, e.g. "
            f"{_examples(values, bad)} (order ids {_example_ids(order_ids, bad)})"
        )
    return numbers


def _text_numbers(
    text: pa.Array, null_tokens: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Numbers written as text: float64 values (NaN where missing) and where a value
    is bad (neither a finite number, a NaN spelling nor a null token)."""
    text = pc.utf8_trim_whitespace(text)
    missing = is_missing(text, null_tokens)
    spelled_nan = (
        pc.is_in(
            pc.utf8_lower(text),
            pa.array(["nan", "null", "none"], pa.large_string()),
        )
        .fill_null(False)
        .to_numpy(zero_copy_only=False)
    )
    present = pc.if_else(missing, None, text)
    try:  # fast path: every present value parses
        parsed = pc.cast(present, pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        parsed = _to_float(pd.Series(present.to_numpy(zero_copy_only=False)))
    numbers = np.asarray(parsed, dtype=np.float64)
    bad = (~missing & ~spelled_nan & np.isnan(numbers)) | np.isinf(numbers)
    return np.where(missing, np.nan, numbers), bad


def _is_number_dtype(dtype: object) -> bool:
    return pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(
        dtype
    )


def _to_float(values: pd.Series) -> np.ndarray:
    """Numbers of a column of any dtype; anything unparseable becomes NaN."""
    if _is_number_dtype(values.dtype):
        return values.astype("Float64").to_numpy(np.float64, na_value=np.nan)
    return pd.to_numeric(values.astype(object), errors="coerce").to_numpy(
        np.float64, na_value=np.nan
    )


def _arrow_text(values: pd.Series) -> pa.Array:
    """A column as an Arrow large_string array (nulls kept); integral floats as ints."""
    if pd.api.types.is_float_dtype(values.dtype):
        numbers = values.to_numpy(np.float64, na_value=np.nan)
        finite = numbers[np.isfinite(numbers)]
        if (finite == np.round(finite)).all():
            values = values.astype("Int64")
    try:
        text = pa.array(values, from_pandas=True)
        if not pa.types.is_large_string(text.type):
            text = pc.cast(text, pa.large_string())
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        mask = values.isna().to_numpy()
        text = pa.array(
            np.where(mask, None, values.astype(str).to_numpy()), pa.large_string()
        )
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    return text


def _byte_lengths(text: pa.Array) -> np.ndarray:
    """Byte length of each value (0 for nulls), read from the offsets buffer."""
    if not len(text) or not (
        pa.types.is_string(text.type) or pa.types.is_large_string(text.type)
    ):
        return np.asarray(pc.fill_null(pc.binary_length(text), 0), dtype=np.int64)
    width = np.int64 if pa.types.is_large_string(text.type) else np.int32
    offsets = np.frombuffer(
        text.buffers()[1], dtype=width, count=text.offset + len(text) + 1
    )
    return np.diff(offsets[text.offset :])


def is_missing(text: pa.Array, null_tokens: Sequence[str] | pa.Array) -> np.ndarray:
    """True where a text value is null or one of ``null_tokens``.

    Candidates are found by byte length first: only values as long as some null token
    are compared, so a column without null tokens costs one pass over its offsets
    (history tokens go through here by the million).
    """
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    if isinstance(null_tokens, pa.Array):
        null_tokens = null_tokens.to_pylist()
    lengths = _byte_lengths(text)
    missing = np.zeros(len(text), dtype=bool)
    for null in dict.fromkeys(null_tokens):
        size = len(null.encode())
        if size == 0:
            missing |= lengths == 0
            continue
        candidates = np.flatnonzero(lengths == size)
        if candidates.size:
            same = pc.equal(text.take(pa.array(candidates)), null)
            missing[candidates[np.asarray(pc.fill_null(same, False))]] = True
    if text.null_count:
        missing |= np.asarray(text.is_null())
    return missing


def _text(values: pd.Series, null_tokens: Sequence[str]) -> np.ndarray:
    """A column as object-dtype text; nulls and ``null_tokens`` become ``None``."""
    text = _arrow_text(values)
    if null_tokens:
        text = pc.if_else(is_missing(text, null_tokens), None, text)
    return text.to_numpy(zero_copy_only=False)


def _history_text(values: pd.Series) -> tuple[np.ndarray, pa.Array]:
    """History column as object-dtype text (null = ``""``), and as Arrow text."""
    if values.dtype == object:
        try:
            text = pa.array(values, pa.large_string(), from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            text = _arrow_text(values)
        else:
            if text.null_count == 0:  # already all text: no copy
                return values.to_numpy(), text
    else:
        text = _arrow_text(values)
    text = pc.fill_null(text, "")
    return text.to_numpy(zero_copy_only=False), text


def _raw_ids(df: pd.DataFrame, schema: RawSchema) -> np.ndarray:
    if schema.order_id in df.columns:
        return df[schema.order_id].astype(str).to_numpy()
    return np.asarray([f"row {i}" for i in range(len(df))], dtype=object)


def _examples(values: pd.Series, bad: np.ndarray) -> list:
    return values.to_numpy()[bad][:EXAMPLES].tolist()


def _example_ids(order_ids: np.ndarray, bad: np.ndarray) -> list:
    return np.asarray(order_ids)[bad][:EXAMPLES].tolist()
