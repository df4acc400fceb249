"""Engineered dense features: rolling aggregates a feature store would serve.

Names follow a small grammar, so any schema can ask for any combination:

- ``{entity}_orders_{window}``: orders of the entity in the window, current included.
- ``{entity}_amount_{sum|mean|max|std}_{window}``: ``sum`` includes the current order;
  ``mean``, ``max`` and ``std`` describe the previous orders only (NaN without any).
- ``{entity}_small_orders_{window}``: orders of at most ``small_amount_max``.
- ``{entity}_distinct_{cards|customers|terminals|merchants|countries|devices}_{window}``:
  distinct values among the entity's orders in the window (current included, counted
  over at most the last ``DISTINCT_SPAN`` orders).
- ``{entity}_days_since_first_order``, ``{entity}_seconds_since_last_order``.
- ``amount_to_{entity}_mean_ratio``: amount over the previous 30-day mean.
- ``amount_zscore_{entity}_{window}``: amount against the previous orders' mean and std.
- ``night_order_flag``: 1 for orders between 00:00 and 06:00 UTC.

``entity`` is ``cid``, ``ccid``, ``terminal`` or ``merchant``; ``window`` is a number
followed by ``h`` or ``d``. Every computation is a sort, a cumulative sum or a
searchsorted over all orders at once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

ENTITIES = ("cid", "ccid", "terminal", "merchant")
DISTINCT_TARGETS = {
    "cards": "ccid",
    "customers": "cid",
    "terminals": "terminal",
    "merchants": "merchant",
    "countries": "country",
    "devices": "device",
}
DISTINCT_SPAN = 64

_ENTITY = "(cid|ccid|terminal|merchant)"
_WINDOW = r"(\d+)([hd])"
_PATTERNS = {
    "orders": re.compile(rf"^{_ENTITY}_orders_{_WINDOW}$"),
    "amount": re.compile(rf"^{_ENTITY}_amount_(sum|mean|max|std)_{_WINDOW}$"),
    "small": re.compile(rf"^{_ENTITY}_small_orders_{_WINDOW}$"),
    "distinct": re.compile(
        rf"^{_ENTITY}_distinct_({'|'.join(DISTINCT_TARGETS)})_{_WINDOW}$"
    ),
    "first": re.compile(rf"^{_ENTITY}_days_since_first_order$"),
    "last": re.compile(rf"^{_ENTITY}_seconds_since_last_order$"),
    "ratio": re.compile(rf"^amount_to_{_ENTITY}_mean_ratio$"),
    "zscore": re.compile(rf"^amount_zscore_{_ENTITY}_{_WINDOW}$"),
    "night": re.compile(r"^night_order_flag$"),
}


def is_known_aggregate(name: str) -> bool:
    """Whether ``name`` follows the aggregate grammar of this module."""
    return any(p.match(name) for p in _PATTERNS.values())


def _seconds(number: str, unit: str) -> int:
    return int(number) * (3600 if unit == "h" else 86400)


class _EntityWindows:
    """One entity's orders sorted by (entity, time), with per-window range queries."""

    def __init__(self, key: np.ndarray, ts: np.ndarray):
        n = len(key)
        self.order = np.lexsort((np.arange(n), ts, key))
        self.key = key[self.order]
        self.ts = ts[self.order]
        self._composite = self.key.astype(np.int64) * (1 << 33) + self.ts
        new_group = np.r_[True, self.key[1:] != self.key[:-1]]
        self.group_start = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
        self.slots = np.arange(n)
        self._lower: dict[int, np.ndarray] = {}

    def lower(self, seconds: int) -> np.ndarray:
        """First slot of each order's window ``(t - seconds, t]`` within its entity."""
        if seconds not in self._lower:
            self._lower[seconds] = np.searchsorted(
                self._composite, self._composite - seconds, side="right"
            )
        return self._lower[seconds]

    def to_orders(self, sorted_values: np.ndarray) -> np.ndarray:
        """Values per sorted slot back to order-table order."""
        out = np.empty_like(sorted_values)
        out[self.order] = sorted_values
        return out

    def window_sum(
        self, values: np.ndarray, seconds: int, include_current: bool
    ) -> np.ndarray:
        cumulative = np.r_[0.0, np.cumsum(values[self.order])]
        end = self.slots + 1 if include_current else self.slots
        return self.to_orders(cumulative[end] - cumulative[self.lower(seconds)])

    def window_count(self, seconds: int, include_current: bool) -> np.ndarray:
        return self.window_sum(np.ones(len(self.order)), seconds, include_current)

    def previous_max(self, values: np.ndarray, seconds: int) -> np.ndarray:
        """Max over the previous orders in the window (sparse table range maximum)."""
        sorted_values = values[self.order].astype(np.float64)
        low, high = self.lower(seconds), self.slots  # half-open [low, high)
        span = high - low
        result = np.full(len(span), np.nan)
        has = span > 0
        level = np.zeros(len(span), np.int64)
        level[has] = np.floor(np.log2(span[has])).astype(np.int64)
        table = [sorted_values]
        for k in range(1, int(level.max(initial=0)) + 1):
            prev = table[-1]
            step = 1 << (k - 1)
            table.append(np.maximum(prev, np.r_[prev[step:], np.full(step, -np.inf)]))
        for k in np.unique(level[has]):
            rows = has & (level == k)
            width = 1 << int(k)
            result[rows] = np.maximum(table[k][low[rows]], table[k][high[rows] - width])
        return self.to_orders(result)

    def distinct(self, values: np.ndarray, seconds: int) -> np.ndarray:
        """Distinct values among the window's orders (current included)."""
        sorted_values = values[self.order].astype(np.int64)
        low = self.lower(seconds)
        back = np.arange(DISTINCT_SPAN)
        positions = self.slots[:, None] - back[None, :]
        valid = positions >= low[:, None]
        window = np.where(valid, sorted_values[np.maximum(positions, 0)], -1)
        window.sort(axis=1)
        changes = (window[:, 1:] != window[:, :-1]) & (window[:, 1:] >= 0)
        return self.to_orders(changes.sum(axis=1) + (window[:, 0] >= 0))

    def first_ts(self) -> np.ndarray:
        return self.to_orders(self.ts[self.group_start])

    def previous_ts(self) -> np.ndarray:
        prev = np.where(
            self.slots > self.group_start, self.ts[np.maximum(self.slots - 1, 0)], -1
        )
        return self.to_orders(prev.astype(np.float64))


