"""A plain per-order implementation of the preprocessing semantics, for comparison.

Deliberately simple: one Python loop over orders, ``str.split`` on every history
column, the documented rules applied one by one. Slow, but easy to check by reading.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from tsa_kedro.schema import ID_TYPES, RawSchema


def _is_missing(value: Any, null_tokens: set[str]) -> bool:
    if value is None or value is pd.NA:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value in null_tokens


def reference_tensors(
    raw: pd.DataFrame,
    schema: RawSchema,
    cat_to_index: Mapping[str, Mapping[str, int]],
    scaling: Mapping[str, Mapping[str, Mapping[str, float]]],
    default_values: Mapping[str, Any],
    seq_len: int,
    delta_cap: float,
    labels: bool = True,
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Same contract as ``build_tensors``; returns ``(bundle, dropped counts)``."""
    nulls = set(schema.null_tokens)
    sep = schema.separator

    def code(feature: str, value: Any) -> int:
        if _is_missing(value, nulls):
            default = default_values[feature]
            return cat_to_index[feature].get(default, 0) if default is not None else 0
        return cat_to_index[feature].get(str(value), 0)

    def scaled(family: str, feature: str, value: float | None) -> float:
        if value is None or not math.isfinite(value):
            value = default_values[feature]
        low = scaling[family][feature]["min"]
        high = scaling[family][feature]["max"]
        span = high - low if high > low else 1.0
        return (value - low) / span

    def number(token: str) -> float | None:
        return None if token in nulls else float(token)

    def text(row: dict, column: str) -> str:
        value = row[column]
        return "" if _is_missing(value, set()) else value

    dropped: dict[str, int] = {}
    out: dict[str, list] = {
        key: []
        for key in (
            "X_seq_cat_cid",
            "X_seq_num_cid",
            "X_seq_cat_ccid",
            "X_seq_num_ccid",
            "X_num",
            "Y",
            "order_id",
        )
    }
    for row in raw.to_dict("records"):
        now = float(row[schema.timestamp])
        label = row[schema.label]
        unlabelled = _is_missing(label, set()) or int(label) == -1
        problems = []
        if labels and unlabelled:
            problems.append("unlabelled")

        histories = {}
        for id_type in ID_TYPES:
            times_text = text(row, schema.history_timestamp_column(id_type))
            n = 0 if times_text == "" else len(times_text.split(sep))
            columns = [
                schema.history_order_id_column(id_type),
                *(schema.history_column(id_type, f) for f in schema.seq_features),
            ]
            ragged = False
            for column in columns:
                value = text(row, column)
                if n == 0:
                    ragged |= value != ""
                else:
                    ragged |= len(value.split(sep)) != n
            times = [number(t) for t in times_text.split(sep)] if n else []
            histories[id_type] = {
                "n": n,
                "ragged": ragged,
                "missing_time": any(t is None for t in times),
                "negative": any(t is not None and now - t < 0 for t in times),
                "times": times,
            }
        for check, reason in (
            ("ragged", "ragged_history"),
            ("missing_time", "missing_history_timestamp"),
            ("negative", "negative_delta"),
        ):
            for id_type in ID_TYPES:
                if histories[id_type][check]:
                    problems.append(f"{reason}_{id_type}")
        if problems:
            dropped[problems[0]] = dropped.get(problems[0], 0) + 1
            continue

        current_cat = [code(f, row[f]) for f in schema.cat_features]
        current_num = [
            scaled("sequence", f, row[f]) for f in schema.num_features
        ] + [0.0, 1.0]
        for id_type in ID_TYPES:
            hist = histories[id_type]
            cat_rows, num_rows = [], []
            for j in range(hist["n"]):
                cat_rows.append(
                    [
                        code(f, text(row, schema.history_column(id_type, f)).split(sep)[j])
                        for f in schema.cat_features
                    ]
                )
                values = []
                for f in schema.num_features:
                    token = text(row, schema.history_column(id_type, f)).split(sep)[j]
                    values.append(scaled("sequence", f, number(token)))
                delta = now - hist["times"][j]
                num_rows.append([*values, min(delta, delta_cap), 1.0])
            cat_rows = (cat_rows + [current_cat])[-seq_len:]
            num_rows = (num_rows + [current_num])[-seq_len:]
            pad = seq_len - len(cat_rows)
            cat_rows = [[0] * len(current_cat)] * pad + cat_rows
            num_rows = [[0.0] * len(current_num)] * pad + num_rows
            out[f"X_seq_cat_{id_type}"].append(cat_rows)
            out[f"X_seq_num_{id_type}"].append(num_rows)
        out["X_num"].append([scaled("dense", f, row[f]) for f in schema.eng_features])
        out["Y"].append(int(label) if labels else 0)
        out["order_id"].append(str(row[schema.order_id]))

    n_cat, n_num = len(schema.cat_features), len(schema.num_features)
    n_eng = len(schema.eng_features)
    rows = len(out["Y"])
    bundle = {}
    for id_type in ID_TYPES:
        bundle[f"X_seq_cat_{id_type}"] = np.array(
            out[f"X_seq_cat_{id_type}"], dtype=np.int32
        ).reshape(rows, seq_len, n_cat)
        bundle[f"X_seq_num_{id_type}"] = np.array(
            out[f"X_seq_num_{id_type}"], dtype=np.float32
        ).reshape(rows, seq_len, n_num + 2)
    bundle["X_num"] = np.array(out["X_num"], dtype=np.float32).reshape(rows, n_eng)
    if labels:
        bundle["Y"] = np.array(out["Y"], dtype=np.int8)
    bundle["order_id"] = np.array(out["order_id"], dtype=np.str_)
    return bundle, dropped
