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
from typing import Any, Mapping, Sequence

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
        _require_keys(view, queries.columns, "the query rows")
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
    return pd.DataFrame(online_values(catalog, store, keys, features, at, events), index=keys.index)


def online_values(catalog: Catalog, store: OnlineStore, keys: Mapping[str, Any], features: Sequence[str],
                  at: Any = None, events: bool = False) -> dict[str, Any]:
    """:func:`online` as plain columns (a list per feature, None where missing; datetime64 event times): a
    server's request path, which must not pay for building frames (~0.1 ms per pandas column insert)."""
    out: dict[str, Any] = {}
    for view, names in by_view(catalog, features).values():
        _require_keys(view, list(keys), "the entity rows")
        wanted = list(zip(*(list(keys[k]) for k in view.entities)))
        found = store.read(view, wanted, at=at)
        for name in names:
            out[name] = [None if row is None else row[name] for row in found]
        if events:  # the store keeps int64 microseconds since the epoch, UTC
            micros = [np.iinfo(np.int64).min if row is None else row[EVENT] for row in found]
            out[event_column(view)] = np.array(micros, dtype=np.int64).view("datetime64[us]")
    return out


def defaults(catalog: Catalog, features: Sequence[str]) -> dict[str, Any]:
    """Each feature's declared default (None: a missing value stays missing), by bare name."""
    return {ref.rpartition(":")[2]: _feature(catalog.owner_of(ref), ref.rpartition(":")[2]).default
            for ref in features}


def fill_values(values: list[Any], default: Any) -> list[Any]:
    """:func:`fill_defaults` on one column of :func:`online_values` (None where missing): a server's request
    path, without a frame."""
    return values if default is None else [default if v is None else v for v in values]


def fill_defaults(catalog: Catalog, frame: pd.DataFrame, features: Sequence[str]) -> pd.DataFrame:
    """Each feature's missing values replaced by its declared default (a feature without one keeps them)."""
    out = frame.copy()
    for name, default in defaults(catalog, features).items():
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


def _require_keys(view: FeatureView, columns: Any, what: str) -> None:
    columns = list(columns)
    missing = [k for k in view.entities if k not in columns]
    if missing:
        raise DataError(f"{what} have no entity column(s) {missing}, the key of view {view.name!r} "
                        f"({view.path}); they have {columns}")
