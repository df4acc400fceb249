"""Hand-made raw orders in the normalised ``<split>.raw_chunks`` form, for tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from tsa_kedro.schema import ID_TYPES, RawSchema


def small_schema(n_cat: int = 2, n_num: int = 2, n_eng: int = 2) -> RawSchema:
    """A schema with ``cat0..``, ``num0..`` and ``eng0..`` features."""
    return RawSchema(
        order_id="order_id",
        timestamp="order_ts",
        label="is_fraud",
        id_columns={"cid": "cid", "ccid": "ccid"},
        cat_features=[f"cat{i}" for i in range(n_cat)],
        num_features=[f"num{i}" for i in range(n_num)],
        eng_features=[f"eng{i}" for i in range(n_eng)],
    )


def _token(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def raw_frame(orders: Sequence[Mapping[str, Any]], schema: RawSchema) -> pd.DataFrame:
    """Build raw rows from per-order dicts.

    Each order: ``order_id``, ``ts``, ``label`` (None = unlabelled), optional ``cid``
    and ``ccid``, ``values`` (current-order feature -> value; a missing key or None is
    missing), and ``history`` (id type -> list of past orders, oldest first, each a dict
    with ``order_id``, ``ts`` and feature values). ``columns`` overrides raw column
    texts verbatim (for ragged or malformed rows).
    """
    records = []
    for order in orders:
        values = order.get("values", {})
        row: dict[str, Any] = {
            schema.order_id: str(order["order_id"]),
            schema.id_columns["cid"]: order.get("cid", "c0"),
            schema.id_columns["ccid"]: order.get("ccid", "k0"),
            schema.timestamp: int(order["ts"]),
            schema.label: order.get("label"),
        }
        for feature in schema.cat_features:
            row[feature] = values.get(feature)
        for feature in (*schema.num_features, *schema.eng_features):
            value = values.get(feature)
            row[feature] = np.nan if value is None else float(value)
        for id_type in ID_TYPES:
            past = order.get("history", {}).get(id_type, [])
            join = schema.separator.join
            row[schema.history_order_id_column(id_type)] = join(
                str(p["order_id"]) for p in past
            )
            row[schema.history_timestamp_column(id_type)] = join(
                _token(p["ts"]) for p in past
            )
            for feature in schema.seq_features:
                row[schema.history_column(id_type, feature)] = join(
                    _token(p.get(feature)) for p in past
                )
        row.update(order.get("columns", {}))
        records.append(row)
    frame = pd.DataFrame.from_records(records, columns=schema.all_columns())
    frame[schema.timestamp] = frame[schema.timestamp].astype("int64")
    frame[schema.label] = frame[schema.label].astype("Int8")
    for feature in (*schema.num_features, *schema.eng_features):
        frame[feature] = frame[feature].astype("float64")
    return frame
