"""Parameters of the synthetic order stream (one ``SyntheticConfig`` per profile)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

FRAUD_PATTERNS = (
    "compromised_terminal",
    "compromised_customer",
    "card_testing",
    "velocity",
)
OUTPUT_FORMATS = ("text", "typed")
PARTITION_FREQUENCIES = ("month", "week", "day")


class SyntheticConfigError(ValueError):
    """A synthetic profile parameter is missing or out of range."""


def _default_fraud_mix() -> dict[str, float]:
    return {
        "compromised_terminal": 0.3,
        "compromised_customer": 0.3,
        "card_testing": 0.25,
        "velocity": 0.15,
    }


@dataclass(frozen=True)
class SyntheticConfig:
    """Sizes, rates and planted fraud patterns of one synthetic profile.

    Dates are UTC calendar days, both ends included. ``fraud_rate`` is the share of
    planted fraud orders among all generated orders; ``fraud_mix`` splits it between the
    patterns (weights, normalised). Every rate is a probability per order unless its
    name says otherwise.

    Attributes:
        seed: Seed of the only random generator used; same seed, same bytes.
        start_date: First day of activity (``YYYY-MM-DD``).
        end_date: Last day of activity (``YYYY-MM-DD``), included.
        n_customers: Number of customers.
        orders_per_customer_per_day: Mean legitimate activity of a customer.
        extra_cards_per_customer: Mean number of cards a customer holds beyond one.
        shared_card_rate: Share of cards that a second customer also uses.
        n_merchants: Number of merchants.
        terminals_per_merchant: Terminals of each merchant.
        favourite_terminals: Terminals a customer returns to.
        history_length: Previous orders kept in each history column (production: 50).
        null_token_rate: Share of feature values exported as a null token.
        numeric_code_float_rate: Share of the values of numeric-code categoricals
            (``raw_schema.numeric_cat_features``, written as integer codes) exported
            with a trailing ``.0`` (``3.0``), drawn apart for the current order and
            for each history, as production exports do.
        unlabelled_rate: Share of orders whose label is exported as -1 or null.
        ragged_history_rate: Share of orders whose exported history loses one value
            (a corrupt export row that preprocessing must drop).
        future_history_rate: Share of orders whose history holds a timestamp later than
            the order (another corrupt row that preprocessing must drop).
        fraud_rate: Share of planted fraud orders among all orders.
        fraud_mix: Weight of each planted pattern in ``fraud_rate``.
        compromised_terminal_weeks: How long a compromised terminal is attacked.
        compromised_terminal_orders_per_day: Fraud orders a compromised terminal sees.
        compromised_customer_days: How long a taken-over account is abused.
        compromised_customer_orders_per_day: Fraud orders of a taken-over account.
        amount_multiplier: Amount of a taken-over account's orders over its usual.
        card_testing_burst: Smallest and largest number of small test orders.
        card_testing_cashout_rate: Share of card tests followed by a large order.
        velocity_burst: Smallest and largest number of orders in a velocity burst.
        small_amount_max: Test orders (and some legitimate orders) cost at most this.
        partition_by: One raw partition per ``month``, ``week`` or ``day``.
        output_format: ``text`` (every column as text, like the production export)
            or ``typed`` (numbers as numbers, missing numbers as NaN).
    """

    seed: int = 7
    start_date: str = "2024-01-01"
    end_date: str = "2024-05-31"
    n_customers: int = 3000
    orders_per_customer_per_day: float = 0.12
    extra_cards_per_customer: float = 0.35
    shared_card_rate: float = 0.05
    n_merchants: int = 150
    terminals_per_merchant: int = 3
    favourite_terminals: int = 6
    history_length: int = 50
    null_token_rate: float = 0.01
    numeric_code_float_rate: float = 0.0
    unlabelled_rate: float = 0.01
    ragged_history_rate: float = 0.0003
    future_history_rate: float = 0.0003
    fraud_rate: float = 0.03
    fraud_mix: Mapping[str, float] = field(default_factory=_default_fraud_mix)
    compromised_terminal_weeks: int = 3
    compromised_terminal_orders_per_day: float = 1.5
    compromised_customer_days: int = 4
    compromised_customer_orders_per_day: float = 2.0
    amount_multiplier: float = 4.0
    card_testing_burst: tuple[int, int] = (4, 10)
    card_testing_cashout_rate: float = 0.7
    velocity_burst: tuple[int, int] = (5, 12)
    small_amount_max: float = 5.0
    partition_by: str = "month"
    output_format: str = "text"

    def __post_init__(self) -> None:
        object.__setattr__(self, "fraud_mix", dict(self.fraud_mix))
        object.__setattr__(self, "card_testing_burst", tuple(self.card_testing_burst))
        object.__setattr__(self, "velocity_burst", tuple(self.velocity_burst))
        self._validate()

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> SyntheticConfig:
        """Build a profile from its parameters; unknown keys are rejected by name."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise SyntheticConfigError(
                f"unknown synthetic profile parameters {unknown}; known: {sorted(known)}"
            )
        return cls(**dict(params))

    @property
    def first_day(self) -> dt.date:
        """First day of activity."""
        return _parse_date("start_date", self.start_date)

    @property
    def n_days(self) -> int:
        """Number of days of activity, both ends included."""
        return (_parse_date("end_date", self.end_date) - self.first_day).days + 1

    @property
    def start_epoch(self) -> int:
        """Epoch seconds of ``start_date`` 00:00 UTC."""
        day = self.first_day
        return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp())

    def fraud_shares(self) -> dict[str, float]:
        """Share of all orders planted by each pattern (sums to ``fraud_rate``)."""
        total = sum(self.fraud_mix.values())
        return {
            p: self.fraud_rate * self.fraud_mix.get(p, 0.0) / total
            for p in FRAUD_PATTERNS
        }

    def _validate(self) -> None:
        if self.n_days < 1:
            raise SyntheticConfigError(
                f"synthetic end_date {self.end_date!r} is before start_date {self.start_date!r}"
            )
        positive = (
            "n_customers",
            "orders_per_customer_per_day",
            "n_merchants",
            "terminals_per_merchant",
            "favourite_terminals",
            "history_length",
            "compromised_terminal_weeks",
            "compromised_terminal_orders_per_day",
            "compromised_customer_days",
            "compromised_customer_orders_per_day",
            "amount_multiplier",
            "small_amount_max",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise SyntheticConfigError(
                    f"synthetic parameter {name} must be > 0, got {getattr(self, name)!r}"
                )
        rates = (
            "extra_cards_per_customer",
            "shared_card_rate",
            "null_token_rate",
            "numeric_code_float_rate",
            "unlabelled_rate",
            "ragged_history_rate",
            "future_history_rate",
            "card_testing_cashout_rate",
        )
        for name in rates:
            value = getattr(self, name)
            if not 0 <= value <= (10 if name == "extra_cards_per_customer" else 1):
                raise SyntheticConfigError(
                    f"synthetic parameter {name} is out of range, got {value!r}"
                )
        if not 0 <= self.fraud_rate < 0.5:
            raise SyntheticConfigError(
                f"synthetic parameter fraud_rate must be in [0, 0.5), got {self.fraud_rate!r}"
            )
        unknown = sorted(set(self.fraud_mix) - set(FRAUD_PATTERNS))
        if unknown:
            raise SyntheticConfigError(
                f"synthetic parameter fraud_mix names unknown patterns {unknown}; "
                f"known: {list(FRAUD_PATTERNS)}"
            )
        if any(w < 0 for w in self.fraud_mix.values()) or (
            self.fraud_rate > 0 and sum(self.fraud_mix.values()) <= 0
        ):
            raise SyntheticConfigError(
                "synthetic parameter fraud_mix needs non-negative weights with a positive sum"
            )
        for name in ("card_testing_burst", "velocity_burst"):
            low_high = getattr(self, name)
            if len(low_high) != 2 or not 1 <= low_high[0] <= low_high[1]:
                raise SyntheticConfigError(
                    f"synthetic parameter {name} must be [low, high] with 1 <= low <= high, "
                    f"got {list(low_high)}"
                )
        if self.partition_by not in PARTITION_FREQUENCIES:
            raise SyntheticConfigError(
                f"synthetic parameter partition_by must be one of "
                f"{list(PARTITION_FREQUENCIES)}, got {self.partition_by!r}"
            )
        if self.output_format not in OUTPUT_FORMATS:
            raise SyntheticConfigError(
                f"synthetic parameter output_format must be one of {list(OUTPUT_FORMATS)}, "
                f"got {self.output_format!r}"
            )


def _parse_date(name: str, value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError as exc:
        raise SyntheticConfigError(
            f"synthetic parameter {name} must be a YYYY-MM-DD date, got {value!r}"
        ) from exc
