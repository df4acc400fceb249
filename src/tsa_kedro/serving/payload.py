"""Request and response formats of the inference handler (no Kedro, no torch).

Requests hold raw orders in the raw contract (docs/source/raw_data_contract.md):

* ``application/json``: a JSON array of objects, one per order, keyed by column name
  (``{"instances": [...]}`` is accepted too);
* ``text/csv`` and ``text/tab-separated-values``: a header row of column names, then
  one row per order, every value as text.

The label column may be left out (it is not used for scoring).

Reason codes (docs/source/explain.md) are asked for per request: in a JSON object
body, ``{"instances": [...], "explain": true, "top_k": 5}``; for any content type,
with the query parameters ``?explain=true&top_k=5`` of the local endpoint
(``apply_query``). ``top_k`` defaults to 3 and must be an integer from 1 to
``MAX_TOP_K``; ``explain`` a JSON boolean (``true``/``false``, ``1``/``0`` in a
query). The options travel with the parsed orders in ``DataFrame.attrs``
(``EXPLAIN_ATTR``: the ``top_k`` to explain with, absent when not asked). Rejected
with ``PayloadError`` naming the field: a bad ``explain`` or ``top_k``, options both
in the body and in the query, an unknown or repeated query parameter. Rejected with
``PayloadError``: an unsupported content type, a body that is not UTF-8, JSON nested
more than ``MAX_JSON_DEPTH`` levels deep (found by a scan before parsing, so a body such
as ``[[[[...]]]]`` cannot exhaust the parser's recursion), malformed JSON or CSV,
anything but a list of objects, an empty batch, a batch larger than the configured
maximum. Missing columns and unparsable values are rejected by the raw-order
validation that training uses as well.

Responses are ``application/json`` (an array of objects, one per order; the default)
or ``text/csv`` (a header row ``RESPONSE_COLUMNS``, then one row per order; a number
that an order does not have, and the ``error`` of an order that has none, are empty;
with reason codes the header adds ``REASON_COLUMNS``, texts of ``reason_strings``).
With reason codes a JSON answer adds ``reasons`` to every scored order.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl

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
# CSV answers with reason codes add these (reason_strings).
REASON_COLUMNS = ("reason_features", "reason_cid_orders", "reason_ccid_orders")
EXPLAIN_ATTR = "explain_top_k"
DEFAULT_TOP_K = 3
MAX_TOP_K = 50  # as tsa_kedro.models.explain.MAX_TOP_K
_QUERY_FIELDS = ("explain", "top_k")
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
    options = None
    if isinstance(data, Mapping) and isinstance(data.get("instances"), list):
        if any(field in data for field in _QUERY_FIELDS):
            options = explain_top_k(
                data.get("explain", False),
                data.get("top_k", DEFAULT_TOP_K),
                "JSON body field",
            )
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
    frame = pd.DataFrame.from_records(data)
    if options is not None:
        frame.attrs[EXPLAIN_ATTR] = options
    return frame


def explain_top_k(explain: Any, top_k: Any, where: str) -> int | None:
    """The ``top_k`` to explain with, or None when ``explain`` is false.

    ``where`` says where the values came from (``JSON body field``, ``query
    parameter``) in error messages.

    Raises:
        PayloadError: ``explain`` is not a boolean, ``top_k`` not an integer from 1
            to ``MAX_TOP_K`` (booleans and floats are rejected).
    """
    if not isinstance(explain, bool):
        raise PayloadError(f"{where} 'explain' must be true or false, got {explain!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int):
        raise PayloadError(
            f"{where} 'top_k' must be an integer from 1 to {MAX_TOP_K}, got {top_k!r}"
        )
    if not 1 <= top_k <= MAX_TOP_K:
        raise PayloadError(
            f"{where} 'top_k' must be from 1 to {MAX_TOP_K}, got {top_k}"
        )
    return top_k if explain else None


def apply_query(orders: pd.DataFrame, query: str | None) -> pd.DataFrame:
    """Set the reason-code options of ``orders`` from a URL query string
    (``explain=true&top_k=5``); an empty query changes nothing.

    Raises:
        PayloadError: An unknown or repeated parameter, a bad value (see
            ``explain_top_k``), or options also given in the JSON body.
    """
    if not query:
        return orders
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError as exc:
        raise PayloadError(f"query string {query!r} is malformed: {exc}") from exc
    fields = [name for name, _ in pairs]
    unknown = sorted(set(fields) - set(_QUERY_FIELDS))
    if unknown:
        raise PayloadError(
            f"unknown query parameters {unknown}; the endpoint reads "
            f"{list(_QUERY_FIELDS)}"
        )
    repeated = sorted({name for name in fields if fields.count(name) > 1})
    if repeated:
        raise PayloadError(f"query parameters {repeated} are repeated")
    if EXPLAIN_ATTR in orders.attrs:
        raise PayloadError(
            "reason-code options are given both in the JSON body and in the query; "
            "give them once"
        )
    values = dict(pairs)
    flags = {"true": True, "1": True, "false": False, "0": False}
    text = values.get("explain", "false")
    explain = flags.get(text.lower(), text)
    top_k: Any = values.get("top_k", DEFAULT_TOP_K)
    if isinstance(top_k, str) and top_k.strip().isdigit():
        top_k = int(top_k)
    options = explain_top_k(explain, top_k, "query parameter")
    if options is not None:
        orders.attrs[EXPLAIN_ATTR] = options
    return orders


def reason_strings(reasons: Mapping[str, Any] | None) -> dict[str, str | None]:
    """An answer's ``reasons`` as the three ``REASON_COLUMNS`` texts:
    ``name:attribution`` (features) or ``position:attribution`` (past orders), joined
    by ``;``, largest first, attributions to 4 significant digits; an empty text
    when nothing pushed the score up, None for all three without ``reasons``."""
    if reasons is None:
        return dict.fromkeys(REASON_COLUMNS)

    def joined(entries: Sequence[Mapping[str, Any]], key: str) -> str:
        return ";".join(f"{e[key]}:{e['attribution']:.4g}" for e in entries)

    return {
        "reason_features": joined(reasons["features"], "name"),
        "reason_cid_orders": joined(reasons["cid_orders"], "position"),
        "reason_ccid_orders": joined(reasons["ccid_orders"], "position"),
    }


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
    explained = any("reasons" in row for row in predictions)
    columns = RESPONSE_COLUMNS + (REASON_COLUMNS if explained else ())
    writer.writerow(columns)
    for answer in predictions:
        row = dict(answer)
        if explained:
            row.update(reason_strings(row.pop("reasons", None)))
        unknown = set(row) - set(columns)
        if unknown:
            raise PayloadError(
                f"answer fields {sorted(unknown)} have no column in the CSV response"
            )
        values = [_plain(row.get(column)) for column in columns]
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
