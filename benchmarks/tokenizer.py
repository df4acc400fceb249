"""What a compiled single-pass tokenizer would buy the builder: ns per history token.

The builder spends most of a production-width chunk in per-token Arrow kernels, one
call per history column: ``split_pattern`` and a ``cast`` to float64 for numerical
columns, a split in place and ``index_in`` for categorical ones (docs/preprocessing.md
has the profile). This probe times those calls, as the builder makes them
(``features.columns.split_column`` + ``parse_tokens``, ``split_column_in_place`` +
``encoding.lookup_positions``), against one compiled pass over the column's Arrow
buffers that splits and parses or looks up each token as it is found, on the same
production-width chunk, in turns, and checks that both give the same numbers (floats
bit for bit) and the same codes.

Both kernels walk the tokens with the same loop written out in each. Measured on the
same chunk: a shared numba generator took about twice as long per token as the loop
written out, and a separate pass collecting the token bounds lowered the gain over the
Arrow calls (numerical 1.7x to 2.6x, categorical 1.1x to 1.4x, against 2.4x to 2.8x and
1.3x to 1.4x with one pass).

The compiled pass parses numbers on Clinger's fast path only (at most 15 significant
digits, no exponent, at most 22 decimals: the value is then exact or one correctly
rounded division, so it equals Arrow's parse); it counts the tokens outside that path,
which a real kernel would hand to Arrow. Categorical tokens are looked up in an
open-addressing FNV-1a table of the encoder's values.

It needs numba, which is not a project dependency::

    .venv/bin/pip install numba==0.68.1
    PYTHONPATH=src .venv/bin/python -m benchmarks.tokenizer --out benchmarks/results/tokenizer_cpu2.json

Without numba it says so and returns (``python -m benchmarks`` runs on).
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from benchmarks._output import write_results
from benchmarks.preprocess import PROFILES, profile_schema, random_raw_chunk
from tsa_kedro.features.columns import (
    RawColumns,
    parse_tokens,
    split_column,
    split_column_in_place,
)
from tsa_kedro.features.encoding import lookup_positions
from tsa_kedro.features.tensors import prepare_transforms
from tsa_kedro.features.transforms import fit_transforms

TURNS = 5
POW10 = np.array([10.0**i for i in range(23)])


def _number_kernel() -> Any:
    from numba import njit  # noqa: PLC0415  (optional: only this probe needs it)

    @njit(cache=True)
    def parse(data, i, j, pow10):  # noqa: ANN001, ANN202
        """(value, on the fast path); an empty token is NaN."""
        if i == j:
            return np.nan, True
        negative = data[i] == 45  # "-"
        if negative or data[i] == 43:  # "+"
            i += 1
        mantissa, digits, decimals, dot, any_digit = 0, 0, 0, False, False
        while i < j:
            c = data[i]
            if 48 <= c <= 57:
                any_digit = True
                if digits or c != 48:
                    digits += 1
                if digits > 15:
                    return 0.0, False
                mantissa = mantissa * 10 + (c - 48)
                decimals += dot
            elif c == 46 and not dot:
                dot = True
            else:  # an exponent, a null token, anything else
                return 0.0, False
            i += 1
        if not any_digit or decimals > 22:
            return 0.0, False
        value = mantissa / pow10[decimals] if decimals else float(mantissa)
        return (-value if negative else value), True

    @njit(cache=True)
    def split_parse(offsets, data, sep, values, pow10):  # noqa: ANN001, ANN202
        """Every token of every row parsed into ``values``; (tokens, off the path)."""
        k, slow = 0, 0
        for r in range(len(offsets) - 1):
            i, end = offsets[r], offsets[r + 1]
            if i == end:
                continue
            while True:
                j = i
                while j < end and data[j] != sep:
                    j += 1
                value, fast = parse(data, i, j, pow10)
                slow += not fast
                values[k] = value if fast else np.nan
                k += 1
                if j >= end:
                    break
                i = j + 1
        return k, slow

    return split_parse


def _lookup_kernels() -> tuple[Any, Any]:
    from numba import njit  # noqa: PLC0415

    @njit(cache=True)
    def fnv(data, i, j):  # noqa: ANN001, ANN202
        h = np.uint64(14695981039346656037)
        for p in range(i, j):
            h = (h ^ np.uint64(data[p])) * np.uint64(1099511628211)
        return h

    @njit(cache=True)
    def split_lookup(offsets, data, sep, keys, key_data, table, positions, absent):  # noqa: ANN001, ANN202, PLR0913
        """Each token's position among ``keys`` (``absent`` when not there)."""
        mask, k = np.uint64(len(table) - 1), 0
        for r in range(len(offsets) - 1):
            i, end = offsets[r], offsets[r + 1]
            if i == end:
                continue
            while True:
                j = i
                while j < end and data[j] != sep:
                    j += 1
                slot, found = fnv(data, i, j) & mask, absent
                while table[slot] >= 0:
                    t = table[slot]
                    a, b = keys[t], keys[t + 1]
                    if b - a == j - i:
                        q = 0
                        while q < j - i and key_data[a + q] == data[i + q]:
                            q += 1
                        if q == j - i:
                            found = t
                            break
                    slot = (slot + np.uint64(1)) & mask
                positions[k] = found
                k += 1
                if j >= end:
                    break
                i = j + 1
        return k

    @njit(cache=True)
    def build_table(keys, key_data, size):  # noqa: ANN001, ANN202
        table, mask = np.full(size, -1, np.int64), np.uint64(size - 1)
        for t in range(len(keys) - 2, -1, -1):  # the first of equal keys wins
            slot = fnv(key_data, keys[t], keys[t + 1]) & mask
            while table[slot] >= 0:
                slot = (slot + np.uint64(1)) & mask
            table[slot] = t
        return table

    return split_lookup, build_table


