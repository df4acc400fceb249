"""The raw orders' columns as Arrow text and float64 numbers; history columns split.

``RawColumns`` converts each text column to Arrow at most once per build (on the request
route every text column in one call) and forgets it once staged; ``numeric_matrix``
reads numerical columns as a float64 matrix. A history column is split by the separator
into one flat token array plus the offsets of each row's tokens: ``split_column``
(Arrow ``split_pattern``), ``split_column_in_place`` (a one-byte separator: new offsets
into the column's own text, no copy) and ``split_columns_together`` (several columns in
one call). ``parse_tokens`` casts tokens to float64, null tokens to NaN.

Arrow-backed columns (the raw chunks as ``datasets.arrow_parquet`` loads them) are read
from their own buffers: text columns as they are, numerical ones straight into the
float64 matrix, without pandas converting each column. Where a production-width
order's time goes (one process, two 600-order chunks, cProfile, a shared 2-core
machine): decoding the Parquet chunk 16 %, wrapping its columns in a frame 6 %,
splitting the history text 20 %, category lookups 14 % (Arrow ``index_in``, about
20 ns per token), parsing numerical tokens 9 % (Arrow ``cast``), taking the columns
from the frame 6 %, staging and gathering into the tensors 13 %, saving 11 %. Each of
these is one Arrow or numpy call per column over all of a chunk's tokens; what is left
is per-token work, about 50 ns per token and some 9,000 tokens per order.

Rejected (``KeyError`` / ``ValueError`` naming the column): a missing column, a column
that does not convert to text or to numbers, a token that does not parse as a number.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tsa_kedro.features.raw_orders import columns_as_text, is_missing, is_object

_RELEASE_EVERY = 16  # consumed columns freed between hand-backs to the system


def _arrow_text(raw: pd.DataFrame, column: str) -> pa.Array:
    """A text column as one Arrow string array (nulls kept)."""
    if column not in raw.columns:
        raise KeyError(f"raw orders lack the column {column!r}")
    return _series_text(raw[column], column)


def _series_text(values: pd.Series, column: str) -> pa.Array:
    """``_arrow_text`` of the column's values."""
    if isinstance(values.dtype, pd.ArrowDtype) and pa.types.is_string(
        values.dtype.pyarrow_dtype
    ):  # Arrow-backed text (raw chunks as loaded): the column's own buffers
        array = values.array.__arrow_array__()
        return array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
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


class RawColumns:
    """The raw orders, each text column converted to Arrow at most once per build.

    ``consume`` names columns (those used once, the history columns) that are taken
    out of the frame, which the caller hands over: each is freed when released, so
    the raw text shrinks while the tensors grow. The frame keeps its other columns.
    """

    def __init__(self, raw: pd.DataFrame, together: bool, consume: Iterable[str] = ()):
        self.frame = raw
        self.together = together  # columns of a kind converted and looked up at once
        self._texts: dict[str, pa.Array] = _all_text_columns(raw) if together else {}
        taken = [c for c in dict.fromkeys(consume) if c in raw.columns]
        self._rows = len(raw)
        self._owned: dict[str, pd.Series] = {c: raw[c] for c in taken}
        self._released = 0
        if taken:
            raw.drop(columns=taken, inplace=True)

    def __len__(self) -> int:
        return self._rows

    def text(self, column: str) -> pa.Array:
        if column not in self._texts:
            if column in self._owned:
                self._texts[column] = _series_text(self._owned[column], column)
            else:
                self._texts[column] = _arrow_text(self.frame, column)
        return self._texts[column]

    def history_text(self, column: str) -> pa.Array:
        """A history column with null read as "" (no history)."""
        text = self.text(column)
        return pc.fill_null(text, "") if text.null_count else text

    def release(self, column: str) -> None:
        """Forget a converted column once it is no longer needed (a consumed one
        is freed; now and then the Arrow memory pool hands freed memory back to the
        system, which its allocator would otherwise keep)."""
        self._texts.pop(column, None)
        if self._owned.pop(column, None) is not None:
            self._released += 1
            if self._released % _RELEASE_EVERY == 0 or not self._owned:
                pa.default_memory_pool().release_unused()

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


def numeric_matrix(
    raw: RawColumns, features: tuple[str, ...], rows: np.ndarray
) -> np.ndarray:
    """Numerical columns of the kept rows as a float64 ``[rows, features]`` matrix.

    All columns are converted in one call when they allow it: a request of one order
    has hundreds of numerical columns, and there the per-column access, not the
    conversion, is the cost. Otherwise column by column, which names the column at
    fault (missing or not numeric).
    """
    frame = raw.frame
    if all(feature in frame.columns for feature in features):
        arrow = _arrow_numbers(frame, features)
        if arrow is not None:
            return arrow[rows]
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


def _arrow_numbers(frame: pd.DataFrame, features: tuple[str, ...]) -> np.ndarray | None:
    """Arrow-backed numerical columns (raw chunks as loaded) as a float64
    ``[rows, features]`` matrix, null as NaN, read from each column's buffers; None
    when some column is not Arrow-backed integers or floats."""
    columns = [frame[feature] for feature in features]
    if not all(
        isinstance(c.dtype, pd.ArrowDtype)
        and (
            pa.types.is_floating(c.dtype.pyarrow_dtype)
            or pa.types.is_integer(c.dtype.pyarrow_dtype)
        )
        for c in columns
    ):
        return None
    matrix = np.empty((len(features), len(frame)), dtype=np.float64)
    for i, column in enumerate(columns):
        matrix[i] = column.array.__arrow_array__().to_numpy(zero_copy_only=False)
    return matrix.T


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


def parse_tokens(tokens: pa.Array, null_tokens: pa.Array, column: str) -> np.ndarray:
    """Text tokens as float64, NaN for null tokens; unparsable text is an error."""
    missing = is_missing(tokens, null_tokens)
    cleaned = _masked(tokens, missing) if missing.any() else tokens
    try:
        values = pc.cast(cleaned, pa.float64())
    except pa.ArrowInvalid as exc:
        raise ValueError(f"column {column!r} holds a non-numeric value: {exc}") from exc
    return values.to_numpy(zero_copy_only=False)


def split_column(
    raw: RawColumns, column: str, sep: str
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


def split_column_in_place(
    raw: RawColumns, column: str, sep: str
) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """``split_column`` without copying the text, for a one-byte separator.

    The tokens are new offsets into the column's own text buffer, so every token but
    the last of a row keeps its trailing separator (``"a~b"`` gives ``"a~"``, ``"b"``);
    the ``history`` tables of ``encoding.CategoricalEncoder`` match both forms. Token
    counts, offsets and empty rows are those of ``split_column``.
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


def split_columns_together(
    raw: RawColumns, columns: list[str], sep: str
) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """``split_column`` of several history columns at once, feature-major.

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


def aligned_tokens(
    offsets: np.ndarray, reference: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Token positions of ``rows`` in a column (``offsets``) and in the staged
    layout."""
    counts = np.diff(reference)[rows]
    rank = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    return (
        np.repeat(offsets[rows], counts) + rank,
        np.repeat(reference[rows], counts) + rank,
    )
