"""The whole history of the landing zone in memory, one frame of raw rows per partition (= one window).

A backtest touches every partition many times (each cell, each retrain), so it reads each file once:
dask reads the partitions in parallel (one delayed pyarrow read per file), after every file's
columns and types were checked by the same code the pipeline's ingest uses. The rows stay raw: the
workload's data module preprocesses them, as in the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from cl_hpc.config.ml import DataConf
from cl_hpc.data.landing import ensure_landing_zone, parse_time, resolve_dir
from cl_hpc.data.partitions import utc_naive
from cl_hpc.data.windows import Columns, Partition, check_windows, dask_threads, list_partitions
from cl_hpc.errors import DataError


@dataclass(frozen=True)
class History:
    starts: tuple[pd.Timestamp, ...]  # each partition's start time, oldest first
    frames: tuple[pd.DataFrame, ...]  # each partition's raw rows (timestamp, features, label if any)
    features: tuple[str, ...]  # the data's feature columns (drift compares them when the model's inputs are not)
    label: Optional[str]  # the label column; None = label-less rows (a token stream)
    files: tuple[str, ...]  # each partition's file name
    # partitions holding nulls or infinities: only usable when excluded (backtest.exclude)
    unreadable: frozenset[int]

    def __len__(self) -> int:
        return len(self.starts)

    def rows(self, parts: Sequence[int]) -> pd.DataFrame:
        """The partitions' rows, concatenated in the order given."""
        if not parts:
            return self.frames[0].iloc[:0]
        return pd.concat([self.frames[i] for i in parts], ignore_index=True)

    def row_count(self, parts: Sequence[int]) -> int:
        return sum(len(self.frames[i]) for i in parts)


def load_history(data: DataConf, cpus: Optional[int] = None) -> History:
    """Every partition before ``data.as_of`` (all of them when unset), generating the zone if configured.

    A partition with null or infinite values is loaded but marked unreadable: the engine refuses it
    unless it is excluded.
    """
    ensure_landing_zone(data)
    parts = _partitions(data)
    cols = check_windows({"history": parts}, data)
    tables = _read_all(parts, cols, cpus)
    for table in tables:
        table[cols.timestamp] = utc_naive(table[cols.timestamp])
    unreadable = frozenset(i for i, t in enumerate(tables) if not _clean(t, cols))
    return History(tuple(p.start for p in parts), tuple(tables), cols.features, cols.label,
                   tuple(p.path.name for p in parts), unreadable)


def _partitions(data: DataConf) -> list[Partition]:
    parts = list_partitions(resolve_dir(data.landing_dir), data.timestamp_col)
    if data.as_of is not None:
        cutoff = parse_time(data.as_of, "data.as_of")
        parts = [p for p in parts if p.start < cutoff]
    if len(parts) < 2:
        raise DataError(f"landing zone {resolve_dir(data.landing_dir)} has {len(parts)} partition(s) before "
                        f"as_of={data.as_of}; a backtest needs at least data.train_window + 1")
    return parts


def _read_all(parts: list[Partition], cols: Columns, cpus: Optional[int]) -> list[pd.DataFrame]:
    import dask

    read = dask.delayed(_read, pure=True)
    with dask_threads(cpus):
        return list(dask.compute(*[read(str(p.path), cols.names) for p in parts]))


def _read(path: str, names: list[str]) -> pd.DataFrame:
    return pq.read_table(path, columns=names).to_pandas()


def _clean(table: pd.DataFrame, cols: Columns) -> bool:
    x = table[list(cols.features)].to_numpy(dtype=np.float64, na_value=np.nan)
    return bool(np.isfinite(x).all() and (cols.label is None or table[cols.label].notna().all()))
