"""Turn the simulated orders into the raw contract (docs/source/raw_data_contract.md).

Column names come from a ``RawSchema``: known feature names get their real meaning
(amount, terminal id, rolling aggregates, ...), any other name gets plausible filler, so
the same generator writes the small default width and the production width.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tsa_kedro.schema import ID_TYPES, RawSchema
from tsa_kedro.synthetic import orders as sim
from tsa_kedro.synthetic.aggregates import engineered_features
from tsa_kedro.synthetic.config import SyntheticConfig, SyntheticConfigError
from tsa_kedro.synthetic.text import (
    HistoryWindows,
    code_tokens,
    integer_tokens,
    number_tokens,
    vocab_tokens,
)

ORDER_ID_WIDTH = 9


@dataclass
class SyntheticOrders:
    """Generated orders and what was planted in them.

    Attributes:
        orders: The raw contract, one row per order, columns in
            ``RawSchema.all_columns()`` order, sorted by time.
        pattern: Name of the planted pattern of each row (``legit`` or a fraud pattern).
    """

    orders: pd.DataFrame
    pattern: np.ndarray


@dataclass
class _Feature:
    tokens: pa.Array  # exported text of every order (null tokens included)
    values: np.ndarray | None  # numbers for typed output (NaN where missing)


def generate_orders(config: SyntheticConfig, schema: RawSchema) -> SyntheticOrders:
    """Simulate the order stream of ``config`` and export it with ``schema``'s columns.

    Args:
        config: Sizes, date range, rates and planted patterns.
        schema: Column names (and widths) of the raw contract to write.

    Returns:
        The orders and the planted pattern of each.

    Raises:
        SyntheticConfigError: A null token contains the separator (its histories would
            be unreadable).
    """
    for token in schema.null_tokens:
        if schema.separator in token:
            raise SyntheticConfigError(
                f"raw_schema.null_tokens entry {token!r} contains raw_schema.separator "
                f"{schema.separator!r}"
            )
    rng = np.random.default_rng(config.seed)
    world = sim.build_world(config, rng)
    draft = sim.simulate_orders(config, world, rng)
    n = len(draft)
    missing = schema.null_tokens[0] if schema.null_tokens else ""
    context = _Context(
        config=config, schema=schema, world=world, draft=draft, rng=rng, missing=missing
    )

    features: dict[str, _Feature] = {}
    for name in schema.cat_features:
        tokens = context.categorical(name)
        if name in schema.numeric_cat_features:
            tokens = code_tokens(tokens)
        features[name] = _Feature(tokens, None)
    for name in schema.num_features:
        values, decimals = context.numerical(name)
        values = np.round(values, decimals) + 0.0
        features[name] = _Feature(number_tokens(values, decimals, missing), values)
    aggregates = engineered_features(
        list(schema.eng_features),
        context.keys,
        draft.ts,
        draft.amount,
        config.small_amount_max,
    )
    for name in schema.eng_features:
        values = aggregates.get(name)
        if values is None:
            values = context.filler_number(name, eng=True)
        values = np.round(values, 4)
        features[name] = _Feature(number_tokens(values, 4, missing), values)
    for name in (*schema.cat_features, *schema.num_features, *schema.eng_features):
        features[name] = context.sprinkle_nulls(features[name])

    order_ids = integer_tokens(np.arange(n), "o", ORDER_ID_WIDTH)
    id_tokens = {
        "cid": integer_tokens(draft.customer, "c", 7),
        "ccid": integer_tokens(draft.card, "k", 8),
    }
    ts_tokens = integer_tokens(draft.ts)
    id_codes = {"cid": draft.customer, "ccid": draft.card}

    columns: dict[str, object] = {schema.order_id: order_ids}
    for id_type in ID_TYPES:
        columns[schema.id_columns[id_type]] = id_tokens[id_type]
    columns[schema.timestamp] = ts_tokens
    columns[schema.label] = context.labels()
    for name in (*schema.cat_features, *schema.num_features, *schema.eng_features):
        columns[name] = context.spelled(name, features[name])
    for id_type in ID_TYPES:
        order = np.lexsort((np.arange(n), id_codes[id_type]))
        key = id_codes[id_type][order]
        first = np.maximum.accumulate(
            np.where(np.r_[True, key[1:] != key[:-1]], np.arange(n), 0)
        )
        windows = HistoryWindows(order, first, config.history_length)
        sources = {
            schema.history_column(id_type, f): context.spelled(f, features[f]).tokens
            for f in schema.seq_features
        }
        sources[schema.history_order_id_column(id_type)] = order_ids
        sources[schema.history_timestamp_column(id_type)] = ts_tokens
        for column, tokens in sources.items():
            columns[column] = windows.join(tokens, schema.separator)

    frame = _to_frame(columns, schema, config.output_format, draft.ts)
    context.corrupt_histories(frame)
    return SyntheticOrders(
        orders=frame, pattern=np.asarray(sim.PATTERN_NAMES, dtype=object)[draft.pattern]
    )


def partition_orders(
    orders: pd.DataFrame, schema: RawSchema, partition_by: str
) -> dict[str, pd.DataFrame]:
    """Split orders into ``orders_<period>`` partitions by calendar month, week or day.

    Weeks are named after their Monday. Rows keep their order inside a partition.
    """
    ts = pd.to_numeric(orders[schema.timestamp]).to_numpy(np.int64)
    day = ts.astype("datetime64[s]").astype("datetime64[D]")
    if partition_by == "month":
        period = day.astype("datetime64[M]").astype(str)
    elif partition_by == "week":
        monday = day - ((day.astype(np.int64) + 3) % 7).astype("timedelta64[D]")
        period = monday.astype(str)
    else:
        period = day.astype(str)
    return {
        f"orders_{key}": orders.iloc[np.flatnonzero(period == key)].reset_index(
            drop=True
        )
        for key in np.unique(period)
    }


class _Context:
    """Everything a feature needs to be drawn for every order at once."""

    def __init__(
        self,
        *,
        config: SyntheticConfig,
        schema: RawSchema,
        world: sim.World,
        draft: sim.OrderDraft,
        rng: np.random.Generator,
        missing: str,
    ):
        self.config, self.schema, self.world, self.draft, self.rng = (
            config,
            schema,
            world,
            draft,
            rng,
        )
        self.missing = missing
        self.n = len(draft)
        self.merchant = world.terminal_merchant[draft.terminal]
        self.in_store = world.terminal_in_store[draft.terminal]
        self.device = np.where(self.in_store, sim.POS_DEVICE, draft.device)
        self.keys = {
            "cid": draft.customer,
            "ccid": draft.card,
            "terminal": draft.terminal,
            "merchant": self.merchant,
            "country": draft.ship_country,
            "device": self.device,
        }

    def categorical(self, name: str) -> pa.Array:
        w, d = self.world, self.draft
        known = {
            "payment_method": (sim.PAYMENT_METHODS, d.payment),
            "card_brand": (sim.CARD_BRANDS, w.card_brand[d.card]),
            "card_type": (sim.CARD_TYPES, w.card_type[d.card]),
            "merchant_category": (
                sim.MERCHANT_CATEGORIES,
                w.merchant_category[self.merchant],
            ),
            "country": (sim.COUNTRIES, d.ship_country),
            "billing_country": (sim.COUNTRIES, w.card_country[d.card]),
            "device_type": (sim.DEVICES, self.device),
            "currency": (sim.CURRENCIES, w.merchant_country[self.merchant]),
            "email_domain": (sim.EMAIL_DOMAINS, w.customer_email[d.customer]),
        }
        if name in known:
            vocabulary, codes = known[name]
            return vocab_tokens(vocabulary, codes)
        if name == "merchant_id":
            return integer_tokens(self.merchant, "m", 5)
        if name == "terminal_id":
            return integer_tokens(d.terminal, "t", 6)
        if name == "channel":
            app = (self.device == sim.DEVICES.index("mobile_ios")) | (
                self.device == sim.DEVICES.index("mobile_android")
            )
            return vocab_tokens(
                sim.CHANNELS, np.where(self.in_store, 2, np.where(app, 1, 0))
            )
        # Unknown name: a categorical with its own cardinality that mostly sticks to the
        # customer, like an account or device attribute would.
        salt = _salt(name)
        cardinality = 3 + salt % 47
        sticky = (d.customer.astype(np.int64) * 2654435761 + salt) % cardinality
        codes = np.where(
            self.rng.random(self.n) < 0.7,
            sticky,
            self.rng.integers(0, cardinality, self.n),
        )
        return vocab_tokens([f"v{k}" for k in range(cardinality)], codes)

    def numerical(self, name: str) -> tuple[np.ndarray, int]:
        """Values of a current-order numerical feature and its decimals."""
        d, w, rng, n = self.draft, self.world, self.rng, self.n

        def shipping_fee() -> np.ndarray:
            fee = np.where(rng.random(n) < 0.3, 0.0, rng.uniform(2.0, 15.0, n))
            return np.where(self.in_store, 0.0, np.round(fee, 2))

        def distance() -> np.ndarray:
            near = rng.lognormal(1.0, 1.2, n)
            far = rng.uniform(300.0, 9000.0, n)
            return np.where(d.ship_country == w.card_country[d.card], near, far)

        known = {
            "amount": (lambda: d.amount, 2),
            "item_count": (
                lambda: 1.0 + rng.poisson(np.minimum(d.amount / 50.0, 5.0)),
                0,
            ),
            "shipping_fee": (shipping_fee, 2),
            "discount_rate": (
                lambda: np.where(rng.random(n) < 0.15, rng.uniform(0.05, 0.4, n), 0.0),
                3,
            ),
            "account_age_days": (
                lambda: ((d.ts - w.customer_created[d.customer]) // sim.DAY).astype(
                    float
                ),
                0,
            ),
            "card_age_days": (
                lambda: ((d.ts - w.card_created[d.card]) // sim.DAY).astype(float),
                0,
            ),
            "billing_shipping_distance_km": (distance, 1),
            "hour_of_day": (lambda: ((d.ts % sim.DAY) // 3600).astype(float), 0),
            "seconds_since_last_login": (lambda: np.round(d.login_age), 0),
            "failed_logins_24h": (lambda: d.failed_logins.astype(float), 0),
        }
        if name in known:
            make, decimals = known[name]
            return make(), decimals
        return self.filler_number(name, eng=False), 2

    def filler_number(self, name: str, eng: bool) -> np.ndarray:
        """Plausible numbers for a feature name without known semantics."""
        salt = _salt(name)
        level = np.random.default_rng([self.config.seed, salt]).normal(
            size=self.world.n_customers
        )
        if salt % 3 == 0:  # a small count
            return self.rng.poisson(np.exp(0.5 * level[self.draft.customer])).astype(
                float
            )
        scale = 1.0 + salt % 7
        noise = self.rng.normal(0.0, 0.3 if eng else 0.5, self.n)
        return np.round(scale * np.exp(0.5 * level[self.draft.customer] + noise), 2)

    def sprinkle_nulls(self, feature: _Feature) -> _Feature:
        """Export a ``null_token_rate`` share of values as a null token."""
        tokens = self.schema.null_tokens
        if not tokens or self.config.null_token_rate == 0:
            return feature
        hit = self.rng.random(self.n) < self.config.null_token_rate
        which = vocab_tokens(list(tokens), self.rng.integers(0, len(tokens), self.n))
        text = pc.if_else(pa.array(hit), which, feature.tokens)
        values = feature.values
        if values is not None:
            values = np.where(hit, np.nan, values)
        return _Feature(text, values)

    def spelled(self, name: str, feature: _Feature) -> _Feature:
        """A numeric-code categorical with ``numeric_code_float_rate`` of its codes
        written ``3.0``-style (a fresh draw per call); other features as they are."""
        rate = self.config.numeric_code_float_rate
        if name not in self.schema.numeric_cat_features or rate == 0:
            return feature
        tokens = feature.tokens
        hit = pc.and_(
            pa.array(self.rng.random(self.n) < rate),
            pc.match_substring_regex(tokens, r"^[0-9]+$"),
        )
        empty = pa.scalar("", pa.large_string())
        with_point = pc.binary_join_element_wise(
            tokens, pa.scalar(".0", pa.large_string()), empty
        )
        return _Feature(pc.if_else(hit, with_point, tokens), feature.values)

    def labels(self) -> np.ndarray:
        """Fraud tag per order; ``unlabelled_rate`` of them -1 or null (0 = null)."""
        label = (self.draft.pattern > 0).astype(np.int64)
        unlabelled = self.rng.random(self.n) < self.config.unlabelled_rate
        as_minus_one = self.rng.random(self.n) < 0.5
        label = np.where(unlabelled & as_minus_one, -1, label)
        return np.where(unlabelled & ~as_minus_one, 2, label)  # 2 marks null

    def corrupt_histories(self, frame: pd.DataFrame) -> None:
        """Plant the two corrupt history shapes preprocessing must drop, in place."""
        schema, sep = self.schema, self.schema.separator
        ts_column = schema.history_timestamp_column("ccid")
        hist_ts = frame[ts_column]
        long_enough = np.flatnonzero(hist_ts.str.count(sep).to_numpy() >= 1)
        ragged = self._pick(long_enough, self.config.ragged_history_rate)
        columns = np.asarray(
            [schema.history_column("cid", f) for f in schema.seq_features], dtype=object
        )
        cid_ts = frame[schema.history_timestamp_column("cid")].str.count(sep).to_numpy()
        ragged = ragged[cid_ts[ragged] >= 1]
        targets = columns[self.rng.integers(0, len(columns), len(ragged))]
        for column in np.unique(targets):
            rows = frame.index[ragged[targets == column]]
            frame.loc[rows, column] = (
                frame.loc[rows, column].str.rsplit(sep, n=1).str[0]
            )
        future = self._pick(
            np.flatnonzero(hist_ts.str.len().to_numpy() > 0),
            self.config.future_history_rate,
        )
        if len(future):
            rows = frame.index[future]
            order_ts = pd.to_numeric(frame.loc[rows, schema.timestamp]).to_numpy(
                np.int64
            )
            later = (order_ts + self.rng.integers(60, sim.DAY, len(rows))).astype(str)
            head = frame.loc[rows, ts_column].str.rsplit(sep, n=1)
            frame.loc[rows, ts_column] = [
                sep.join([*parts[:-1], stamp])
                for parts, stamp in zip(head, later, strict=True)
            ]

    def _pick(self, candidates: np.ndarray, rate: float) -> np.ndarray:
        count = min(len(candidates), self.rng.binomial(self.n, rate)) if rate > 0 else 0
        return (
            np.sort(self.rng.choice(candidates, count, replace=False))
            if count
            else candidates[:0]
        )


def _to_frame(
    columns: dict[str, object], schema: RawSchema, output_format: str, ts: np.ndarray
) -> pd.DataFrame:
    """Assemble the export: all text, or numbers as numbers (``typed``)."""
    typed = output_format == "typed"
    data: dict[str, object] = {}
    numeric = set(schema.num_features) | set(schema.eng_features)
    for name, column in columns.items():
        if name == schema.label:
            if typed:
                data[name] = pd.array(np.where(column == 2, 0, column), dtype="Int8")
                data[name][column == 2] = pd.NA
            else:
                text = np.asarray(["0", "1", "-1", ""], dtype=object)
                data[name] = text[
                    np.where(column == -1, 2, np.where(column == 2, 3, column))
                ]
        elif name == schema.timestamp and typed:
            data[name] = ts.astype(np.int64)
        elif isinstance(column, _Feature):
            if typed and name in numeric:
                data[name] = column.values.astype(np.float64)
            elif typed and name in schema.numeric_cat_features:  # a float column
                data[name] = pd.to_numeric(
                    column.tokens.to_numpy(zero_copy_only=False), errors="coerce"
                ).astype(np.float64)
            else:
                data[name] = column.tokens.to_numpy(zero_copy_only=False)
        else:
            data[name] = column.to_numpy(zero_copy_only=False)
    return pd.DataFrame({c: data[c] for c in schema.all_columns()})


def _salt(name: str) -> int:
    """A stable number per feature name (Python's ``hash`` changes between runs)."""
    return zlib.crc32(name.encode())