class _Aggregator:
    """Computes one named aggregate at a time, sharing sorts between names."""

    def __init__(
        self,
        keys: Mapping[str, np.ndarray],
        ts: np.ndarray,
        amount: np.ndarray,
        small_amount_max: float,
    ):
        self.keys, self.ts, self.amount = keys, ts, amount
        self.small_amount_max = small_amount_max
        self._windows: dict[str, _EntityWindows] = {}

    def entity(self, name: str) -> _EntityWindows:
        if name not in self._windows:
            self._windows[name] = _EntityWindows(self.keys[name], self.ts)
        return self._windows[name]

    def mean_std(self, ent: str, seconds: int) -> tuple[np.ndarray, np.ndarray]:
        """Mean and sample std of the previous orders' amounts in the window."""
        w = self.entity(ent)
        count = w.window_count(seconds, include_current=False)
        total = w.window_sum(self.amount, seconds, include_current=False)
        squares = w.window_sum(self.amount**2, seconds, include_current=False)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(count > 0, total / count, np.nan)
            var = np.where(count > 1, (squares - count * mean**2) / (count - 1), np.nan)
        return mean, np.sqrt(np.maximum(var, 0.0))

    def orders(self, m: re.Match) -> np.ndarray:
        return self.entity(m[1]).window_count(
            _seconds(m[2], m[3]), include_current=True
        )

    def amount_stat(self, m: re.Match) -> np.ndarray:
        seconds = _seconds(m[3], m[4])
        if m[2] == "sum":
            return self.entity(m[1]).window_sum(
                self.amount, seconds, include_current=True
            )
        if m[2] == "max":
            return self.entity(m[1]).previous_max(self.amount, seconds)
        mean, std = self.mean_std(m[1], seconds)
        return mean if m[2] == "mean" else std

    def small(self, m: re.Match) -> np.ndarray:
        small = (self.amount <= self.small_amount_max).astype(np.float64)
        return self.entity(m[1]).window_sum(
            small, _seconds(m[2], m[3]), include_current=True
        )

    def distinct(self, m: re.Match) -> np.ndarray:
        target = self.keys[DISTINCT_TARGETS[m[2]]]
        return self.entity(m[1]).distinct(target, _seconds(m[3], m[4]))

    def first(self, m: re.Match) -> np.ndarray:
        return (self.ts - self.entity(m[1]).first_ts()) / 86400.0

    def last(self, m: re.Match) -> np.ndarray:
        prev = self.entity(m[1]).previous_ts()
        return np.where(prev >= 0, self.ts - prev, np.nan)

    def ratio(self, m: re.Match) -> np.ndarray:
        mean, _ = self.mean_std(m[1], 30 * 86400)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(mean > 0, self.amount / mean, np.nan)

    def zscore(self, m: re.Match) -> np.ndarray:
        mean, std = self.mean_std(m[1], _seconds(m[2], m[3]))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(std > 0, (self.amount - mean) / std, np.nan)

    def night(self, m: re.Match) -> np.ndarray:
        return ((self.ts % 86400) < 6 * 3600).astype(np.float64)


_METHODS = {
    "orders": _Aggregator.orders,
    "amount": _Aggregator.amount_stat,
    "small": _Aggregator.small,
    "distinct": _Aggregator.distinct,
    "first": _Aggregator.first,
    "last": _Aggregator.last,
    "ratio": _Aggregator.ratio,
    "zscore": _Aggregator.zscore,
    "night": _Aggregator.night,
}


def engineered_features(
    names: list[str],
    keys: Mapping[str, np.ndarray],
    ts: np.ndarray,
    amount: np.ndarray,
    small_amount_max: float,
) -> dict[str, np.ndarray]:
    """Compute every name of the grammar; names outside it are left out.

    Args:
        names: Engineered feature names asked for.
        keys: Integer codes per order for ``cid``, ``ccid``, ``terminal``,
            ``merchant``, ``country`` and ``device``.
        ts: Order times, epoch seconds.
        amount: True order amounts (before any null tokens).
        small_amount_max: Threshold of ``small_orders``.

    Returns:
        ``{name: float64 array}`` for the names this module knows.
    """
    aggregator = _Aggregator(keys, ts, amount, small_amount_max)
    out: dict[str, np.ndarray] = {}
    for name in names:
        for kind, pattern in _PATTERNS.items():
            if match := pattern.match(name):
                values = _METHODS[kind](aggregator, match)
                out[name] = np.asarray(values, dtype=np.float64)
                break
    return out
