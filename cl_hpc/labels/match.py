"""Which outcome labels which prediction: the join itself, on integer arrays (no I/O).

The rules, as in Facebook's online joiner (He et al. 2014), with a waiting window:

- an outcome naming a ``request_id`` and a ``row`` belongs to that row of the request; one naming
  only the ``request_id`` (row null) belongs to every row of it; such an outcome is looked for up
  to ``lookback`` after its prediction (further back, or before it, it is unmatched);
- an outcome naming only a ``unit`` belongs to that unit's latest prediction at or before it,
  within the window (``pandas.merge_asof`` by unit);
- a prediction is labelled by the earliest outcome that belongs to it, carries a value and arrived
  within [prediction time, prediction time + window]; the other outcomes that belong to it are
  superseded, or outside the window.

Request ids and units of both streams are coded against one dictionary, so every comparison
after that is between integers (sort + searchsorted, no string hashing per pair).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

NONE = -1  # a null code, row, or "no outcome"


@dataclass(frozen=True)
class Keys:
    """One stream's join keys: request ids and units as codes shared with the other stream."""

    request: np.ndarray  # int64 code; NONE = null
    row: np.ndarray  # int64; NONE = null (an outcome for every row of its request)
    unit: np.ndarray  # int64 code; NONE = null
    ts: np.ndarray  # int64 microseconds

    def __len__(self) -> int:
        return len(self.ts)


@dataclass(frozen=True)
class Match:
    label_of: np.ndarray  # per prediction: the outcome that labels it, or NONE
    delay_us: np.ndarray  # per prediction: outcome time - prediction time (where labelled)
    used: np.ndarray  # per outcome: it labels at least one prediction
    matched: np.ndarray  # per outcome: it belongs to at least one prediction
    in_window: np.ndarray  # per outcome: it arrived within the window of one it belongs to
    target_us: np.ndarray  # per outcome: time of the latest prediction it belongs to (its own time if none)


def encode(predictions: pa.Table, outcomes: pa.Table, ts_p: np.ndarray, ts_o: np.ndarray) -> tuple[Keys, Keys]:
    """Both streams' keys, coded against the same dictionaries."""
    request = _codes(predictions.column("request_id"), outcomes.column("request_id"))
    unit = _codes(predictions.column("unit"), outcomes.column("unit"))
    n = predictions.num_rows
    return (Keys(request[:n], _rows(predictions.column("row")), unit[:n], ts_p),
            Keys(request[n:], _rows(outcomes.column("row")), unit[n:], ts_o))


def match(p: Keys, o: Keys, has_value: np.ndarray, window_us: int, lookback_us: int) -> Match:
    o_idx, p_idx = candidates(p, o, window_us, lookback_us)
    delay = o.ts[o_idx] - p.ts[p_idx]
    within = delay <= window_us
    label_of = np.full(len(p), NONE, dtype=np.int64)
    delay_us = np.zeros(len(p), dtype=np.int64)
    used = np.zeros(len(o), dtype=bool)
    chosen = _earliest(o, o_idx, p_idx, within & has_value[o_idx])
    label_of[p_idx[chosen]] = o_idx[chosen]
    delay_us[p_idx[chosen]] = delay[chosen]
    used[o_idx[chosen]] = True
    in_window = np.zeros(len(o), dtype=bool)
    in_window[o_idx[within]] = True
    matched, target_us = _targets(p, o, o_idx, p_idx)
    return Match(label_of=label_of, delay_us=delay_us, used=used, matched=matched, in_window=in_window,
                 target_us=target_us)


