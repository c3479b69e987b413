"""Time windows over the landing zone: list partitions in time order, pick the train and eval
windows, check every file before anything is read, and read them lazily with dask.

The eval window is the newest ``eval_window`` partitions (as of ``as_of``); the train window is
the ``train_window`` partitions just before it, so a model is always scored on data from after
the data it learnt from.
"""

from __future__ import annotations

import contextlib
import hashlib
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Mapping, Optional

import pandas as pd
import pyarrow.parquet as pq

from cl_hpc.config.ml import DataConf
from cl_hpc.data.landing import parse_time

# Partition, Columns and list_partitions live in partitions.py; the tasks import them from here.
from cl_hpc.data.partitions import Columns, Partition, check_partitions, list_partitions
from cl_hpc.errors import DataError

__all__ = ["Columns", "Partition", "check_partitions", "check_windows", "dask_threads", "find_nulls",
           "list_partitions", "read_window", "resolve_columns", "select_windows", "validate_files",
           "window_digest"]

if TYPE_CHECKING:
    import dask.dataframe as dd


def select_windows(parts: list[Partition], conf: DataConf) -> tuple[list[Partition], list[Partition]]:
    """(train, eval): the newest eval window as of ``conf.as_of`` and the train window just before it.
    A partition belongs to the time it starts at: ``as_of`` takes whole files."""
    seen = parts
    if conf.as_of is not None:
        cutoff = parse_time(conf.as_of, "data.as_of")
        seen = [p for p in parts if p.start < cutoff]
    need = conf.train_window + conf.eval_window
    if len(seen) < need:
        where = parts[0].path.parent if parts else conf.landing_dir
        raise DataError(f"landing zone {where} has {len(seen)} partition files{_before(conf, parts)}, "
                        f"but train_window + eval_window = {need}; shrink data.train_window / data.eval_window, "
                        f"move data.as_of later, or add data (python -m cl_hpc.data simulate)")
    split = len(seen) - conf.eval_window
    return seen[split - conf.train_window:split], seen[split:]


def _before(conf: DataConf, parts: list[Partition]) -> str:
    if conf.as_of is None:
        return ""
    span = f"; the zone's {len(parts)} run from {parts[0].start} to {parts[-1].start}" if parts else ""
    return f" before as_of={conf.as_of}{span}"


def resolve_columns(first: Path, conf: DataConf) -> Columns:
    """The columns to read, typed after the window's first file (empty features = all the others)."""
    return check_partitions([Partition(first, pd.NaT)], conf)[0]


def validate_files(parts: list[Partition], cols: Columns) -> int:
    """Check every file's columns and types before reading any rows; return the window's row count.
    Every bad file is named in one error."""
    _, rows = check_partitions(parts, cols)
    _require_rows(parts, sum(rows.values()))
    return sum(rows.values())


def check_windows(windows: Mapping[str, list[Partition]], conf: DataConf) -> Columns:
    """Resolve the columns and check every file of every window at once, before any row is read:
    one error names every bad file and column; an empty window is an error too."""
    everything = [p for parts in windows.values() for p in parts]
    cols, rows = check_partitions(everything, conf)
    for parts in windows.values():
        _require_rows(parts, sum(rows[p.path] for p in parts))
    return cols


def _require_rows(parts: list[Partition], rows: int) -> None:
    if rows == 0:
        raise DataError(f"window {parts[0].path.name} .. {parts[-1].path.name} in {parts[0].path.parent} "
                        f"has no rows; check the files or widen the window (data.train_window / data.eval_window)")


def find_nulls(parts: list[Partition], column: str) -> Path | None:
    """The first file whose ``column`` holds a null or NaN (used to name the file in an error)."""
    for part in parts:
        values = pq.read_table(part.path, columns=[column]).column(0).to_pandas()
        if values.isna().any():
            return part.path
    return None


def window_digest(parts: list[Partition]) -> str:
    """sha256 over the window's file names and contents: equal digests mean equal data."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.path.name.encode() + b"\0")
        with open(part.path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def read_window(parts: list[Partition], cols: Columns) -> dd.DataFrame:
    """A lazy dask frame of the window, one dask partition per file, in time order."""
    import dask.dataframe as dd  # only the tasks that read windows pay for dask

    return dd.read_parquet([str(p.path) for p in parts], columns=cols.names, index=False)


@contextlib.contextmanager
def dask_threads(cpus: Optional[int]) -> Iterator[None]:
    """Dask's threaded scheduler on the task's own cores (None = all it sees)."""
    import dask

    with dask.config.set(scheduler="threads", num_workers=cpus), warnings.catch_warnings():
        # dask's Parquet reader calls reset_index(inplace=True), which pandas 3.1 deprecates.
        warnings.filterwarnings("ignore", message="The inplace keyword", module="dask")
        yield
