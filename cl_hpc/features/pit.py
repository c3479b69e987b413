"""The point-in-time join: each query row gets the feature values that were *available* at its time.

A row of the offline table is visible at time ``t`` iff its ``_created_ts <= t`` (and ``_event_ts <=
_created_ts`` always). Among the visible rows of the query's entity the one with the greatest ``_event_ts``
wins; ties go to the greatest ``_created_ts``, then the greatest ``_batch``, then the last row in table
order. If ``t - _event_ts > ttl`` the values are missing, not an older value (expired is missing, not
stale); exactly ``ttl`` old is still valid. No visible row: missing.

Why ``_created_ts`` decides visibility and is not only a tie-breaker (as in Feast): a backfill written on
day 10 for event time day 1 must not appear in a training row of day 5, which could not have seen it.

The method is exact and O(n log n) (n table rows of the queried entities):
1. code each entity key (one or several columns) as one int, and keep only the table rows whose key
   occurs in the queries;
2. sort them by (``_created_ts``, ``_batch``, table order) with a stable sort;
3. per entity, walk in that order keeping the best row so far (greatest event time, ties to the later
   row): a grouped cummax of the event time, then a grouped cummax of the positions where a row reaches it;
4. ``merge_asof`` (backward, exact matches allowed) finds, per query, the last row created at or before
   ``t``, whose best-so-far is the best visible row; ``merge_asof`` takes the last of equal keys.

Missing values: float features get NaN; int and bool features get pandas' nullable ``Int64``/``boolean``
(exact, where float would round ints above 2**53), but only when a value is missing in this result: a
join that finds every row keeps ``int64``/``bool``. Extension dtypes keep their dtype. The ``_event_ts``
column tells which row was used (NaT when missing, expired rows included).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd
from pandas.api.types import is_bool_dtype, is_datetime64_any_dtype, is_integer_dtype, is_string_dtype

from cl_hpc.errors import DataError

EVENT, CREATED, BATCH = "_event_ts", "_created_ts", "_batch"
_KEY, _AT, _ROW = "key", "at", "row"  # the merge's own columns (the entity keys are codes by then)
_UNITS = ("s", "ms", "us", "ns")  # coarse to fine


def point_in_time(queries: pd.DataFrame, table: pd.DataFrame, *, entities: Sequence[str], timestamp: str,
                  features: Sequence[str], ttl: Optional[pd.Timedelta]) -> pd.DataFrame:
    """The queries (same rows, order, index and columns) with each feature and ``_event_ts`` of the row
    used appended. ``table`` is one view version's offline frame; ``ttl=None`` means no expiry."""
    entities, features = list(entities), list(features)
    _check_columns(queries, table, entities, timestamp, features)
    if ttl is not None and pd.Timedelta(ttl) < pd.Timedelta(0):
        raise DataError(f"ttl {ttl} is negative; give a duration >= 0, or None for values that never expire")
    keys, table_keys = _entity_codes(queries, table, entities)
    unit = _finest_unit(queries[timestamp], table[CREATED], table[EVENT])
    at = _ticks(queries[timestamp], unit, f"query column {timestamp!r}")
    rows = _visible_best(keys, at, table, table_keys, unit)
    if ttl is not None:
        rows = _expire(rows, at, table[EVENT], pd.Timedelta(ttl), unit)
    return _attach(queries, table, rows, [*features, EVENT])


def _check_columns(queries: pd.DataFrame, table: pd.DataFrame, entities: list[str], timestamp: str,
                   features: list[str]) -> None:
    lacking = [c for c in [*entities, timestamp] if c not in queries.columns]
    if lacking:
        raise DataError(f"the queries lack the column(s) {lacking}; they have {list(queries.columns)} and need "
                        f"the entity key(s) {entities} and the timestamp {timestamp!r}")
    lacking = [c for c in [*entities, EVENT, CREATED, BATCH, *features] if c not in table.columns]
    if lacking:
        raise DataError(f"the offline table lacks the column(s) {lacking}; it has {list(table.columns)} "
                        f"(a materialized view has its entity keys, {EVENT}, {CREATED}, {BATCH} and its features)")
    clash = [c for c in [*features, EVENT] if c in queries.columns]
    if clash:
        raise DataError(f"the queries already have the column(s) {clash} that the join appends; rename or drop "
                        "them first (e.g. the _event_ts of an earlier join)")


