"""One spelling per value for categorical features that are numeric codes.

Exports write many categorical codes as numbers, and not one way: ``3`` in one row,
``3.0`` in the next (a float column on the way), `` 3 `` in a history string. Left as
text, each spelling would be its own vocabulary entry, and a value seen as ``3`` on the
current order would encode as unknown where a history wrote ``3.0``. The features that
``raw_schema.numeric_cat_features`` marks are therefore rewritten to one spelling, in
the current order and in every history token, by ``normalize_raw_orders``, which
training (ingest) and serving (the handler) both call.

The canonical spelling of a token that reads as a finite decimal number: an integral
value as its integer digits (``3.0``, ``+3``, `` 3 ``, ``003``, ``3e0`` -> ``3``; ``-0``
-> ``0``), any other value as its shortest plain decimal (``2.50`` -> ``2.5``). Exact,
through ``decimal``: codes longer than a float's 15 digits keep every digit. Anything
else (null tokens, ``nan``, words, numbers beyond 10**±40) is kept exactly as written.

Each distinct token is canonicalised once (Arrow's dictionary encoding), so the cost
follows the number of distinct codes, not of cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal, InvalidOperation

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Cells (column values) joined into one Arrow array at a time: one batch for any
# request, a bounded copy of a large chunk's text.
BATCH_CELLS = 2_000_000
# Numbers beyond 10**±40 are no codes: kept as written rather than spelled out.
MAX_EXPONENT = 40


def canonical_code(text: str) -> str:
    """The one spelling of a numeric code written as ``text`` (see module docstring)."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        return text
    if not value.is_finite() or abs(value.adjusted()) > MAX_EXPONENT:
        return text
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def canonicalise_tokens(tokens: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """``canonical_code`` of every token (nulls stay null).

    Args:
        tokens: Text tokens (string or large_string, nulls allowed).

    Returns:
        The canonical tokens (large_string) and, per token, whether it was rewritten.
    """
    tokens = tokens.cast(pa.large_string())
    encoded = pc.dictionary_encode(tokens)
    spelled = encoded.dictionary.to_pylist()
    canonical = [canonical_code(text) for text in spelled]
    rewritten = np.fromiter(
        (a != b for a, b in zip(spelled, canonical, strict=True)),
        dtype=bool,
        count=len(spelled),
    )
    if not rewritten.any():
        return tokens, np.zeros(len(tokens), dtype=bool)
    indices = encoded.indices
    result = pa.array(canonical, pa.large_string()).take(indices)
    positions = indices.to_numpy(zero_copy_only=False)
    changed = np.zeros(len(tokens), dtype=bool)
    valid = ~np.asarray(indices.is_null())
    changed[valid] = rewritten[positions[valid].astype(np.intp)]
    return result, changed


def canonicalise_histories(
    histories: pa.Array, separator: str
) -> tuple[pa.Array, np.ndarray]:
    """``canonical_code`` of every token of separator-joined history strings.

    Args:
        histories: History texts (no nulls: an empty history is ``""``).
        separator: Joins a history's values.

    Returns:
        The rewritten histories (large_string) and, per history, how many of its
        tokens were rewritten.
    """
    histories = histories.cast(pa.large_string())
    lists = pc.split_pattern(histories, separator)
    tokens, changed = canonicalise_tokens(lists.flatten())
    if not changed.any():
        return histories, np.zeros(len(histories), dtype=np.int64)
    rebuilt = type(lists).from_arrays(lists.offsets, tokens)
    parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
    per_history = np.bincount(parents[changed], minlength=len(histories))
    joined = pc.binary_join(rebuilt, pa.scalar(separator, pa.large_string()))
    return joined, per_history.astype(np.int64)


def column_batches(n_columns: int, rows: int) -> list[slice]:
    """Consecutive groups of columns of at most ``BATCH_CELLS`` cells each (at least
    one column a group): one group for any request, bounded copies of a chunk."""
    per_batch = max(1, BATCH_CELLS // max(rows, 1))
    return [
        slice(start, min(start + per_batch, n_columns))
        for start in range(0, n_columns, per_batch)
    ]


def canonicalise_columns(
    columns: Sequence[np.ndarray], separator: str | None
) -> tuple[list[np.ndarray], list[int]]:
    """Canonicalise several text columns of equal length, many at a time.

    Columns are joined into one Arrow array per batch of at most ``BATCH_CELLS``
    cells, so a request of one order with hundreds of such columns costs a handful of
    Arrow calls, while a large chunk's text is copied a bounded batch at a time.

    Args:
        columns: Object-dtype text columns (``None`` for missing values); history
            columns hold ``""`` for an empty history.
        separator: The history separator when ``columns`` are histories, else None.

    Returns:
        The rewritten columns (object dtype, ``None`` kept) and, per column, how many
        values (history tokens) were rewritten.
    """
    if not columns:
        return [], []
    out: list[np.ndarray] = []
    counts: list[int] = []
    for batch in column_batches(len(columns), len(columns[0])):
        rewritten, batch_counts = _canonicalise_batch(columns[batch], separator)
        out += rewritten
        counts += batch_counts
    return out, counts


def _canonicalise_batch(
    columns: Sequence[np.ndarray], separator: str | None
) -> tuple[list[np.ndarray], list[int]]:
    rows = len(columns[0])
    joined = pa.concat_arrays(
        [pa.array(c, pa.large_string(), from_pandas=True) for c in columns]
    )
    if separator is None:
        text, changed = canonicalise_tokens(joined)
    else:
        text, changed = canonicalise_histories(joined, separator)
    counts = [
        int(changed[i * rows : (i + 1) * rows].sum()) for i in range(len(columns))
    ]
    if not any(counts):
        return list(columns), counts
    values = text.to_numpy(zero_copy_only=False)
    return [values[i * rows : (i + 1) * rows] for i in range(len(columns))], counts
