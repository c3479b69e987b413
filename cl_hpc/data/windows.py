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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Optional

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cl_hpc.config.ml import DataConf
from cl_hpc.data.landing import NAME_PREFIX, NAME_SUFFIX, parse_partition_name, parse_time
from cl_hpc.errors import DataError

if TYPE_CHECKING:
    import dask.dataframe as dd


@dataclass(frozen=True)
class Partition:
    path: Path
    start: pd.Timestamp


@dataclass(frozen=True)
class Columns:
    """The columns a window is read with, and the Arrow type each must have in every file."""

    timestamp: str
    label: str
    features: tuple[str, ...]
    types: dict[str, pa.DataType]

    @property
    def names(self) -> list[str]:
        return [self.timestamp, *self.features, self.label]


def list_partitions(root: Path) -> list[Partition]:
    """Every partition file of the zone, oldest first; a stray ``.parquet`` name is a DataError."""
    if not root.is_dir():
        raise DataError(f"landing zone {root} does not exist (data.landing_dir)")
    parts = []
    for path in root.glob(f"*{NAME_SUFFIX}"):
        if path.name.startswith(("_", ".")):
            continue  # the manifest and temporary files
        start = parse_partition_name(path.name)
        if start is None:
            raise DataError(f"{path}: not a partition name; expected {NAME_PREFIX}<YYYYmmddTHHMMSS>{NAME_SUFFIX} "
                            f"(move other files out of {root})")
        parts.append(Partition(path, start))
    return sorted(parts, key=lambda p: p.start)


def select_windows(parts: list[Partition], conf: DataConf) -> tuple[list[Partition], list[Partition]]:
    """(train, eval): the newest eval window as of ``conf.as_of`` and the train window just before it."""
    if conf.as_of is not None:
        cutoff = parse_time(conf.as_of, "data.as_of")
        parts = [p for p in parts if p.start < cutoff]
    need = conf.train_window + conf.eval_window
    if len(parts) < need:
        where = parts[0].path.parent if parts else conf.landing_dir
        raise DataError(f"landing zone {where} has {len(parts)} partition files ({NAME_PREFIX}<YYYYmmddTHHMMSS>"
                        f"{NAME_SUFFIX}) before as_of={conf.as_of}, but train_window + eval_window = {need}; "
                        f"shrink the windows or add data")
    split = len(parts) - conf.eval_window
    return parts[split - conf.train_window:split], parts[split:]


def read_schema(path: Path) -> pa.Schema:
    try:
        return pq.read_schema(path)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path}: unreadable Parquet file ({exc}); replace or remove it") from exc


def resolve_columns(first: Path, conf: DataConf) -> Columns:
    """The columns to read, typed after the window's first file (empty features = all the others)."""
    schema = read_schema(first)
    features = tuple(conf.features) or tuple(
        n for n in schema.names if n not in (conf.label_col, conf.timestamp_col))
    if not features or set(features) & {conf.label_col, conf.timestamp_col}:
        raise DataError(f"{first}: features {list(features)} must be non-empty and exclude the label "
                        f"{conf.label_col!r} and the timestamp {conf.timestamp_col!r} (data.features)")
    names = [conf.timestamp_col, *features, conf.label_col]
    _check_file(first, schema, names, {})
    return Columns(conf.timestamp_col, conf.label_col, features, {n: schema.field(n).type for n in names})


def validate_files(parts: list[Partition], cols: Columns) -> int:
    """Check every file's columns and types before reading any rows; return the window's row count."""
    rows = 0
    for part in parts:
        _check_file(part.path, read_schema(part.path), cols.names, cols.types)
        _check_kinds(part.path, cols)
        rows += pq.ParquetFile(part.path).metadata.num_rows
    if rows == 0:
        raise DataError(f"window {parts[0].path.name} .. {parts[-1].path.name} in {parts[0].path.parent} "
                        f"has no rows; check the files or widen the window")
    return rows


def _check_file(path: Path, schema: pa.Schema, names: list[str], types: dict[str, pa.DataType]) -> None:
    for name in names:
        if name not in schema.names:
            raise DataError(f"{path}: column {name!r} is missing; the file has {schema.names} "
                            f"(data.features / data.label_col / data.timestamp_col)")
        found = schema.field(name).type
        if name in types and found != types[name]:
            raise DataError(f"{path}: column {name!r} has type {found}, but {types[name]} in the window's "
                            f"first file; every partition must use the same types")


_KINDS: dict[str, tuple[str, Callable[[pa.DataType], bool]]] = {
    "timestamp": ("a timestamp", pa.types.is_timestamp),
    "label": ("integer, bool or string", lambda t: pa.types.is_integer(t) or pa.types.is_boolean(t)
              or pa.types.is_string(t) or pa.types.is_large_string(t)),
    "feature": ("numeric (integer, float or bool)", lambda t: pa.types.is_integer(t)
                or pa.types.is_floating(t) or pa.types.is_boolean(t)),
}


def _check_kinds(path: Path, cols: Columns) -> None:
    roles = [(cols.timestamp, "timestamp"), (cols.label, "label"), *((f, "feature") for f in cols.features)]
    for name, role in roles:
        valid, ok = _KINDS[role]
        if not ok(cols.types[name]):
            raise DataError(f"{path}: {role} column {name!r} has type {cols.types[name]}; it must be {valid}")


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
