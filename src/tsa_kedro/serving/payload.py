"""Request and response formats of the inference handler (no Kedro, no torch).

Requests hold raw orders in the raw contract (docs/source/raw_data_contract.md):

* ``application/json``: a JSON array of objects, one per order, keyed by column name
  (``{"instances": [...]}`` is accepted too);
* ``text/csv`` and ``text/tab-separated-values``: a header row of column names, then
  one row per order, every value as text.

The label column may be left out (it is not used for scoring). Rejected with
``PayloadError``: an unsupported content type, a body that is not UTF-8, JSON nested
more than ``MAX_JSON_DEPTH`` levels deep (found by a scan before parsing, so a body such
as ``[[[[...]]]]`` cannot exhaust the parser's recursion), malformed JSON or CSV,
anything but a list of objects, an empty batch, a batch larger than the configured
maximum. Missing columns and unparsable values are rejected by the raw-order
validation that training uses as well.

Responses are ``application/json`` (an array of objects, one per order; the default)
or ``text/csv`` (a header row ``RESPONSE_COLUMNS``, then one row per order; a number
that an order does not have, and the ``error`` of an order that has none, are empty).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

JSON = "application/json"
CSV = "text/csv"
TSV = "text/tab-separated-values"
REQUEST_TYPES = (JSON, CSV, TSV)
RESPONSE_TYPES = (JSON, CSV)
RESPONSE_COLUMNS = (
    "order_id",
    "score",
    "percentile",
    "calibrated_probability",
    "error",
)
# {"instances": [{column: scalar}]}: an order's values are scalars.
MAX_JSON_DEPTH = 3
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_OPENING = np.frombuffer(b"[{", dtype=np.uint8)
_CLOSING = np.frombuffer(b"]}", dtype=np.uint8)


class PayloadError(ValueError):
    """A request or response format problem; the message says what to fix."""


def media_type(content_type: str | None) -> str:
    """``text/csv; charset=utf-8`` to ``text/csv`` (lower case)."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def _text(body: bytes | bytearray | str) -> str:
    if isinstance(body, str):
        return body
    try:
        return bytes(body).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"request body is not UTF-8 text: {exc}") from exc


def _check_size(n_orders: int, max_batch_size: int) -> None:
    if n_orders == 0:
        raise PayloadError("request holds no orders")
    if n_orders > max_batch_size:
        raise PayloadError(
            f"request holds {n_orders} orders; the maximum batch size is "
            f"{max_batch_size} (split the request)"
        )


def json_depth(text: str) -> int:
    """How deeply arrays and objects nest in JSON ``text`` (0 for a scalar).

    A linear scan that does not parse: string literals are blanked first, so brackets
    inside strings do not count. On malformed text the result is only an estimate,
    which is enough to refuse a body before the parser sees it.
    """
    skeleton = _JSON_STRING.sub('""', text).encode("utf-8")
    codes = np.frombuffer(skeleton, dtype=np.uint8)
    steps = np.isin(codes, _OPENING).astype(np.int64) - np.isin(codes, _CLOSING)
    return int(np.cumsum(steps).max(initial=0))


def _json_records(text: str, max_batch_size: int) -> pd.DataFrame:
    depth = json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise PayloadError(
            f"JSON request nests arrays and objects {depth} levels deep; at most "
            f"{MAX_JSON_DEPTH} are allowed (a list of order objects, optionally under "
            '"instances", with scalar values)'
        )
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PayloadError(f"request body is not valid JSON: {exc}") from exc
    if isinstance(data, Mapping) and isinstance(data.get("instances"), list):
        data = data["instances"]
    if not isinstance(data, list):
        raise PayloadError(
            f"JSON request must be a list of order objects, got {type(data).__name__}"
        )
    _check_size(len(data), max_batch_size)
    bad = [i for i, record in enumerate(data) if not isinstance(record, Mapping)]
    if bad:
        raise PayloadError(
            f"JSON request items must be objects keyed by column name; items {bad[:5]} "
            "are not"
        )
    return pd.DataFrame.from_records(data)


def _delimited(text: str, delimiter: str, max_batch_size: int) -> pd.DataFrame:
    rows = list(csv.reader(io.StringIO(text), delimiter=delimiter, strict=True))
    rows = [row for row in rows if row]
    if not rows:
        raise PayloadError("request holds no header row and no orders")
    header, body = rows[0], rows[1:]
    _check_size(len(body), max_batch_size)
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if duplicated:
        raise PayloadError(f"header row repeats columns {duplicated}")
    ragged = [i + 2 for i, row in enumerate(body) if len(row) != len(header)]
    if ragged:
        raise PayloadError(
            f"rows {ragged[:5]} have a different number of fields than the header "
            f"({len(header)})"
        )
    return pd.DataFrame(body, columns=header, dtype=object)


def parse_request(
    body: bytes | bytearray | str, content_type: str | None, max_batch_size: int
) -> pd.DataFrame:
    """Raw orders of a request as a DataFrame (one row per order, values as sent).

    Raises:
        PayloadError: See the module docstring.
    """
    kind = media_type(content_type)
    if kind not in REQUEST_TYPES:
        raise PayloadError(
            f"unsupported content type {content_type!r}; send one of "
            f"{list(REQUEST_TYPES)}"
        )
    text = _text(body)
    if kind == JSON:
        return _json_records(text, max_batch_size)
    try:
        return _delimited(text, "," if kind == CSV else "\t", max_batch_size)
    except csv.Error as exc:
        raise PayloadError(f"request body is not valid {kind}: {exc}") from exc


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _csv_response(predictions: Sequence[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(RESPONSE_COLUMNS)
    for row in predictions:
        unknown = set(row) - set(RESPONSE_COLUMNS)
        if unknown:
            raise PayloadError(
                f"answer fields {sorted(unknown)} have no column in the CSV response"
            )
        values = [_plain(row.get(column)) for column in RESPONSE_COLUMNS]
        writer.writerow(
            [
                "" if v is None else repr(v) if isinstance(v, float) else v
                for v in values
            ]
        )
    return buffer.getvalue()


def format_response(
    predictions: Sequence[Mapping[str, Any]], accept: str | None
) -> str:
    """Predictions as a JSON array (no accept type, ``*/*`` or ``application/json``)
    or as CSV (``text/csv``; see the module docstring).

    Raises:
        PayloadError: ``accept`` asks for another type.
    """
    kind = media_type(accept) or JSON
    if kind not in (*RESPONSE_TYPES, "*/*"):
        raise PayloadError(
            f"unsupported accept type {accept!r}; the handler answers "
            f"{list(RESPONSE_TYPES)}"
        )
    if kind == CSV:
        return _csv_response(predictions)
    return json.dumps(
        [{k: _plain(v) for k, v in row.items()} for row in predictions], allow_nan=False
    )