def _entity_codes(queries: pd.DataFrame, table: pd.DataFrame, entities: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """One int64 code per query and per table row for its whole entity key, dense below the number of
    queries; -1 for a table row whose key no query has (it can never be joined, so it is dropped before
    the sort, which is the cost: with 10k queries over 100k entities that leaves a tenth of the table)."""
    query_code = np.zeros(len(queries), dtype=np.int64)
    table_code = np.zeros(len(table), dtype=np.int64)
    for name in entities:
        column = _checked_key(queries[name], table[name].dtype, name)
        values = pd.Index(column.unique())
        query_code = query_code * len(values) + values.get_indexer(column)
        found = np.full(len(table), -1, dtype=np.int64)
        hit = table[name].isin(values).to_numpy()  # first: get_indexer would try to cast a table's <NA>
        found[hit] = values.get_indexer(table[name][hit])
        table_code = np.where((table_code < 0) | (found < 0), -1, table_code * len(values) + found)
        combos = pd.Index(np.unique(query_code))  # re-densify so the next column's product cannot overflow
        query_code, table_code = combos.get_indexer(query_code), combos.get_indexer(table_code)
    return query_code, table_code


def _checked_key(column: pd.Series, target: Any, name: str) -> pd.Series:
    if column.isna().any():
        label = column.index[column.isna().to_numpy()].tolist()[0]
        raise DataError(f"query row {label!r} has no value in entity column {name!r}; every query needs a key")
    same_kind = (is_integer_dtype(column.dtype) and is_integer_dtype(target)) or (
        is_string_dtype(column.dtype) and is_string_dtype(target))
    if not (same_kind or column.dtype == target):
        raise DataError(f"entity column {name!r} is {column.dtype} in the queries but {target} in the offline "
                        "table; give the same kind of key (integers of any width, or strings)")
    return column


def _finest_unit(*columns: pd.Series) -> str:
    # Comparing in the finest unit is exact; a non-datetime column is refused by _ticks just after.
    return max((c.dt.unit for c in columns if is_datetime64_any_dtype(c.dtype)), key=_UNITS.index, default="us")


def _ticks(column: pd.Series, unit: str, what: str) -> np.ndarray:
    """Naive-UTC int64 ticks of ``unit`` (tz-aware times are converted to UTC first); refuses NaT."""
    if not is_datetime64_any_dtype(column.dtype):
        raise DataError(f"{what} is {column.dtype}, not datetime64; convert it with pd.to_datetime(...) "
                        "(naive times are taken as UTC)")
    if column.dt.tz is not None:
        column = column.dt.tz_convert("UTC").dt.tz_localize(None)
    if column.isna().any():
        label = column.index[column.isna().to_numpy()].tolist()[0]
        raise DataError(f"{what} has no time (NaT) in row {label!r}; every row needs one")
    try:
        return column.dt.as_unit(unit).to_numpy().view(np.int64)
    except (OverflowError, pd.errors.OutOfBoundsDatetime) as exc:
        raise DataError(f"{what} holds a time outside the range of datetime64[{unit}] ({exc})") from exc


def _visible_best(keys: np.ndarray, at: np.ndarray, table: pd.DataFrame, table_keys: np.ndarray,
                  unit: str) -> np.ndarray:
    """Per query, the table position of the best row visible at its time, or -1."""
    candidates = np.flatnonzero(table_keys >= 0)
    if not len(candidates):
        return np.full(len(keys), -1, dtype=np.int64)
    rows = table.iloc[candidates]
    created = _ticks(rows[CREATED], unit, f"table column {CREATED!r}")
    event = _ticks(rows[EVENT], unit, f"table column {EVENT!r}")
    if (created < event).any():
        bad = rows.index[created < event].tolist()[0]
        raise DataError(f"offline table row {bad!r} was created before its event time ({CREATED} < {EVENT}); "
                        "a value cannot be available before the time it holds as of: check materialization")
    order = np.lexsort((rows[BATCH].to_numpy(np.int64), created))  # stable: equal ties keep table order
    entity = table_keys[candidates[order]]
    best = _best_so_far(entity, event[order])
    right = pd.DataFrame({_KEY: entity, _AT: created[order], _ROW: candidates[order[best]]})
    by_time = np.argsort(at, kind="stable")
    left = pd.DataFrame({_KEY: keys[by_time], _AT: at[by_time]})
    found = pd.merge_asof(left, right, on=_AT, by=_KEY, direction="backward", allow_exact_matches=True)
    rows_found = np.empty(len(keys), dtype=np.int64)
    rows_found[by_time] = found[_ROW].fillna(-1).to_numpy(np.int64)
    return rows_found


def _best_so_far(entity: np.ndarray, event: np.ndarray) -> np.ndarray:
    """For each row (in created order), the position of the best row of its entity up to it: the greatest
    event time, ties to the later row (so to the later _created_ts, _batch, table row)."""
    running = pd.Series(event).groupby(entity).cummax().to_numpy()
    leaders = np.where(event == running, np.arange(len(event)), -1)  # each group's first row is a leader
    return pd.Series(leaders).groupby(entity).cummax().to_numpy()


def _expire(rows: np.ndarray, at: np.ndarray, event: pd.Series, ttl: pd.Timedelta, unit: str) -> np.ndarray:
    found = rows >= 0
    ticks = _ticks(event.iloc[rows[found]], unit, f"table column {EVENT!r}")
    # The age is a whole number of ticks, so "age > ttl" equals "age > floor(ttl in ticks)" exactly.
    expired = np.zeros(len(rows), dtype=bool)
    expired[found] = at[found] - ticks > ttl // pd.Timedelta(1, unit)
    return np.where(expired, -1, rows)


def _attach(queries: pd.DataFrame, table: pd.DataFrame, rows: np.ndarray, columns: list[str]) -> pd.DataFrame:
    out = queries.copy()
    for name in columns:
        out[name] = _gather(table[name], rows)
    return out


def _gather(column: pd.Series, rows: np.ndarray) -> Any:
    """``column`` at ``rows``, missing where the row is -1 (see the module's note on dtypes)."""
    missing = rows < 0
    if not isinstance(column.dtype, np.dtype):
        return column.array.take(rows, allow_fill=True)
    values = column.to_numpy()
    if not missing.any():
        return values[rows]
    if not (is_integer_dtype(values.dtype) or is_bool_dtype(values.dtype)):
        return pd.api.extensions.take(values, rows, allow_fill=True)  # NaN, NaT or None
    data = values[np.where(missing, 0, rows)] if len(values) else np.zeros(len(rows), values.dtype)
    if is_bool_dtype(values.dtype):
        return pd.arrays.BooleanArray(data, missing)
    return pd.arrays.IntegerArray(data, missing)