def candidates(p: Keys, o: Keys, window_us: int, lookback_us: int) -> tuple[np.ndarray, np.ndarray]:
    """(outcome index, prediction index) of every pair where the outcome belongs to the prediction."""
    pairs = [_by_request_row(p, o), _by_request(p, o)]
    o_idx = np.concatenate([a for a, _ in pairs])
    p_idx = np.concatenate([b for _, b in pairs])
    delay = o.ts[o_idx] - p.ts[p_idx]
    keep = (delay >= 0) & (delay <= lookback_us)
    by_unit = _by_unit(p, o, window_us)
    return np.concatenate([o_idx[keep], by_unit[0]]), np.concatenate([p_idx[keep], by_unit[1]])


def _by_request_row(p: Keys, o: Keys) -> tuple[np.ndarray, np.ndarray]:
    sel = np.flatnonzero((o.request != NONE) & (o.row != NONE))
    if not len(sel) or not len(p):
        return _empty()
    width = int(max(p.row.max(), o.row[sel].max())) + 1
    p_key, o_key = p.request * width + p.row, o.request[sel] * width + o.row[sel]
    order = np.argsort(p_key, kind="stable")
    pos = np.minimum(np.searchsorted(p_key[order], o_key), len(order) - 1)
    hit = p_key[order][pos] == o_key  # a (request, row) logged twice: the first one
    return sel[hit], order[pos[hit]]


def _by_request(p: Keys, o: Keys) -> tuple[np.ndarray, np.ndarray]:
    sel = np.flatnonzero((o.request != NONE) & (o.row == NONE))
    if not len(sel) or not len(p):
        return _empty()
    order = np.argsort(p.request, kind="stable")
    ranked = p.request[order]
    low = np.searchsorted(ranked, o.request[sel], "left")
    count = np.searchsorted(ranked, o.request[sel], "right") - low
    offset = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    return np.repeat(sel, count), order[np.repeat(low, count) + offset]


def _by_unit(p: Keys, o: Keys, window_us: int) -> tuple[np.ndarray, np.ndarray]:
    sel = np.flatnonzero((o.request == NONE) & (o.unit != NONE))
    mine = np.flatnonzero(p.unit != NONE)
    if not len(sel) or not len(mine):
        return _empty()
    left = pd.DataFrame({"ts": o.ts[sel], "unit": o.unit[sel], "o": sel}).sort_values("ts", kind="stable")
    right = pd.DataFrame({"ts": p.ts[mine], "unit": p.unit[mine], "p": mine}).sort_values("ts", kind="stable")
    found = pd.merge_asof(left, right, on="ts", by="unit", direction="backward", tolerance=window_us)
    found = found[found["p"].notna()]
    return found["o"].to_numpy(np.int64), found["p"].to_numpy(np.int64)


def _earliest(o: Keys, o_idx: np.ndarray, p_idx: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """Indices into the pairs: for each prediction, its earliest eligible outcome (ties: the first read)."""
    pairs = np.flatnonzero(eligible)
    order = pairs[np.lexsort((o_idx[pairs], o.ts[o_idx[pairs]], p_idx[pairs]))]
    first = np.ones(len(order), dtype=bool)
    first[1:] = p_idx[order][1:] != p_idx[order][:-1]
    return order[first]


def _targets(p: Keys, o: Keys, o_idx: np.ndarray, p_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    matched = np.zeros(len(o), dtype=bool)
    matched[o_idx] = True
    target = o.ts.copy()
    latest = np.full(len(o), np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(latest, o_idx, p.ts[p_idx])
    target[matched] = latest[matched]
    return matched, target


def _codes(left: pa.ChunkedArray, right: pa.ChunkedArray) -> np.ndarray:
    chunks = pc.cast(left, pa.string()).chunks + pc.cast(right, pa.string()).chunks
    both = pa.chunked_array(chunks, type=pa.string()).combine_chunks()
    coded = pc.dictionary_encode(both).indices
    return np.asarray(pc.fill_null(pc.cast(coded, pa.int64()), NONE).to_numpy(zero_copy_only=False))


def _rows(column: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.fill_null(pc.cast(column, pa.int64()), NONE).to_numpy(zero_copy_only=False))


def _empty() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
