"""A plain per-order implementation of the preprocessing semantics, for comparison.

Deliberately simple: one Python loop over orders, ``str.split`` on every history
column, the documented rules applied one by one. Slow, but easy to check by reading.
The benchmark uses it as the baseline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from tsa_kedro.schema import ID_TYPES, RawSchema

KEYS = (
    "X_seq_cat_cid",
    "X_seq_num_cid",
    "X_seq_cat_ccid",
    "X_seq_num_ccid",
    "X_num",
    "Y",
    "order_id",
)


def _is_null(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float) and math.isnan(value)


class ReferencePreprocessor:
    """Same contract as ``build_tensors``, one order at a time."""

    def __init__(
        self,
        schema: RawSchema,
        cat_to_index: Mapping[str, Mapping[str, int]],
        scaling: Mapping[str, Mapping[str, Mapping[str, float]]],
        default_values: Mapping[str, Any],
        *,
        seq_len: int,
        delta_cap: float,
        scaled_clip: float = 3.0,
    ):
        self.schema = schema
        self.cat_to_index = cat_to_index
        self.scaling = scaling
        self.defaults = default_values
        self.seq_len = seq_len
        self.delta_cap = delta_cap
        self.scaled_clip = scaled_clip
        self.nulls = set(schema.null_tokens)

    def code(self, feature: str, value: Any) -> int:
        if _is_null(value) or value in self.nulls:
            default = self.defaults[feature]
            if default is None:
                return 0
            return self.cat_to_index[feature].get(default, 0)
        return self.cat_to_index[feature].get(str(value), 0)

    def scaled(self, family: str, feature: str, value: float | None) -> float:
        if value is None or not math.isfinite(value):
            value = self.defaults[feature]
        entry = self.scaling[family][feature]
        if entry.get("transform") == "signed_log1p":
            value = math.copysign(math.log1p(abs(value)), value)
        low = entry["min"]
        high = entry["max"]
        span = high - low if high > low else 1.0
        return min(max((value - low) / span, -self.scaled_clip), 1 + self.scaled_clip)

    def number(self, token: str) -> float | None:
        return None if token in self.nulls else float(token)

    def tokens(self, row: dict, column: str) -> list[str]:
        value = row[column]
        text = "" if _is_null(value) else value
        return text.split(self.schema.separator)

    def history(self, row: dict, id_type: str) -> dict[str, Any]:
        """Length, validity and timestamps of one history."""
        schema = self.schema
        times_tokens = self.tokens(row, schema.history_timestamp_column(id_type))
        n = 0 if times_tokens == [""] else len(times_tokens)
        columns = [
            schema.history_order_id_column(id_type),
            *(schema.history_column(id_type, f) for f in schema.seq_features),
        ]
        if n == 0:
            ragged = any(self.tokens(row, c) != [""] for c in columns)
        else:
            ragged = any(len(self.tokens(row, c)) != n for c in columns)
        times = [self.number(t) for t in times_tokens] if n else []
        now = float(row[schema.timestamp])
        return {
            "n": n,
            "ragged": ragged,
            "missing_time": any(t is None for t in times),
            "negative": any(t is not None and now - t < 0 for t in times),
            "times": times,
        }

    def problems(self, row: dict, histories: dict, labels: bool) -> list[str]:
        label = row[self.schema.label]
        found = []
        if labels and (_is_null(label) or int(label) == -1):
            found.append("unlabelled")
        for check, reason in (
            ("ragged", "ragged_history"),
            ("missing_time", "missing_history_timestamp"),
            ("negative", "negative_delta"),
        ):
            found += [f"{reason}_{t}" for t in ID_TYPES if histories[t][check]]
        return found

    def sequence(self, row: dict, id_type: str, hist: dict) -> tuple[list, list]:
        """Category and numerical rows: history, current order, truncated, padded."""
        schema = self.schema
        now = float(row[schema.timestamp])
        split = {
            f: self.tokens(row, schema.history_column(id_type, f))
            for f in schema.seq_features
        }
        cat_rows, num_rows = [], []
        for j in range(hist["n"]):
            cat_rows.append([self.code(f, split[f][j]) for f in schema.cat_features])
            values = [
                self.scaled("sequence", f, self.number(split[f][j]))
                for f in schema.num_features
            ]
            delta = now - hist["times"][j]
            num_rows.append([*values, min(delta, self.delta_cap), 1.0])
        cat_rows.append([self.code(f, row[f]) for f in schema.cat_features])
        num_rows.append(
            [self.scaled("sequence", f, row[f]) for f in schema.num_features]
            + [0.0, 1.0]
        )
        cat_rows, num_rows = cat_rows[-self.seq_len :], num_rows[-self.seq_len :]
        pad = self.seq_len - len(cat_rows)
        cat_rows = [[0] * len(schema.cat_features)] * pad + cat_rows
        num_rows = [[0.0] * (len(schema.num_features) + 2)] * pad + num_rows
        return cat_rows, num_rows

    def tensors(
        self, raw: pd.DataFrame, labels: bool = True
    ) -> tuple[dict[str, np.ndarray], dict[str, int]]:
        """Returns ``(bundle, dropped counts by first reason)``."""
        schema = self.schema
        dropped: dict[str, int] = {}
        out: dict[str, list] = {key: [] for key in KEYS}
        for row in raw.to_dict("records"):
            histories = {t: self.history(row, t) for t in ID_TYPES}
            problems = self.problems(row, histories, labels)
            if problems:
                dropped[problems[0]] = dropped.get(problems[0], 0) + 1
                continue
            for id_type in ID_TYPES:
                cat_rows, num_rows = self.sequence(row, id_type, histories[id_type])
                out[f"X_seq_cat_{id_type}"].append(cat_rows)
                out[f"X_seq_num_{id_type}"].append(num_rows)
            out["X_num"].append(
                [self.scaled("dense", f, row[f]) for f in schema.eng_features]
            )
            out["Y"].append(int(row[schema.label]) if labels else 0)
            out["order_id"].append(str(row[schema.order_id]))
        return self._arrays(out, labels), dropped

    def _arrays(self, out: dict[str, list], labels: bool) -> dict[str, np.ndarray]:
        schema, rows = self.schema, len(out["Y"])
        n_cat, n_num = len(schema.cat_features), len(schema.num_features)
        bundle = {}
        for id_type in ID_TYPES:
            bundle[f"X_seq_cat_{id_type}"] = np.array(
                out[f"X_seq_cat_{id_type}"], dtype=np.int32
            ).reshape(rows, self.seq_len, n_cat)
            bundle[f"X_seq_num_{id_type}"] = np.array(
                out[f"X_seq_num_{id_type}"], dtype=np.float32
            ).reshape(rows, self.seq_len, n_num + 2)
        bundle["X_num"] = np.array(out["X_num"], dtype=np.float32).reshape(
            rows, len(schema.eng_features)
        )
        if labels:
            bundle["Y"] = np.array(out["Y"], dtype=np.int8)
        bundle["order_id"] = np.array(out["order_id"], dtype=np.str_)
        return bundle
