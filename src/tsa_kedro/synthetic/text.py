"""Vectorised text building: numbers to tokens, tokens to separator-joined histories.

History strings are assembled as raw bytes with numpy index arithmetic and handed to
Arrow as a string array, so no Python code runs per order.
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


def string_buffers(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (int64, length n + 1, starting at 0) and bytes of a string array."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    array = pc.fill_null(array.cast(pa.large_string()), "")
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    buffers = array.buffers()
    offsets = np.frombuffer(buffers[1], np.int64)[
        array.offset : array.offset + len(array) + 1
    ]
    data = (
        np.frombuffer(buffers[2], np.uint8)
        if buffers[2] is not None
        else np.zeros(0, np.uint8)
    )
    return offsets - offsets[0], data[offsets[0] : offsets[-1]]


def history_strings(
    tokens: pa.Array,
    sorted_positions: np.ndarray,
    group_start: np.ndarray,
    history_length: int,
    separator: str,
) -> pa.Array:
    """For every order, the tokens of its previous orders joined by ``separator``.

    Args:
        tokens: One token per order, in order-table order.
        sorted_positions: Order-table positions sorted by (id, time, position), i.e.
            each id's orders oldest first, ids one after another.
        group_start: For each sorted slot, the slot where its id's orders begin.
        history_length: At most this many previous orders are joined.
        separator: Text between two tokens.

    Returns:
        One string per order (order-table order); ``""`` where there is no history.
    """
    n = len(sorted_positions)
    sep = np.frombuffer(separator.encode(), np.uint8)
    offsets, data = string_buffers(tokens.take(pa.array(sorted_positions)))
    lengths = np.diff(offsets)
    # Every token followed by the separator, one buffer: token j starts at starts[j].
    starts = offsets[:-1] + np.arange(n, dtype=np.int64) * len(sep)
    joined = np.empty(len(data) + n * len(sep), np.uint8)
    joined[
        np.arange(len(data), dtype=np.int64) + np.repeat(starts - offsets[:-1], lengths)
    ] = data
    for i, byte in enumerate(sep):
        joined[starts + lengths + i] = byte
    slots = np.arange(n, dtype=np.int64)
    first = np.maximum(group_start, slots - history_length)
    out_lengths = np.where(first < slots, starts - len(sep) - starts[first], 0)
    out_offsets = np.zeros(n + 1, np.int64)
    np.cumsum(out_lengths, out=out_offsets[1:])
    # Byte positions to copy: runs of consecutive positions, one run per order,
    # written as a running sum of steps (1 inside a run, a jump between runs).
    total = int(out_offsets[-1])
    steps = np.ones(total, np.int64)
    has = out_lengths > 0
    run_starts = starts[first[has]]
    run_ends = run_starts + out_lengths[has]
    steps[out_offsets[:-1][has]] = run_starts - np.r_[0, run_ends[:-1] - 1]
    gather = np.cumsum(steps)
    histories = pa.LargeStringArray.from_buffers(
        n, pa.py_buffer(out_offsets), pa.py_buffer(joined[gather])
    )
    inverse = np.empty(n, np.int64)
    inverse[sorted_positions] = slots
    return histories.take(pa.array(inverse))
