"""Raw schemas of a given width, e.g. the production width (109 / 67 / 297)."""

from __future__ import annotations

from typing import Any

from tsa_kedro.schema import RawSchema

PRODUCTION_WIDTH = {"n_cat": 109, "n_num": 67, "n_eng": 297}

_KNOWN_CAT = (
    "payment_method",
    "card_brand",
    "card_type",
    "merchant_id",
    "terminal_id",
    "merchant_category",
    "country",
    "billing_country",
    "device_type",
    "channel",
    "currency",
    "email_domain",
)
_KNOWN_NUM = (
    "amount",
    "item_count",
    "shipping_fee",
    "discount_rate",
    "account_age_days",
    "card_age_days",
    "billing_shipping_distance_km",
    "hour_of_day",
    "seconds_since_last_login",
    "failed_logins_24h",
)
_ENTITIES = ("cid", "ccid", "terminal", "merchant")
_WINDOWS = ("1h", "24h", "7d", "30d")
_DISTINCT = {
    "cid": ("cards", "terminals", "merchants", "countries", "devices"),
    "ccid": ("customers", "terminals", "merchants", "countries", "devices"),
    "terminal": ("cards", "customers", "countries", "devices"),
    "merchant": ("cards", "customers", "terminals", "countries", "devices"),
}


def aggregate_names() -> list[str]:
    """Every rolling aggregate of the grammar in ``synthetic.aggregates``, stable order."""
    names: list[str] = []
    for entity in _ENTITIES:
        for window in _WINDOWS:
            names.append(f"{entity}_orders_{window}")
            names.extend(
                f"{entity}_amount_{s}_{window}" for s in ("sum", "mean", "max", "std")
            )
            names.append(f"{entity}_small_orders_{window}")
            names.extend(f"{entity}_distinct_{t}_{window}" for t in _DISTINCT[entity])
            names.append(f"amount_zscore_{entity}_{window}")
        names.append(f"{entity}_days_since_first_order")
        names.append(f"{entity}_seconds_since_last_order")
        names.append(f"amount_to_{entity}_mean_ratio")
    names.append("night_order_flag")
    return names


def schema_of_width(n_cat: int, n_num: int, n_eng: int, **overrides: Any) -> RawSchema:
    """A schema with ``n_cat`` / ``n_num`` / ``n_eng`` features.

    The known feature names (and the aggregate grammar) come first, padded with
    ``cat_feature_NNN``, ``num_feature_NNN`` and ``eng_feature_NNN`` fillers.
    ``overrides`` set the other ``RawSchema`` fields (column names, separator, ...).
    """
    return RawSchema.from_params(
        {
            "order_id": "order_id",
            "timestamp": "order_ts",
            "label": "is_fraud",
            "id_columns": {"cid": "cid", "ccid": "ccid"},
            "cat_features": _padded(_KNOWN_CAT, n_cat, "cat_feature"),
            "num_features": _padded(_KNOWN_NUM, n_num, "num_feature"),
            "eng_features": _padded(aggregate_names(), n_eng, "eng_feature"),
            **overrides,
        }
    )


def production_width_schema(**overrides: Any) -> RawSchema:
    """The production width: 109 categorical, 67 numerical, 297 engineered features."""
    return schema_of_width(**PRODUCTION_WIDTH, **overrides)


def _padded(known: tuple[str, ...] | list[str], width: int, prefix: str) -> list[str]:
    names = list(known[:width])
    names.extend(f"{prefix}_{i:03d}" for i in range(len(names), width))
    return names
