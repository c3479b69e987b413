"""Reading the prediction log for a join: the rows the ledger says are still open, as one Arrow table.

Arrow, not pandas: a predictions shard holds list columns (a tensor output such as the class
probabilities), and turning 10^6 of those into Python objects costs more than the whole join.
Every row keeps where it came from (``_shard``, an index into :attr:`Rows.keys`, and ``_shard_row``),
so the ledger can record the shards seen and the outcome rows already accounted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cl_hpc.data.predictions import OUTCOME_SCHEMA, PREDICTION_COLUMNS, Stream, list_shards
from cl_hpc.errors import DataError
from cl_hpc.labels.ledger import EMPTY_MAX, Ledger

SHARD, SHARD_ROW = "_shard", "_shard_row"
TS = "ts"


@dataclass(frozen=True)
class Rows:
    table: pa.Table  # the rows, with SHARD and SHARD_ROW columns
    keys: list[str] = field(default_factory=list)  # shard keys (paths under the log dir), by SHARD index
    new_seen: dict[str, int] = field(default_factory=dict)  # shards read for the first time -> newest row, us

    @property
    def ts_us(self) -> np.ndarray:
        return micros(self.table.column(TS))


def micros(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A timestamp column as int64 microseconds since the epoch (UTC)."""
    return np.asarray(pc.cast(column.cast(pa.timestamp("us", tz="UTC")), pa.int64()).to_numpy(zero_copy_only=False))


def read_open(log_dir: Path, stream: Stream, ledger: Ledger, columns: Optional[list[str]] = None) -> Rows:
    """The rows still to join: every row of a shard never seen, and the rows at or after the last
    watermark of a shard seen but not done (outcome rows on the skip list left out)."""
    return _read(log_dir, stream, ledger, lambda key: not ledger.done(key), columns)


def read_done(log_dir: Path, stream: Stream, ledger: Ledger, since_us: int, until_us: int,
              columns: list[str]) -> Rows:
    """``columns`` of the done shards whose hour partitions may hold times in [since, until]: the
    older predictions a late outcome may belong to."""
    return _read(log_dir, stream, ledger, ledger.done, columns, since_us / 1e6, until_us / 1e6)


def shard_key(log_dir: Path, path: Path) -> str:
    return path.relative_to(log_dir).as_posix()


def _read(log_dir: Path, stream: Stream, ledger: Ledger, wanted: Callable[[str], bool], columns: Optional[list[str]],
          since: Optional[float] = None, until: Optional[float] = None) -> Rows:
    tables: list[pa.Table] = []
    shard_ids: list[np.ndarray] = []
    shard_rows: list[np.ndarray] = []
    keys: list[str] = []
    new_seen: dict[str, int] = {}
    for path in list_shards(log_dir, stream, since, until):
        key = shard_key(log_dir, path)
        if not wanted(key):
            continue
        table = read_shard(path, columns)
        rows = np.arange(table.num_rows, dtype=np.int32)
        ts_us = micros(table.column(TS))
        if key not in ledger.seen:
            new_seen[key] = int(ts_us.max()) if len(ts_us) else EMPTY_MAX
        elif not ledger.done(key):
            keep = _still_open(ts_us, rows, key, ledger)
            table, rows = table.filter(keep), rows[keep]
        shard_ids.append(np.full(table.num_rows, len(keys), dtype=np.int32))
        shard_rows.append(rows)
        tables.append(table)
        keys.append(key)
    return Rows(_concat(tables, stream, columns, shard_ids, shard_rows), keys, new_seen)


def _still_open(ts_us: np.ndarray, rows: np.ndarray, key: str, ledger: Ledger) -> np.ndarray:
    assert ledger.watermark_us is not None
    keep = ts_us >= ledger.watermark_us
    skipped = ledger.skip.rows.get(key)
    if skipped is not None:
        keep &= ~np.isin(rows, skipped)
    return keep


def read_shard(path: Path, columns: Optional[list[str]] = None) -> pa.Table:
    """One shard, or those of ``columns`` it has (a shard of another version lacks some inputs)."""
    try:
        shard = pq.ParquetFile(path)
        names = shard.schema_arrow.names
        return shard.read(columns=None if columns is None else [c for c in columns if c in names])
    except (OSError, pa.ArrowInvalid) as exc:
        raise DataError(f"prediction log shard {path} is unreadable ({exc}); move it aside and rerun") from exc


def _concat(tables: list[pa.Table], stream: Stream, columns: Optional[list[str]], shard_ids: list[np.ndarray],
            shard_rows: list[np.ndarray]) -> pa.Table:
    if not tables:
        schema = PREDICTION_COLUMNS if stream is Stream.PREDICTIONS else OUTCOME_SCHEMA
        empty = schema.empty_table()
        tables = [empty.select([c for c in columns if c in schema.names]) if columns else empty]
        shard_ids, shard_rows = [np.zeros(0, np.int32)], [np.zeros(0, np.int32)]
    try:
        merged = pa.concat_tables(tables, promote_options="permissive")
    except pa.ArrowInvalid as exc:
        raise DataError(f"the {stream.value} shards have columns of types that do not combine ({exc}); "
                        f"every version must log each input and output with one type") from exc
    merged = merged.append_column(SHARD, pa.array(np.concatenate(shard_ids)))
    return merged.append_column(SHARD_ROW, pa.array(np.concatenate(shard_rows)))
