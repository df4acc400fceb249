"""Vectorised text building: numbers to tokens, tokens to separator-joined histories.

Everything runs on whole Arrow arrays or numpy index arithmetic; no Python code runs
per order.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def vocab_tokens(vocabulary: list[str] | np.ndarray, codes: np.ndarray) -> pa.Array:
    """Text of ``codes`` looked up in a small ``vocabulary``."""
    return pa.array(list(vocabulary), pa.large_string()).take(pa.array(codes))


def number_tokens(values: np.ndarray, decimals: int, missing: str = "") -> pa.Array:
    """Shortest text of ``values`` rounded to ``decimals``; NaN becomes ``missing``."""
    rounded = np.round(values.astype(np.float64), decimals) + 0.0  # no "-0"
    text = pc.cast(pa.array(rounded, pa.float64(), from_pandas=True), pa.large_string())
    return pc.fill_null(text, missing)


def code_tokens(tokens: pa.Array) -> pa.Array:
    """Each distinct token as an integer code: its rank among them, from 1."""
    encoded = pc.dictionary_encode(tokens)
    rank = np.argsort(np.argsort(encoded.dictionary.to_pylist()))
    codes = integer_tokens(rank + 1)
    return codes.take(encoded.indices)


def integer_tokens(values: np.ndarray, prefix: str = "", width: int = 0) -> pa.Array:
    """``prefix`` followed by ``values`` left-padded with zeros to ``width`` digits."""
    text = pc.cast(pa.array(values.astype(np.int64)), pa.large_string())
    if width:
        text = pc.utf8_lpad(text, width, "0")
    if prefix:
        text = pc.binary_join_element_wise(
            pa.scalar(prefix, pa.large_string()), text, pa.scalar("", pa.large_string())
        )
    return text.cast(pa.large_string())


class HistoryWindows:
    """Each order's window of previous orders of the same id, ready to join any column.

    The token indices of all windows are laid out back to back with one cumulative
    sum; joining a column is then one Arrow ``take`` and one ``binary_join``. Build it
    once per id type and reuse it for every history column.

    Args:
        sorted_positions: Order-table positions sorted by (id, time, position), i.e.
            each id's orders oldest first, ids one after another.
        group_start: For each sorted slot, the slot where its id's orders begin.
        history_length: At most this many previous orders are joined.
    """

    def __init__(
        self, sorted_positions: np.ndarray, group_start: np.ndarray, history_length: int
    ):
        n = len(sorted_positions)
        slots = np.arange(n, dtype=np.int64)
        first = np.maximum(group_start, slots - history_length)
        lengths = slots - first
        offsets = np.zeros(n + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        # Runs of consecutive slots as a running sum of steps: 1 inside a run, a jump
        # back at the start of each window.
        steps = np.ones(int(offsets[-1]), np.int64)
        has = lengths > 0
        run_starts = first[has]
        run_ends = run_starts + lengths[has]
        steps[offsets[:-1][has]] = run_starts - np.r_[0, run_ends[:-1] - 1]
        # Window tokens are indexed in order-table positions, so columns need no sort.
        self._members = pa.array(sorted_positions[np.cumsum(steps)])
        self._offsets = pa.array(offsets)
        inverse = np.empty(n, np.int64)
        inverse[sorted_positions] = slots
        self._inverse = pa.array(inverse)

    def join(self, tokens: pa.Array, separator: str) -> pa.Array:
        """One string per order (order-table order): ``""`` where there is no history."""
        tokens = pc.fill_null(tokens, "").cast(pa.large_string())
        windows = pa.LargeListArray.from_arrays(
            self._offsets, tokens.take(self._members)
        )
        joined = pc.binary_join(windows, pa.scalar(separator, pa.large_string()))
        return joined.take(self._inverse)
