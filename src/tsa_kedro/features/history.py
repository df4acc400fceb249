"""The order histories of one id type (``cid``, ``ccid``): checked, staged, gathered.

``scan_history`` splits the history timestamps, flags the rows to reject (a history
column holding another number of values than the timestamps, a null-token timestamp, a
history order later than the current one) and stages the encoded tokens of every
history column feature-major in the timestamps' layout: column by column
(``_stage_by_column``, chunks) or each kind of column in one call (``_stage_together``,
requests), the same arrays either way. ``sequences`` keeps the last ``seq_len - 1``
history orders of each kept row and moves them into the output rows with one gather per
staged array.

Rejected rows are only flagged here (``History.ragged``, ``missing_time``,
``negative``); ``tensors.build_tensors`` drops and counts them. Rejected inputs
(``KeyError`` / ``ValueError`` naming the column): a missing history column, a history
timestamp or numerical token that does not parse as a number.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc

from tsa_kedro.features.columns import (
    RawColumns,
    aligned_tokens,
    parse_tokens,
    split_column,
    split_column_in_place,
    split_columns_together,
)
from tsa_kedro.features.contract import EXTRA_NUM_COLUMNS
from tsa_kedro.features.encoding import (
    CategoryCounts,
    PreparedTransforms,
    impute_scale,
    lookup_positions,
)
from tsa_kedro.schema import RawSchema


@dataclass
class History:
    """Lengths, validity and the staged, encoded tokens of one id type.

    The tokens of every history column are staged in the layout of the history
    timestamps (row ``r``'s tokens at ``offsets[r]:offsets[r + 1]``), so one gather
    per array moves them into the output, whatever the number of features. The arrays
    are feature-major: staging a column writes one contiguous row, where a token-major
    array would take one scattered write per token (about a fifth of a production-width
    chunk's build time in a profile; docs/preprocessing.md); ``sequences`` transposes
    the kept tokens once.
    """

    length: np.ndarray  # history orders per row
    ragged: np.ndarray  # bool per row: a column's value count differs from length
    missing_time: np.ndarray  # bool per row: a history timestamp is a null token
    negative: np.ndarray  # bool per row: a history order is later than the current
    offsets: np.ndarray  # int64 start of each row's tokens in the staged arrays
    delta: np.ndarray  # float64 ``t_current - t_k`` per staged token
    cat: np.ndarray | None  # int32 [n_cat, tokens] codes
    status: np.ndarray | None  # int8 [n_cat, tokens] PRESENT / MISSING / UNSEEN
    num: np.ndarray | None  # float32 [n_num + 2, tokens] scaled values, delta, 1


def scan_history(
    raw: RawColumns,
    schema: RawSchema,
    prepared: PreparedTransforms,
    id_type: str,
    now: np.ndarray,
    delta_cap_seconds: float,
) -> History:
    """Split, check, encode and stage every history column of ``id_type`` once;
    time deltas above ``delta_cap_seconds`` are set to it in the staged rows."""
    sep = schema.separator
    time_column = schema.history_timestamp_column(id_type)
    time_tokens, offsets, empty = split_column(raw, time_column, sep)
    counts = np.diff(offsets)
    length = np.where(empty, 0, counts)

    id_column = schema.history_order_id_column(id_type)
    id_text = raw.history_text(id_column)
    raw.release(id_column)
    id_counts = pc.count_substring(id_text, sep).to_numpy(zero_copy_only=False) + 1
    id_empty = np.asarray(pc.binary_length(id_text)) == 0
    ragged = np.where(length == 0, ~id_empty, id_counts != length)

    times = parse_tokens(time_tokens, prepared.null_tokens, time_column)
    del time_tokens
    tokens = times.size
    token_row = np.repeat(np.arange(len(raw)), counts)
    real = np.repeat(length > 0, counts)
    delta = now[token_row] - times
    missing_time = np.zeros(len(raw), dtype=bool)
    missing_time[token_row[real & np.isnan(times)]] = True
    negative = np.zeros(len(raw), dtype=bool)
    negative[token_row[real & (delta < 0)]] = True
    del token_row, real, times

    n_cat, n_num = len(prepared.categorical), prepared.seq_min.size
    cat = np.zeros((n_cat, tokens), dtype=np.int32)
    status = np.zeros((n_cat, tokens), dtype=np.int8)
    num = np.zeros((n_num + EXTRA_NUM_COLUMNS, tokens), dtype=np.float32)
    num[n_num] = np.minimum(delta, delta_cap_seconds)
    num[n_num + 1] = 1.0
    staged = History(
        length=length,
        ragged=ragged,
        missing_time=missing_time,
        negative=negative,
        offsets=offsets,
        delta=delta,
        cat=cat,
        status=status,
        num=num,
    )
    if raw.together:
        _stage_together(raw, schema, prepared, id_type, staged)
    else:
        _stage_by_column(raw, schema, prepared, id_type, staged)
    return staged


def _stage_by_column(
    raw: RawColumns,
    schema: RawSchema,
    prepared: PreparedTransforms,
    id_type: str,
    history: History,
) -> None:
    """Encode and stage the feature columns of ``id_type`` one at a time."""
    sep, n_cat = schema.separator, len(prepared.categorical)
    offsets, length, ragged = history.offsets, history.length, history.ragged
    cat, status, num = history.cat, history.status, history.num
    counts = np.diff(offsets)
    for i, feature in enumerate(schema.seq_features):
        column = schema.history_column(id_type, feature)
        encoder = prepared.categorical.get(feature)
        in_place = encoder is not None and encoder.history is not None
        split = split_column_in_place if in_place else split_column
        values, column_offsets, column_empty = split(raw, column, sep)
        column_counts = np.diff(column_offsets)
        ragged |= np.where(length == 0, ~column_empty, column_counts != length)
        # a column agrees with the timestamps on every row but its ragged ones: only
        # the tokens of agreeing rows are staged (ragged rows are dropped anyway)
        source = target = slice(None)
        if not np.array_equal(column_counts, counts):
            source, target = aligned_tokens(
                column_offsets, offsets, np.flatnonzero(column_counts == counts)
            )
        if i < n_cat:
            encoder = encoder.history if in_place else encoder
            position = lookup_positions(values, encoder)[source]
            cat[i, target] = encoder.codes[position]
            status[i, target] = encoder.status[position]
        else:
            j = i - n_cat
            parsed = parse_tokens(values, prepared.null_tokens, column)[source]
            num[j, target] = impute_scale(
                parsed,
                prepared.seq_min[j],
                prepared.seq_span[j],
                prepared.seq_default[j],
                prepared.seq_log[j],
            )


def _stage_together(
    raw: RawColumns,
    schema: RawSchema,
    prepared: PreparedTransforms,
    id_type: str,
    history: History,
) -> None:
    """``_stage_by_column`` with each kind of column split (and the numerical ones
    parsed and scaled) in one pass: a request of one order has hundreds of history
    columns of a few tokens each, where per-column calls, not tokens, are the cost.
    Same tensors, same errors naming the column."""
    sep, rows = schema.separator, len(raw)
    if rows == 0:
        return
    n_cat = len(prepared.categorical)
    offsets, length = history.offsets, history.length
    counts = np.diff(offsets)
    kinds = (schema.seq_features[:n_cat], schema.seq_features[n_cat:])
    for first, features in zip((0, n_cat), kinds, strict=True):
        if not features:
            continue
        columns = [schema.history_column(id_type, f) for f in features]
        tokens, cells, empty = split_columns_together(raw, columns, sep)
        cell_counts = np.diff(cells).reshape(len(features), rows)
        history.ragged |= np.where(length == 0, ~empty, cell_counts != length).any(0)
        starts = cells[::rows]  # first token of each column (and the end)

        def aligned(k: int) -> tuple[slice | np.ndarray, slice | np.ndarray]:
            """Source tokens of column k (within its own tokens) and target rows:
            only rows whose token count agrees with the timestamps."""
            if np.array_equal(cell_counts[k], counts):
                return slice(None), slice(None)
            own = cells[k * rows : (k + 1) * rows + 1] - starts[k]
            return aligned_tokens(
                own, offsets, np.flatnonzero(cell_counts[k] == counts)
            )

        if first == 0:
            feature = [prepared.combined.features[f] for f in features]
            codes, status = prepared.combined.encode(
                tokens, np.repeat(feature, np.diff(starts))
            )
            if (cell_counts == counts).all():  # the common case: no ragged row
                history.cat[:] = codes.reshape(len(features), -1)
                history.status[:] = status.reshape(len(features), -1)
                continue
            for k in range(len(features)):
                source, target = aligned(k)
                own = slice(int(starts[k]), int(starts[k + 1]))
                history.cat[k, target] = codes[own][source]
                history.status[k, target] = status[own][source]
            continue
        try:
            parsed = parse_tokens(tokens, prepared.null_tokens, columns[0])
        except ValueError:
            for k, column in enumerate(columns):  # raises naming the column at fault
                own = tokens.slice(int(starts[k]), int(starts[k + 1] - starts[k]))
                parse_tokens(own, prepared.null_tokens, column)
            raise
        scale = (
            prepared.seq_min,
            prepared.seq_span,
            prepared.seq_default,
            prepared.seq_log,
        )
        if (cell_counts == counts).all():  # the common case: one scaling call
            values = parsed.reshape(len(features), -1)  # (n_num, tokens)
            by_row = (a[:, None] for a in scale)  # each feature's row of values
            history.num[: len(features)] = impute_scale(values, *by_row)
            continue
        for k in range(len(features)):
            source, target = aligned(k)
            own = parsed[starts[k] : starts[k + 1]][source]
            history.num[k, target] = impute_scale(own, *(a[k] for a in scale))


@dataclass
class _Gather:
    """Where the kept history tokens of one id type come from and go to."""

    source_row: np.ndarray  # input row of each kept token
    within: np.ndarray  # index of the token inside its row's history
    target: np.ndarray  # flat cell ``out_row * seq_len + position`` in the output


def _gather_plan(length: np.ndarray, rows: np.ndarray, seq_len: int) -> _Gather:
    """Keep the last ``seq_len - 1`` history orders of each kept row, left-padded."""
    n = length[rows]
    kept = np.minimum(n, seq_len - 1)
    total = int(kept.sum())
    first = np.cumsum(kept) - kept
    rank = np.arange(total) - np.repeat(first, kept)  # 0 .. kept-1 within the row
    within = np.repeat(n - kept, kept) + rank
    position = np.repeat(seq_len - 1 - kept, kept) + rank
    out_row = np.repeat(np.arange(len(rows)), kept)
    return _Gather(
        source_row=np.repeat(rows, kept),
        within=within,
        target=out_row * seq_len + position,
    )


def sequences(
    hist: History,
    *,
    counts: CategoryCounts,
    rows: np.ndarray,
    seq_len: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The history rows of one id type's sequences, row-major like the output.

    Returns ``(cat [rows * seq_len, n_cat], num [rows * seq_len, n_num + 2],
    deltas)``: the kept staged tokens gathered row by row into their cells, the rest
    zero. The staged arrays are released once used.
    """
    gather = _gather_plan(hist.length, rows, seq_len)
    source = hist.offsets[gather.source_row] + gather.within
    counts.add_all(hist.status[:, source])
    hist.status = None
    # each staged array is freed once its kept tokens are taken, before the output is
    # allocated; the kept tokens are written into it transposed
    kept, hist.cat = hist.cat[:, source], None
    cat = np.zeros((rows.size * seq_len, kept.shape[0]), dtype=np.int32)
    cat[gather.target] = kept.T
    kept, hist.num = hist.num[:, source], None
    num = np.zeros((rows.size * seq_len, kept.shape[0]), dtype=np.float32)
    num[gather.target] = kept.T
    del kept
    return cat, num, hist.delta[source]
