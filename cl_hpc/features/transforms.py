"""Bundled transformations for feature views: windowed aggregates per entity.

A transformation takes the source rows of a partition plus the view's ``lookback`` of history before
it (a pandas frame) and returns one row per source event: the entity key(s), the event time, and the
features as they stood at that event. Any importable function with that shape can be a view's
``transform``; this one covers the common case.

``windowed_aggregates`` computes, for each event of entity k at time t, aggregates over the entity's
rows in the window (t - w, t]: the event itself and every tie at t are in, a row exactly w before is
out. It is vectorised (no Python loop per entity): rows sorted by (entity, time) get a composite
int64 key, so one ``searchsorted`` finds every window's first row, and cumulative sums give counts,
sums and means in O(n log n). 500k rows take well under a second.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from cl_hpc.errors import ConfigError

AGGREGATIONS = ("sum", "mean")  # the count is always there: events_<window>


def windowed_aggregates(frame: pd.DataFrame, *, entity: str, timestamp: str, windows: Sequence[str],
                        aggregations: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """Per event: ``events_<w>`` (the entity's row count in the window) and ``<column>_<agg>_<w>``
    for each column's aggregations (sum, mean) and each window, e.g. ``amount_mean_24h``."""
    spans = {w: _window(w) for w in windows}
    _check(frame, entity, timestamp, aggregations)
    ordered = frame.sort_values([entity, timestamp], kind="stable")
    codes = pd.factorize(ordered[entity])[0].astype(np.int64)
    times = ordered[timestamp].to_numpy("datetime64[us]").astype(np.int64)
    origin = times.min() if len(times) else 0
    out = {entity: ordered[entity].to_numpy(), timestamp: ordered[timestamp].to_numpy()}
    for label, span in spans.items():
        # Shifting by the widest window keeps (time - span) >= 0, so a window never reaches into the
        # previous entity's rows of the composite key.
        shift = max(spans.values())
        key = codes * _stride(times, origin, shift, int(codes.max(initial=0)) + 1) + (times - origin + shift)
        last = np.searchsorted(key, key, side="right") - 1  # every tie at t is in the window
        first = np.searchsorted(key, key - span, side="right")  # a row exactly span before is out
        count = (last - first + 1).astype(np.int64)
        out[f"events_{label}"] = count
        for column, aggs in aggregations.items():
            sums = _window_sums(ordered[column].to_numpy(np.float64), first, last)
            for agg in aggs:
                out[f"{column}_{agg}_{label}"] = sums if agg == "sum" else sums / count
    return pd.DataFrame(out, index=ordered.index).sort_index()


def _window(label: str) -> int:
    try:
        span = pd.Timedelta(label)
    except ValueError as exc:
        raise ConfigError(f"windowed_aggregates: window {label!r} is not a duration; use e.g. '1h', '24h'") from exc
    if span <= pd.Timedelta(0):
        raise ConfigError(f"windowed_aggregates: window {label!r} must be positive")
    return int(span / pd.Timedelta(microseconds=1))


def _stride(times: np.ndarray, origin: int, shift: int, entities: int) -> int:
    """Room for one entity's (shifted) times in the composite key; int64 must hold codes * stride."""
    stride = int(times.max() - origin + 2 * shift + 1) if len(times) else 1
    if entities * stride >= np.iinfo(np.int64).max:
        raise ConfigError(f"windowed_aggregates: {entities} entities over {pd.Timedelta(microseconds=stride)} do not "
                          f"fit one int64 key; materialize shorter partitions (data.freq) or a shorter lookback")
    return stride


def _window_sums(values: np.ndarray, first: np.ndarray, last: np.ndarray) -> np.ndarray:
    cumulative = np.concatenate([[0.0], np.cumsum(values)])
    return cumulative[last + 1] - cumulative[first]


def _check(frame: pd.DataFrame, entity: str, timestamp: str, aggregations: Mapping[str, Sequence[str]]) -> None:
    missing = [c for c in (entity, timestamp, *aggregations) if c not in frame.columns]
    if missing:
        raise ConfigError(f"windowed_aggregates: the source has no column(s) {missing}; it has {list(frame.columns)} "
                          f"(check the view's params and source)")
    bad = sorted({a for aggs in aggregations.values() for a in aggs} - set(AGGREGATIONS))
    if bad:
        raise ConfigError(f"windowed_aggregates: unknown aggregation(s) {bad}; valid: {list(AGGREGATIONS)} "
                          f"(events_<window> is always given)")
