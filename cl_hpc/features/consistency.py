"""Train/serve consistency: the feature values a server logged, replayed against an offline recomputation.

A server of a version trained on catalog features logs, for every row it answered, the entity keys, the
feature values it fed the model and the event time of each view's values (cl_hpc/serve/features.py).
:func:`check_log` asks the offline store what the same features were at the same entity and request time
(:func:`cl_hpc.features.retrieval.historical`, the code training sets are built with, defaults filled the
same way) and sorts every logged value into a :class:`Verdict`:

- ``match``: the same value (within ``tolerance``, relative to the value's size);
- ``skew``: another value from the same event, or from an event the offline store does not place there:
  the online path computed or stored it differently. This is the bug the check exists for;
- ``stale``: another value, served from an older event than the offline store knows at that time: the
  online store lagged a materialization (rerun materialize more often), not a code difference;
- ``missing_online``: the server had no value (it used the declared default) while the offline store has one;
- ``missing_offline``: the server had a value the offline store does not have at that time (lost offline
  partitions, a TTL that differs).

Skew and missing values fail the check (``python -m cl_hpc.features check`` exits 1); stale values are
reported, since they measure materialization lag rather than a difference between the two code paths.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from cl_hpc.data.predictions import INPUT_PREFIX
from cl_hpc.errors import DataError
from cl_hpc.features.definitions import Catalog, FeatureView
from cl_hpc.features.retrieval import event_column, fill_defaults, historical, naive_utc

AT = "_request_ts"  # the request time each logged row is recomputed at


class Verdict(enum.Enum):
    MATCH = "match"
    SKEW = "skew"
    STALE = "stale"
    MISSING_ONLINE = "missing_online"
    MISSING_OFFLINE = "missing_offline"

    @property
    def fails(self) -> bool:
        return self in (Verdict.SKEW, Verdict.MISSING_ONLINE, Verdict.MISSING_OFFLINE)


@dataclass(frozen=True)
class FeatureCheck:
    """One feature's logged values against the offline recomputation."""

    feature: str
    view: str
    rows: int
    counts: dict[str, int]  # Verdict value -> logged values
    max_abs_diff: float  # over the skewed values (0.0 when none)
    examples: list[dict[str, Any]] = field(default_factory=list)  # the first skewed or missing values

    @property
    def failed(self) -> int:
        return sum(n for v, n in self.counts.items() if Verdict(v).fails)


@dataclass(frozen=True)
class ConsistencyReport:
    rows: int  # logged rows checked (each carries every feature of its version)
    first: Optional[str]  # the first and last request times checked, ISO 8601 UTC
    last: Optional[str]
    features: list[FeatureCheck]

    @property
    def ok(self) -> bool:
        return not any(f.failed for f in self.features)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "first": self.first, "last": self.last, "ok": self.ok,
                "features": [{**vars(f), "failed": f.failed} for f in self.features]}


def check_log(catalog: Catalog, root: Path, log: pd.DataFrame, tolerance: float = 1e-9,
              examples: int = 5) -> ConsistencyReport:
    """Every catalog feature the log's rows carry (``input.<feature>`` columns beside the view's entity
    keys and ``input.<view>.event_ts``), recomputed at each row's request time (``ts``) and compared."""
    if not tolerance >= 0:
        raise DataError(f"tolerance={tolerance}: give a relative tolerance >= 0 (default 1e-9)")
    served = _served(catalog, log)
    checks, rows, times = [], 0, []
    for view, names in served:
        keys = [f"{INPUT_PREFIX}{k}" for k in view.entities]
        mine = log.dropna(subset=keys + [f"{INPUT_PREFIX}{n}" for n in names])
        if mine.empty:
            continue
        queries = pd.DataFrame({k: _key(mine[f"{INPUT_PREFIX}{k}"]) for k in view.entities})
        queries[AT] = naive_utc(mine["ts"]).to_numpy()
        offline = fill_defaults(catalog, historical(catalog, root, queries, names, AT, events=True), names)
        served_events = naive_utc(mine[f"{INPUT_PREFIX}{event_column(view)}"]).to_numpy()
        offline_events = offline[event_column(view)].to_numpy()
        for name in names:
            checks.append(_compare(view, name, mine, offline, served_events, offline_events, tolerance, examples))
        rows = max(rows, len(mine))
        times.append(queries[AT])
    if not checks:
        raise DataError("no logged row carries the catalog features with their entity keys and event times; the "
                        "log holds rows of versions that take their inputs in the request (serve a version trained "
                        "with pipeline=features_train)")
    stamps = pd.concat(times)
    return ConsistencyReport(rows, _iso(stamps.min()), _iso(stamps.max()), checks)


