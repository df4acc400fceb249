"""The raw order contract: which columns an export holds and what they are called.

Every stage, the synthetic generator and the inference handler read column names from
one ``RawSchema`` built from the ``raw_schema`` parameters; no node hard-codes a column.
This module needs only the standard library so that the serving bundle can ship it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

ID_TYPES = ("cid", "ccid")


class SchemaError(ValueError):
    """The ``raw_schema`` parameters are inconsistent."""


@dataclass(frozen=True)
class RawSchema:
    """Column names of the raw order contract (docs/raw_data_contract.md).

    Attributes:
        order_id: Column holding the order id.
        timestamp: Column holding the order time, epoch seconds.
        label: Column holding the fraud tag (0/1; null or -1 means unlabelled).
        id_columns: Id type (``cid``, ``ccid``) to the column holding that id.
        cat_features: Current-order categorical sequence features.
        num_features: Current-order numerical sequence features.
        eng_features: Engineered dense features of the current order.
        history_value_template: History column of one feature, with ``{id_type}`` and
            ``{feature}`` placeholders.
        history_order_id_template: History column of order ids, with ``{id_type}``.
        history_timestamp_template: History column of order times, with ``{id_type}``.
        separator: Joins the values of a history column, oldest first.
        null_tokens: Text values that mean "missing".
        numeric_cat_features: The categorical features whose values are numeric
            codes (``3``, ``3.0``, `` 3 ``): rewritten to one spelling per value in
            the current order and every history token
            (``tsa_kedro.features.numeric_codes``).
        earliest_order_date: Order timestamps before this UTC day (``YYYY-MM-DD``)
            are impossible and rejected at the door; so are those more than a day
            after the moment they are read.
        max_abs_number: Numerical and engineered values beyond this magnitude are
            rejected at the door (an export's overflow or sentinel, not a value).
    """

    order_id: str
    timestamp: str
    label: str
    id_columns: Mapping[str, str]
    cat_features: Sequence[str]
    num_features: Sequence[str]
    eng_features: Sequence[str]
    history_value_template: str = "{id_type}_hist_{feature}"
    history_order_id_template: str = "{id_type}_hist_order_id"
    history_timestamp_template: str = "{id_type}_hist_ts"
    separator: str = "~"
    null_tokens: Sequence[str] = field(default_factory=lambda: ("", "My Text String"))
    numeric_cat_features: Sequence[str] = ()
    earliest_order_date: str = "2000-01-01"
    max_abs_number: float = 1.0e15

    def __post_init__(self) -> None:
        object.__setattr__(self, "id_columns", dict(self.id_columns))
        for name in (
            "cat_features",
            "num_features",
            "eng_features",
            "null_tokens",
            "numeric_cat_features",
        ):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if tuple(self.id_columns) != ID_TYPES:
            raise SchemaError(
                f"raw_schema.id_columns must map exactly {list(ID_TYPES)} (in that "
                f"order) to columns, got {list(self.id_columns)}"
            )
        if not self.separator:
            raise SchemaError("raw_schema.separator must be a non-empty string")
        if not self.cat_features or not self.num_features:
            raise SchemaError(
                "raw_schema needs at least one cat_features and one num_features entry"
            )
        seen: dict[str, str] = {}
        for family in ("cat_features", "num_features", "eng_features"):
            for name in getattr(self, family):
                if name in seen:
                    raise SchemaError(
                        f"raw_schema feature {name!r} is listed in both {seen[name]} "
                        f"and {family}"
                    )
                seen[name] = family
        not_categorical = [
            f for f in self.numeric_cat_features if f not in self.cat_features
        ]
        if not_categorical:
            raise SchemaError(
                f"raw_schema.numeric_cat_features names {not_categorical}, which are "
                "not in raw_schema.cat_features"
            )
        try:
            dt.date.fromisoformat(str(self.earliest_order_date))
        except ValueError as exc:
            raise SchemaError(
                "raw_schema.earliest_order_date must be a YYYY-MM-DD day, got "
                f"{self.earliest_order_date!r}"
            ) from exc
        if isinstance(self.max_abs_number, bool) or not (
            isinstance(self.max_abs_number, int | float) and self.max_abs_number > 0
        ):
            raise SchemaError(
                "raw_schema.max_abs_number must be a number > 0, got "
                f"{self.max_abs_number!r}"
            )
        columns = self.all_columns()
        duplicates = sorted({c for c in columns if columns.count(c) > 1})
        if duplicates:
            raise SchemaError(f"raw_schema maps several fields to columns {duplicates}")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> RawSchema:
        """Build the schema from the ``raw_schema`` parameters mapping."""
        try:
            return cls(**dict(params))
        except TypeError as exc:
            raise SchemaError(f"raw_schema parameters are invalid: {exc}") from exc

    def to_params(self) -> dict[str, Any]:
        """The JSON-serialisable mapping ``from_params`` accepts."""
        return {
            "order_id": self.order_id,
            "timestamp": self.timestamp,
            "label": self.label,
            "id_columns": dict(self.id_columns),
            "cat_features": list(self.cat_features),
            "num_features": list(self.num_features),
            "eng_features": list(self.eng_features),
            "history_value_template": self.history_value_template,
            "history_order_id_template": self.history_order_id_template,
            "history_timestamp_template": self.history_timestamp_template,
            "separator": self.separator,
            "null_tokens": list(self.null_tokens),
            "numeric_cat_features": list(self.numeric_cat_features),
            "earliest_order_date": self.earliest_order_date,
            "max_abs_number": self.max_abs_number,
        }

    @property
    def earliest_timestamp(self) -> int:
        """``earliest_order_date`` as epoch seconds (UTC midnight)."""
        day = dt.date.fromisoformat(str(self.earliest_order_date))
        return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp())

    @property
    def seq_features(self) -> tuple[str, ...]:
        """Sequence features in tensor order: categoricals, then numericals."""
        return (*self.cat_features, *self.num_features)

    def history_column(self, id_type: str, feature: str) -> str:
        """Column holding ``feature``'s history for ``id_type``."""
        return self.history_value_template.format(id_type=id_type, feature=feature)

    def history_order_id_column(self, id_type: str) -> str:
        """Column holding the order ids of ``id_type``'s history."""
        return self.history_order_id_template.format(id_type=id_type)

    def history_timestamp_column(self, id_type: str) -> str:
        """Column holding the order timestamps of ``id_type``'s history."""
        return self.history_timestamp_template.format(id_type=id_type)

    def history_columns(self, id_type: str) -> list[str]:
        """Every history column of ``id_type``: features, then order ids and times."""
        return [
            *(self.history_column(id_type, f) for f in self.seq_features),
            self.history_order_id_column(id_type),
            self.history_timestamp_column(id_type),
        ]

    def all_columns(self) -> list[str]:
        """Every column of the contract, in a stable order."""
        return [
            self.order_id,
            *self.id_columns.values(),
            self.timestamp,
            self.label,
            *self.cat_features,
            *self.num_features,
            *self.eng_features,
            *(c for id_type in ID_TYPES for c in self.history_columns(id_type)),
        ]
