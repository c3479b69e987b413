"""Fetching features by name through the catalog: the one code path that training sets (offline,
point in time) and servers (online, now) share, so the two never disagree on which view, which
version, which TTL or which default a feature has.

``historical``: for each query row (entity keys and a time), the values as they were known then
(cl_hpc/features/pit.py); ``online``: the latest values of some entities from the SQLite store. Both
take feature names (``amount_mean_24h`` or ``user_activity:amount_mean_24h``) and give a frame with one
column per feature, missing values as NaN/None, and :func:`fill_defaults` puts each feature's declared
default in place of a missing value. With ``events`` each view adds the event time of the values it gave
(:func:`event_column`, NaT where it gave none): a server logs it, and ``features check`` tells a value
served from an older materialization (lag) from one computed differently (skew).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from cl_hpc.errors import DataError
from cl_hpc.features.definitions import Catalog, FeatureView
from cl_hpc.features.materialize import BATCH, load_offline
from cl_hpc.features.online import CREATED, EVENT, OnlineStore
from cl_hpc.features.pit import point_in_time


def by_view(catalog: Catalog, features: Sequence[str]) -> dict[str, tuple[FeatureView, list[str]]]:
    """The requested features grouped by their view, in request order; unknown names are an error."""
    if not features:
        raise DataError(f"no features requested; name some of the catalog's ({catalog.root}): "
                        f"python -m cl_hpc.features list")
    groups: dict[str, tuple[FeatureView, list[str]]] = {}
    for ref in features:
        view = catalog.owner_of(ref)
        groups.setdefault(view.name, (view, []))[1].append(ref.rpartition(":")[2])
    return groups


def event_column(view: FeatureView) -> str:
    """The column holding the event time of the values a view gave (``events=True``)."""
    return f"{view.name}.event_ts"


def historical(catalog: Catalog, root: Path, queries: pd.DataFrame, features: Sequence[str],
               timestamp: str, events: bool = False) -> pd.DataFrame:
    """The queries with each feature as it was known at the query's time (point in time, within the TTL)."""
    out = queries.copy()
    for view, names in by_view(catalog, features).values():
        _require_keys(view, queries, "the query rows")
        table = load_offline(root, view, [*view.entities, EVENT, CREATED, BATCH, *names])
        ttl = None if view.ttl is None else pd.Timedelta(view.ttl)
        joined = point_in_time(queries, table, entities=view.entities, timestamp=timestamp, features=names, ttl=ttl)
        out[names] = joined[names]
        if events:
            out[event_column(view)] = naive_utc(joined[EVENT])
    return out


def online(catalog: Catalog, store: OnlineStore, keys: pd.DataFrame, features: Sequence[str],
           at: Any = None, events: bool = False) -> pd.DataFrame:
    """The latest values of each row's entity as of ``at`` (default: now); expired values are missing."""
    out = pd.DataFrame(index=keys.index)
    for view, names in by_view(catalog, features).values():
        _require_keys(view, keys, "the entity rows")
        wanted = list(zip(*(keys[k].tolist() for k in view.entities)))
        found = store.read(view, wanted, at=at)
        for name in names:
            out[name] = [None if row is None else row[name] for row in found]
        if events:  # the store keeps int64 microseconds since the epoch, UTC
            micros = [np.iinfo(np.int64).min if row is None else row[EVENT] for row in found]
            out[event_column(view)] = np.array(micros, dtype=np.int64).view("datetime64[us]")
    return out


def fill_defaults(catalog: Catalog, frame: pd.DataFrame, features: Sequence[str]) -> pd.DataFrame:
    """Each feature's missing values replaced by its declared default (a feature without one keeps them)."""
    out = frame.copy()
    for ref in features:
        name = ref.rpartition(":")[2]
        default = _feature(catalog.owner_of(ref), name).default
        if default is not None:
            out[name] = out[name].astype(object).where(out[name].notna(), default).infer_objects()
    return out


def naive_utc(column: pd.Series) -> pd.Series:
    """Times as naive UTC microseconds, the stores' convention, so both sides compare as equals."""
    stamps = pd.to_datetime(column)
    if stamps.dt.tz is not None:
        stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
    return stamps.dt.as_unit("us")


def _feature(view: FeatureView, name: str) -> Any:
    return next(f for f in view.features if f.name == name)


def _require_keys(view: FeatureView, frame: pd.DataFrame, what: str) -> None:
    missing = [k for k in view.entities if k not in frame.columns]
    if missing:
        raise DataError(f"{what} have no entity column(s) {missing}, the key of view {view.name!r} "
                        f"({view.path}); they have {list(frame.columns)}")