def _served(catalog: Catalog, log: pd.DataFrame) -> list[tuple[FeatureView, list[str]]]:
    """The views whose keys and event times the log holds, with the features of each it logged."""
    out = []
    for view in catalog.views.values():
        needed = [f"{INPUT_PREFIX}{c}" for c in (*view.entities, event_column(view))]
        names = [n for n in view.feature_names if f"{INPUT_PREFIX}{n}" in log.columns]
        if names and all(c in log.columns for c in needed):
            out.append((view, names))
    return out


def _compare(view: FeatureView, name: str, mine: pd.DataFrame, offline: pd.DataFrame, served_events: np.ndarray,
             offline_events: np.ndarray, tolerance: float, limit: int) -> FeatureCheck:
    got = mine[f"{INPUT_PREFIX}{name}"].to_numpy(dtype=np.float64)
    want = pd.to_numeric(offline[name], errors="coerce").to_numpy(dtype=np.float64)
    has_served, has_offline = ~np.isnat(served_events), ~np.isnat(offline_events)
    close = np.abs(got - want) <= tolerance * np.maximum(1.0, np.abs(want))
    verdicts = np.full(len(got), Verdict.SKEW.value, dtype=object)
    verdicts[~has_served & has_offline] = Verdict.MISSING_ONLINE.value
    verdicts[has_served & ~has_offline] = Verdict.MISSING_OFFLINE.value
    both = has_served & has_offline
    older = np.zeros(len(got), dtype=bool)
    older[both] = served_events[both] < offline_events[both]
    verdicts[both & ~close & older] = Verdict.STALE.value
    verdicts[close & (both | (~has_served & ~has_offline))] = Verdict.MATCH.value  # both missing: both defaults
    counts = {v.value: int((verdicts == v.value).sum()) for v in Verdict}
    skewed = verdicts == Verdict.SKEW.value
    bad = np.flatnonzero(np.isin(verdicts, [v.value for v in Verdict if v.fails]))[:limit]
    entity = mine[[f"{INPUT_PREFIX}{k}" for k in view.entities]].to_numpy()
    shown = [{"verdict": verdicts[i], "request_id": str(mine["request_id"].iloc[i]),
              "entity": [_plain(v) for v in entity[i]], "at": _iso(mine["ts"].iloc[i]),
              "served": _plain(got[i]), "offline": _plain(want[i]),
              "served_event": _iso(served_events[i]), "offline_event": _iso(offline_events[i])} for i in bad]
    diff = float(np.nanmax(np.abs(got[skewed] - want[skewed]))) if skewed.any() else 0.0
    return FeatureCheck(name, view.name, len(got), counts, diff, shown)


def _key(column: pd.Series) -> np.ndarray:
    """An entity key column as logged: integers again where the log's other shards (versions without this
    key) made it float by filling nulls."""
    values = column.to_numpy()
    if values.dtype.kind == "f" and np.all(np.mod(values, 1) == 0):
        return values.astype(np.int64)
    return values


def _iso(value: Any) -> Optional[str]:
    stamp = pd.Timestamp(value)
    if pd.isna(stamp):
        return None
    return (stamp.tz_convert("UTC") if stamp.tzinfo else stamp.tz_localize("UTC")).isoformat()


def _plain(value: Any) -> Any:
    value = value.item() if isinstance(value, np.generic) else value
    return None if isinstance(value, float) and np.isnan(value) else value