def _buffers(text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (int64) and bytes of a string array, without copying the text."""
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    width = np.int64 if pa.types.is_large_string(text.type) else np.int32
    _, offsets, data = text.buffers()
    offsets = np.frombuffer(
        offsets, width, len(text) + 1, text.offset * width().itemsize
    )
    return offsets.astype(np.int64), np.frombuffer(data, np.uint8)


class _Probe:
    """One production-width chunk, its transforms, and the two ways to encode its
    ``cid`` history columns."""

    def __init__(self, rows: int):
        self.split_parse = _number_kernel()
        self.split_lookup, build_table = _lookup_kernels()
        profile = PROFILES["production"]
        self.schema = schema = profile_schema(profile)
        frame = random_raw_chunk(schema, rows, profile["history_mean"], 0)
        self.frame = pa.Table.from_pandas(frame, preserve_index=False).to_pandas(
            types_mapper=pd.ArrowDtype
        )  # Arrow-backed, as the raw_chunks datasets load it
        transforms = fit_transforms([self.frame], schema, {"min_frequency": 1})
        self.prepared = prepare_transforms(*transforms, schema)
        self.sep, n_cat = schema.separator, len(schema.cat_features)
        columns = [schema.history_column("cid", f) for f in schema.seq_features]
        self.numerical = columns[n_cat:]
        self.categorical = list(zip(columns[:n_cat], schema.cat_features, strict=True))
        self.tables = {}
        for feature in schema.cat_features:  # built once, as a kernel's caller would
            encoder = self.prepared.categorical[feature]
            keys, key_data = _buffers(encoder.lookup)
            size = 1 << int(2 * len(encoder.lookup) + 1).bit_length()
            table = build_table(keys, key_data, size)
            self.tables[feature] = (keys, key_data, table, encoder)

    def arrow(self) -> tuple[dict[str, float], dict[str, np.ndarray], int]:
        """The builder's calls, column by column."""
        raw, seconds, out = RawColumns(self.frame, together=False), {}, {}
        started = time.perf_counter()
        for column in self.numerical:
            tokens, _, _ = split_column(raw, column, self.sep)
            out[column] = parse_tokens(tokens, self.prepared.null_tokens, column)
        seconds["numerical"] = time.perf_counter() - started
        started = time.perf_counter()
        for column, feature in self.categorical:
            encoder = self.prepared.categorical[feature].history
            tokens, _, _ = split_column_in_place(raw, column, self.sep)
            out[column] = encoder.codes[lookup_positions(tokens, encoder)]
        seconds["categorical"] = time.perf_counter() - started
        return seconds, out, 0

    def compiled(self) -> tuple[dict[str, float], dict[str, np.ndarray], int]:
        """One compiled pass per column; also how many tokens left the fast path."""
        raw, seconds, out, slow = RawColumns(self.frame, together=False), {}, {}, 0
        sep = ord(self.sep)
        started = time.perf_counter()
        for column in self.numerical:
            offsets, data = _buffers(raw.history_text(column))
            values = np.empty(len(data) + 1)
            k, off_path = self.split_parse(offsets, data, sep, values, POW10)
            out[column], slow = values[:k], slow + off_path
        seconds["numerical"] = time.perf_counter() - started
        started = time.perf_counter()
        for column, feature in self.categorical:
            keys, key_data, table, encoder = self.tables[feature]
            offsets, data = _buffers(raw.history_text(column))
            positions = np.empty(len(data) + 1, np.int64)
            absent = len(encoder.codes) - 1
            k = self.split_lookup(
                offsets, data, sep, keys, key_data, table, positions, absent
            )
            out[column] = encoder.codes[positions[:k]]
        seconds["categorical"] = time.perf_counter() - started
        return seconds, out, slow


def run(rows: int) -> dict[str, Any]:
    probe = _Probe(rows)
    probe.compiled()  # compiles (or loads the cache)
    times: dict[str, dict[str, list[float]]] = {"arrow": {}, "compiled": {}}
    for _ in range(TURNS):  # in turns, best of TURNS: the machine is shared
        seconds, expected, _ = probe.arrow()
        for kind, value in seconds.items():
            times["arrow"].setdefault(kind, []).append(value)
        seconds, out, slow = probe.compiled()
        for kind, value in seconds.items():
            times["compiled"].setdefault(kind, []).append(value)
        for column, values in out.items():  # floats bit for bit, codes equal
            same = values.view(np.int64) == expected[column].view(np.int64)
            assert same.all(), column
    tokens = {
        "numerical": sum(expected[c].size for c in probe.numerical),
        "categorical": sum(expected[c].size for c, _ in probe.categorical),
    }
    result: dict[str, Any] = {"rows": rows, "turns": TURNS, "off_fast_path": slow}
    for kind, count in tokens.items():
        arrow = min(times["arrow"][kind]) / count * 1e9
        compiled = min(times["compiled"][kind]) / count * 1e9
        result[kind] = {
            "tokens": count,
            "arrow_ns_per_token": arrow,
            "compiled_ns_per_token": compiled,
            "speedup": arrow / compiled,
        }
        print(
            f"{kind}: {count} tokens, builder's Arrow calls {arrow:.1f} ns/token, "
            f"one compiled pass {compiled:.1f} ns/token ({arrow / compiled:.2f}x)"
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1500)
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    if importlib.util.find_spec("numba") is None:
        print("benchmarks.tokenizer needs numba (pip install numba==0.68.1); skipped")
        return
    write_results(run(args.rows), Path(args.out) if args.out else None, echo=False)


if __name__ == "__main__":
    main()
