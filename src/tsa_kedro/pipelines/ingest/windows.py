"""Split date windows of the ingest parameters, validated together."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SPLITS = ("train", "vali", "cali")
DAY = 86400


class IngestConfigError(ValueError):
    """An ingest parameter is missing or inconsistent; the message names it."""


@dataclass(frozen=True)
class Window:
    """A split's UTC calendar days, both ends included."""

    split: str
    start: dt.date
    end: dt.date

    @property
    def start_epoch(self) -> int:
        """First second of the window."""
        return _epoch(self.start)

    @property
    def stop_epoch(self) -> int:
        """First second after the window."""
        return _epoch(self.end) + DAY

    def overlaps(self, other: Window) -> bool:
        return self.start <= other.end and other.start <= self.end


def split_windows(ingest: Mapping[str, Any]) -> dict[str, Window]:
    """Every split's window from the ``ingest`` parameters, checked against the others.

    Raises:
        IngestConfigError: A window is missing or not ``YYYY-MM-DD`` dates, ends before
            it starts, vali or cali does not start after train ends, or vali and cali
            overlap.
    """
    windows_params = ingest.get("windows")
    if not isinstance(windows_params, Mapping):
        raise IngestConfigError("parameter ingest.windows is missing")
    windows = {}
    for split in SPLITS:
        if split not in windows_params:
            raise IngestConfigError(f"parameter ingest.windows.{split} is missing")
        bounds = windows_params[split]
        start = _date(split, "start", bounds)
        end = _date(split, "end", bounds)
        if end < start:
            raise IngestConfigError(
                f"parameter ingest.windows.{split}: end {end} is before start {start}"
            )
        windows[split] = Window(split, start, end)
    train = windows["train"]
    for split in ("vali", "cali"):
        if windows[split].start <= train.end:
            raise IngestConfigError(
                f"parameter ingest.windows.{split}.start ({windows[split].start}) must "
                f"come after ingest.windows.train.end ({train.end}): {split} must not "
                f"overlap or precede train"
            )
    if windows["vali"].overlaps(windows["cali"]):
        raise IngestConfigError(
            f"parameters ingest.windows.vali ({windows['vali'].start}..{windows['vali'].end}) "
            f"and ingest.windows.cali ({windows['cali'].start}..{windows['cali'].end}) overlap"
        )
    return windows


def _date(split: str, key: str, bounds: Any) -> dt.date:
    name = f"ingest.windows.{split}.{key}"
    if not isinstance(bounds, Mapping) or key not in bounds:
        raise IngestConfigError(f"parameter {name} is missing")
    value = bounds[key]
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError as exc:
        raise IngestConfigError(
            f"parameter {name} must be a YYYY-MM-DD date, got {value!r}"
        ) from exc


def _epoch(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp())
