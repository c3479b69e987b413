"""The online store: one SQLite file, one row per entity per view version with its latest values.

Materialization writes it (:meth:`OnlineStore.write`, newest values only: a row replaces the stored one
only when its event time is later, or equal and computed later, so a replayed or reordered batch never
moves a value back in time). Servers and ``features get`` read it (:meth:`OnlineStore.read`), and the
read honours the view's TTL: a value whose event time is older than ``at - ttl`` is missing, not stale
(Feast serves it: feast-dev/feast#6821).

The file also records each view version's digest when it is first written (``views``), so a view whose
definition changed without a version bump is refused before anything is written
(:func:`cl_hpc.features.definitions.check_bump`).

Why SQLite: a read is a primary-key lookup in a WITHOUT ROWID table, tens of microseconds in process,
with no server to run; WAL lets readers go on while a materialization writes. Times are stored as int64
microseconds since the epoch (UTC), so a TTL check is one integer comparison.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

from cl_hpc.errors import DataError, StoreError
from cl_hpc.features.definitions import FeatureView, check_bump

EVENT, CREATED = "_event_ts", "_created_ts"
_SQL_TYPES = {"float64": "REAL", "int64": "INTEGER", "bool": "INTEGER"}
_US = pd.Timedelta(microseconds=1)


def table_name(view: FeatureView) -> str:
    return f"online_{view.name}_v{view.version}"


def micros(value: Any) -> Any:
    """Timestamps (one, or an array/Series) as int64 microseconds since the epoch, UTC."""
    if isinstance(value, (pd.Series, pd.Index, np.ndarray)):
        return pd.to_datetime(value).to_numpy("datetime64[us]").astype(np.int64)
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_convert("UTC").tz_localize(None) if stamp.tzinfo is not None else stamp
    return int((stamp - pd.Timestamp(0)) // _US)


class OnlineStore:
    """The latest values per entity; one connection, shared by the threads of a process under a lock."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")  # readers go on while a materialization writes
            self._db.execute("CREATE TABLE IF NOT EXISTS views (name TEXT, version INTEGER, digest TEXT, "
                             "definition TEXT, registered REAL, PRIMARY KEY (name, version))")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the online store {self.path} ({exc}); check the path and its disk") from exc
        self._lock = threading.Lock()
        self._statements: dict[tuple[str, int], str] = {}

    def close(self) -> None:
        self._db.close()

    def recorded_digest(self, view: FeatureView) -> Optional[str]:
        row = self._db.execute("SELECT digest FROM views WHERE name = ? AND version = ?",
                               (view.name, view.version)).fetchone()
        return None if row is None else str(row[0])

    def register(self, view: FeatureView) -> None:
        """Record the view version's digest (refusing a changed definition) and make its table."""
        check_bump(view, self.recorded_digest(view))
        keys = ", ".join(f'"{k}"' for k in view.entities)
        columns = [f'"{k}" NOT NULL' for k in view.entities]
        columns += [f"{EVENT} INTEGER NOT NULL", f"{CREATED} INTEGER NOT NULL"]
        columns += [f'"{f.name}" {_SQL_TYPES[f.dtype]}' for f in view.features]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(f"CREATE TABLE IF NOT EXISTS {table_name(view)} ({', '.join(columns)}, "
                                 f"PRIMARY KEY ({keys})) WITHOUT ROWID")
                self._db.execute("INSERT OR IGNORE INTO views VALUES (?, ?, ?, ?, ?)",
                                 (view.name, view.version, view.digest, json.dumps(view.definition(), default=str),
                                  time.time()))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def write(self, view: FeatureView, rows: pd.DataFrame) -> int:
        """Upsert the latest row per entity of ``rows`` (entity keys, _event_ts, _created_ts, features) in one
        transaction; a stored row that is newer stays. Returns the rows offered."""
        latest = rows.sort_values([EVENT, CREATED], kind="stable").drop_duplicates(list(view.entities), keep="last")
        names = [*view.entities, EVENT, CREATED, *view.feature_names]
        values = _records(latest, view, names)
        quoted = ", ".join(f'"{n}"' for n in names)
        keys = ", ".join(f'"{k}"' for k in view.entities)
        updates = ", ".join(f'"{n}" = excluded."{n}"' for n in names[len(view.entities):])
        table = table_name(view)
        sql = (f"INSERT INTO {table} ({quoted}) VALUES ({', '.join('?' * len(names))}) "
               f"ON CONFLICT ({keys}) DO UPDATE SET {updates} "
               f"WHERE excluded.{EVENT} > {table}.{EVENT} OR "
               f"(excluded.{EVENT} = {table}.{EVENT} AND excluded.{CREATED} >= {table}.{CREATED})")
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(sql, values)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return len(latest)

    def read(self, view: FeatureView, keys: Sequence[Any], at: Any = None) -> list[Optional[dict[str, Any]]]:
        """Each entity's values as of ``at`` (default: now): a dict per key in order, None when the entity
        has no value or its value expired (older than the TTL). A key is a value, or a tuple for several
        entity columns."""
        if not keys:
            return []
        tuples = [k if isinstance(k, tuple) else (k,) for k in keys]
        if any(len(k) != len(view.entities) for k in tuples):
            raise DataError(f"view {view.name!r} is keyed by {list(view.entities)}: give one value per key column")
        found = self._select(view, tuples)
        oldest = None if view.ttl is None else micros(pd.Timestamp.now("UTC") if at is None else at) - int(
            pd.Timedelta(view.ttl) // _US)
        return [_fresh(found.get(k), oldest) for k in tuples]

    def _select(self, view: FeatureView, keys: list[tuple[Any, ...]]) -> dict[tuple[Any, ...], dict[str, Any]]:
        sql = self._statement(view, len(keys))
        flat = [v.item() if isinstance(v, np.generic) else v for k in keys for v in k]
        with self._lock:
            try:
                cursor = self._db.execute(sql, flat)
            except sqlite3.OperationalError as exc:
                raise DataError(f"view {view.name!r} version {view.version} has no online values in {self.path} "
                                f"({exc}); materialize it first (python -m cl_hpc.features materialize)") from exc
            names = [d[0] for d in cursor.description]
            rows = cursor.fetchall()
        width = len(view.entities)
        return {tuple(r[:width]): dict(zip(names, r)) for r in rows}

    def _statement(self, view: FeatureView, count: int) -> str:
        key = (table_name(view), count)
        if key not in self._statements:
            where = " OR ".join(["(" + " AND ".join(f'"{k}" = ?' for k in view.entities) + ")"] * count)
            if len(view.entities) == 1:
                where = f'"{view.entities[0]}" IN ({", ".join("?" * count)})'
            self._statements[key] = f"SELECT * FROM {table_name(view)} WHERE {where}"
        return self._statements[key]


def _fresh(row: Optional[dict[str, Any]], oldest: Optional[int]) -> Optional[dict[str, Any]]:
    if row is None or (oldest is not None and row[EVENT] < oldest):
        return None  # expired is missing, never stale
    return row


def _records(frame: pd.DataFrame, view: FeatureView, names: list[str]) -> list[tuple[Any, ...]]:
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise DataError(f"view {view.name!r}: rows for the online store lack {missing}")
    out = frame[names].copy()
    out[EVENT], out[CREATED] = micros(out[EVENT]), micros(out[CREATED])
    columns = [out[n].astype(object).where(out[n].notna(), None).tolist() for n in names]
    return list(zip(*columns))
